"""Drift detection: a reference profile of what a version was validated on, and
statistical tests of live windows against it. Pure numpy/scipy; no I/O here."""
