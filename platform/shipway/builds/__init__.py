"""Engine builds: recipes and targets, Triton packaging, the Celery app and its tasks."""
