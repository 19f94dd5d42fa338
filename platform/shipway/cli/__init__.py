"""The ``shipway`` command line: a client of the API, plus the local process supervisor."""
