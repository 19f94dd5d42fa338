"""The real Kubernetes test cluster (``cluster.py``) and its pytest fixtures (``fixtures.py``)."""
