"""Celery tasks, all through one house decorator.

The decorator fixes what every Shipway task must be: an explicit name, late
acknowledgement (a worker killed mid-task leaves the message to be re-delivered),
IDs as arguments with state re-read inside, and retry with backoff for retriable
errors only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from shipway.builds.celery_app import BUILD_TASK
from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.errors import ShipwayError

MAX_RETRIES = 5


def shipway_task(app: Celery, name: str, **options: Any) -> Callable[[Callable[..., Any]], Task]:
    def decorate(fn: Callable[..., Any]) -> Task:
        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except ShipwayError as exc:
                if exc.retriable and self.request.retries < MAX_RETRIES:
                    raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc
                raise

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return app.task(
            run,
            name=name,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            soft_time_limit=options.pop("soft_time_limit", 1800),
            time_limit=options.pop("time_limit", 2100),
            **options,
        )

    return decorate


def register(app: Celery, container: Container) -> None:
    """Attach task code to the worker's app; called by the worker's composition root."""
    pipeline = BuildPipeline(container.db, container.registry, container.settings)

    @shipway_task(app, BUILD_TASK)
    def run_build(self: Task, build_id: str) -> dict[str, str]:
        """Build one engine; progress goes to the build row and the task's state."""

        def progress(stage: str, fraction: float) -> None:
            if self.request.id:
                self.update_state(state="PROGRESS", meta={"stage": stage, "progress": fraction})

        pipeline.run(build_id, progress)
        return {"build_id": build_id}
