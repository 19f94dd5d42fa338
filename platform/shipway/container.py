"""Composition root: the long-lived objects one Shipway process needs, built from settings.

Each process (API, worker, runtime manager, gateway, CLI) builds one ``Container``
at start-up and hands its parts down; nothing else reaches for globals.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shipway.settings import Runtime, Settings
from shipway.store.db import Database, migrate

if TYPE_CHECKING:
    from shipway.kubernetes.model_deployments import ModelDeployments


class Container:
    def __init__(self, settings: Settings, *, run_migrations: bool = True) -> None:
        self.settings = settings
        settings.ensure_home()
        if run_migrations:
            migrate(settings.resolved_database_url)

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @property
    def kubernetes_mode(self) -> bool:
        """Deployments are ModelDeployment resources (``SHIPWAY_RUNTIME=kubernetes``)."""
        return self.settings.runtime is Runtime.KUBERNETES

    @cached_property
    def model_deployments(self) -> ModelDeployments:
        """The Kubernetes API server's ModelDeployments of the configured namespace; the
        client is made on first use (``Unavailable`` when no configuration is found)."""
        from shipway.errors import Unavailable

        try:
            from shipway.kubernetes.model_deployments import ModelDeployments, api_client
        except ImportError as exc:
            raise Unavailable(
                f"Kubernetes mode needs the kubernetes client ({exc.name} is missing): "
                "pip install 'shipway[server,operator]'"
            ) from None

        s = self.settings
        return ModelDeployments(api_client(s), s.kubernetes_namespace, s.kubernetes_timeout)

    @cached_property
    def registry(self):  # type: ignore[no-untyped-def] - MLflow imports lazily
        from shipway.registry.mlflow_registry import ModelRegistry

        s = self.settings
        return ModelRegistry(
            s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri, s.resolved_artifact_root
        )

    @cached_property
    def drift_metrics(self):  # type: ignore[no-untyped-def] - prometheus-client lazily
        from shipway.drift.metrics import DriftMetrics

        return DriftMetrics()

    @cached_property
    def drift_profiles(self) -> dict[str, Any]:
        """Reference profiles by MLflow run id; immutable, so kept for the process."""
        return {}

    @cached_property
    def rollout_lock(self) -> threading.RLock:
        """One writer of rollout state at a time in this process: the controller's
        ticks and the API's operations (pause, promote, abort) take turns."""
        return threading.RLock()

    @cached_property
    def rollout_ports(self):  # type: ignore[no-untyped-def] - httpx and services lazily
        """Local mode's ports for the rollout controller: Router, Placement,
        MetricsProvider, ReleaseAliases (MLflow) and DriftScores."""
        from shipway.services.rollouts import local_ports

        return local_ports(self)

    @cached_property
    def celery(self):  # type: ignore[no-untyped-def] - Celery imports lazily
        from shipway.builds.celery_app import create_celery

        return create_celery(self.settings)

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
        if "model_deployments" in self.__dict__:
            self.model_deployments.api.close()
