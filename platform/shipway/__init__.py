"""Shipway: register a model, build optimized engines, serve them on Triton, roll out safely.

Importing this package stays light: the heavy parts (MLflow, Celery, FastAPI) load
only in the modules that need them.
"""

__version__ = "0.1.0"
