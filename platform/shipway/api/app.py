"""API application factory: the API process's composition root."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shipway import __version__
from shipway.api import errors
from shipway.api.routes import builds, deployments, gitops, hooks, models, rollouts, system
from shipway.container import Container
from shipway.services import rollouts as rollouts_service


def create_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        loops = [
            threading.Thread(target=job, args=(container, stop, seconds), daemon=True)
            for job, seconds in (
                (_drift_monitor, container.settings.drift_check_seconds),
                (_rollout_controller, container.settings.rollout_tick_seconds),
                (_gitops_intents, container.settings.gitops_intent_seconds),
            )
            if seconds > 0
        ]
        for loop in loops:
            loop.start()
        try:
            yield
        finally:
            stop.set()
            rollouts_service.wake(container)  # out of its sleep, to see the stop
            for loop in loops:
                loop.join(30)

    app = FastAPI(
        title="Shipway",
        version=__version__,
        description="Register models, build engines, deploy them to Triton.",
        lifespan=lifespan,
    )
    app.state.container = container
    errors.install(app)
    for module in (models, builds, deployments, rollouts, gitops, hooks, system):
        app.include_router(module.router, prefix="/api/v1")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The control plane's Prometheus metrics: drift scores and p-values per
        deployment and variant, as of the latest check."""
        body = generate_latest(container.drift_metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _drift_monitor(container: Container, stop: threading.Event, seconds: float) -> None:
    """Check every deployment for drift each period, and apply its policy on a breach."""
    from shipway.services import drift

    while not stop.wait(seconds):
        drift.check_all(container)


def _rollout_controller(container: Container, stop: threading.Event, seconds: float) -> None:
    """Run every rollout: analyse once per its interval, converge routes and replicas,
    each when the controller asks to run next (``seconds``: its poll while waiting on
    replicas). State lives in the store, so a restarted process picks up where this
    one stopped."""
    rollouts_service.run(container, container.rollout_ports, stop)


def _gitops_intents(container: Container, stop: threading.Event, seconds: float) -> None:
    """Carry out `shipway apply`'s deploys and rollouts that wait for a build, once it
    has finished: a Git push or a registry trigger has no client waiting for them."""
    from shipway.services import gitops

    gitops.run(container, stop, seconds)
