"""The worker's task for webhook deliveries, through the house decorator (an adapter:
Celery in, ``services.hooks.process`` out; kept out of the pure ``shipway.gitops``).

Explicit name, late acknowledgement, the delivery's id as the argument and its state
re-read inside: a re-delivered task finds the delivery finished and does nothing. Sent
to its own queue (``SHIPWAY_HOOK_QUEUE``, celery_app's task_routes): applying a pushed
spec on Kubernetes takes a token that may write ModelDeployments, and the workers that
build run untrusted models, so a cluster gives this queue its own worker
(``shipway serve worker --consume hooks``) and the build workers no token.
"""

from __future__ import annotations

from celery import Celery, Task

from shipway.builds.tasks import MAX_RETRIES, shipway_task
from shipway.container import Container
from shipway.services import hooks


def register(app: Celery, container: Container) -> None:
    """Attach the task to the worker's app; called by the worker's composition root."""

    @shipway_task(app, hooks.HOOK_TASK)
    def process_delivery(self: Task, delivery_id: str) -> dict[str, str]:
        """Apply one accepted delivery (fetch and apply a pushed commit, or queue the
        builds an MLflow event asks for) and record the outcome on it."""
        status = hooks.process(container, delivery_id, final=self.request.retries >= MAX_RETRIES)
        return {"delivery": delivery_id, "status": status}
