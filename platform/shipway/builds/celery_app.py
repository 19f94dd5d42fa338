"""The Celery application for builds, configured from settings.

Locally the broker is kombu's SQLAlchemy transport on a SQLite file (no server);
in tests and production it is Redis. Task code is registered by
``shipway.builds.tasks.register`` in the worker only: the API enqueues by name.

Two queues: builds (``SHIPWAY_BUILD_QUEUE``), which run untrusted models, and webhook
deliveries (``SHIPWAY_HOOK_QUEUE``), whose worker applies pushed specs with a Kubernetes
token; so a cluster runs each on its own workers (``shipway serve worker --consume``).
"""

from __future__ import annotations

from celery import Celery

from shipway.settings import Settings

BUILD_TASK = "shipway.builds.run_build"
# Webhook deliveries (``shipway.services.hook_tasks``); named here, beside its route.
HOOK_TASK = "shipway.gitops.process_delivery"


def create_celery(settings: Settings) -> Celery:
    app = Celery("shipway")
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        result_backend=settings.resolved_result_backend,
        task_default_queue=settings.build_queue,
        task_routes={
            BUILD_TASK: {"queue": settings.build_queue},
            HOOK_TASK: {"queue": settings.hook_queue},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        result_extended=True,
        worker_hijack_root_logger=False,
    )
    if settings.resolved_broker_url.startswith("redis"):
        # A build whose worker died (unacknowledged) is re-delivered after this long;
        # it must outlast the longest build, or a live build would run twice.
        # Workers look for such builds every 10 s (kombu's default scans only every
        # tenth look, so a dead worker's build would wait 100 s more than it must).
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.build_redelivery_seconds,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        }
    # (kombu's SQLAlchemy transport hands its options to create_engine: none for it.)
    return app


def enqueue_build(app: Celery, build_id: str) -> str:
    """Send a build by task name; the caller has committed the build row already."""
    result = app.send_task(BUILD_TASK, args=[build_id])
    return str(result.id)
