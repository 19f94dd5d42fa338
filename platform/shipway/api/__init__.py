"""Control-plane REST API (FastAPI) under ``/api/v1``."""
