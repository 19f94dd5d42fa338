"""Helpers for tests: starting real services, free ports, waiting."""
