"""One Shipway role per process: the entry points ``shipway up`` starts."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from shipway.container import Container
from shipway.settings import Runtime, Settings


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # one INFO line per HTTP call (readiness probes, metrics reads): thousands an hour
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve_api(settings: Settings, migrate: bool) -> None:
    import uvicorn

    from shipway.api.app import create_app

    _logging()
    app = create_app(Container(settings, run_migrations=migrate))
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")


def serve_gateway(settings: Settings, migrate: bool) -> None:
    """The gateway; with ``SHIPWAY_RUNTIME=kubernetes`` it routes the ModelDeployments of
    ``resolved_gateway_namespace`` (watched through the API server the Kubernetes mode's
    client reaches) and needs no state store."""
    import uvicorn

    _logging()
    options: dict[str, Any] = {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "log_level": "warning",
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "lifespan": "on",
    }
    if settings.runtime is Runtime.KUBERNETES:
        from shipway.gateway.app import kubernetes_gateway_app
        from shipway.kubernetes.model_deployments import api_client

        api = api_client(settings)
        try:
            with kubernetes_gateway_app(
                settings, api, settings.resolved_gateway_namespace
            ) as gateway:
                uvicorn.run(gateway, **options)
        finally:
            api.close()
        return

    from shipway.gateway.app import create_gateway_app

    container = Container(settings, run_migrations=migrate)
    uvicorn.run(create_gateway_app(settings, container.db), **options)


# What ``shipway serve worker --consume`` takes: both queues (one local worker does all),
# or one of them, so that a cluster keeps the token away from the workers that build.
WORKER_CONSUMES = ("all", "builds", "hooks")


def worker_queues(settings: Settings, consume: str) -> list[str]:
    """The Celery queues of ``--consume``: ``builds`` is ``SHIPWAY_BUILD_QUEUE`` (engine
    builds, which run untrusted models), ``hooks`` is ``SHIPWAY_HOOK_QUEUE`` (webhook
    deliveries, which apply pushed specs), ``all`` both. ValueError names the choices."""
    queues = {"builds": [settings.build_queue], "hooks": [settings.hook_queue]}
    queues["all"] = queues["builds"] + queues["hooks"]
    if consume not in queues:
        raise ValueError(f"--consume takes one of {', '.join(WORKER_CONSUMES)}, got {consume!r}")
    return queues[consume]


def serve_worker(settings: Settings, migrate: bool, consume: str = "all") -> None:
    """A Celery worker on the queues of ``consume`` (``worker_queues``), with the task code
    of those queues only: a worker for hooks has no build code, and the other way round.
    Its node name says what it takes (``shipway-<consume>@<host>``, in task results and
    ``celery inspect``)."""
    from shipway.builds import tasks
    from shipway.services import hook_tasks

    queues = worker_queues(settings, consume)
    _logging()
    container = Container(settings, run_migrations=migrate)
    app = container.celery
    if settings.build_queue in queues:
        tasks.register(app, container)
    if settings.hook_queue in queues:
        hook_tasks.register(app, container)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            f"--queues={','.join(queues)}",
            f"--hostname=shipway-{consume}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def serve_runtime(settings: Settings, migrate: bool) -> None:
    from shipway.runtime.load import LoadMeter, read_inflight_seconds
    from shipway.runtime.local import LocalRuntime
    from shipway.runtime.manager import RuntimeManager
    from shipway.runtime.triton_distribution import TritonDistribution

    _logging()
    container = Container(settings, run_migrations=migrate)
    dist = TritonDistribution(settings.triton_home)
    dist.check()
    runtime = LocalRuntime(
        container.registry,
        dist,
        settings.runtime_dir,
        settings.triton_start_timeout,
        drain_seconds=2 * settings.routes_refresh_seconds + 1.0,
    )
    # Replicas die with this process, and a predecessor's that did not are stopped here.
    if reaped := runtime.reap_leftovers():
        logging.getLogger(__name__).warning("stopped %d replica(s) left behind", reaped)
    meter = LoadMeter()
    gateway = settings.gateway_url
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    manager = RuntimeManager(
        container.db, runtime, load=lambda now: meter.update(now, read_inflight_seconds(gateway))
    )
    manager.run(stop, settings.reconcile_seconds)


SERVERS = {
    "api": serve_api,
    "gateway": serve_gateway,
    "worker": serve_worker,
    "runtime": serve_runtime,
}
