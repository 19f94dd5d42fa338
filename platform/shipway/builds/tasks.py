"""Celery tasks, all through one house decorator.

The decorator fixes what every Shipway task must be: an explicit name, late
acknowledgement (a worker killed mid-task leaves the message to be re-delivered),
IDs as arguments with state re-read inside, and retry with backoff for retriable
errors only.

Build time limits are not Celery's ``soft_time_limit``/``time_limit``: the worker
runs the solo pool, which ignores them. The build task runs each build in a child
process under the limits from settings (``isolation.run_limited``) and fails a
build whose process it had to kill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from shipway.builds.celery_app import BUILD_TASK
from shipway.builds.isolation import Limits, run_limited
from shipway.builds.pipeline import BuildPipeline, build_in_process
from shipway.container import Container
from shipway.errors import ShipwayError, Unavailable

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
            run, name=name, bind=True, acks_late=True, reject_on_worker_lost=True, **options
        )

    return decorate


def register(app: Celery, container: Container) -> None:
    """Attach task code to the worker's app; called by the worker's composition root."""
    settings = container.settings
    pipeline = BuildPipeline(container.db, container.registry, settings)
    limits = Limits(settings.build_soft_time_limit, settings.build_hard_time_limit)

    @shipway_task(app, BUILD_TASK)
    def run_build(self: Task, build_id: str) -> dict[str, str]:
        """Build one engine in a child process under the build time limits; progress
        goes to the build row (from the child) and the task's state (from here)."""

        def progress(stage: str, fraction: float) -> None:
            if self.request.id:
                self.update_state(state="PROGRESS", meta={"stage": stage, "progress": fraction})

        if not pipeline.needs_run(build_id):
            return {"build_id": build_id, "outcome": "skipped"}
        outcome = run_limited(
            build_in_process,
            (settings, build_id),
            limits,
            settings.home / "build-work" / build_id,
            progress,
        )
        if outcome.retriable:
            raise Unavailable(outcome.error or "a dependency of the build is unavailable")
        if outcome.status != "finished":
            pipeline.fail_unfinished(build_id, outcome.reason(limits))
        return {"build_id": build_id, "outcome": outcome.status}
