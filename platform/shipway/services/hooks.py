"""Webhook deliveries: Git pushes apply the repository's spec, MLflow events start builds.

A delivery is authenticated by its signature (``shipway.gitops.signatures``), parsed
(``shipway.gitops.push_events``), recorded once under ``<provider>:<delivery id>`` and,
when there is something to do, handed to a worker (``shipway.services.hook_tasks``) after
the commit: the sender gets its answer at once, and a replay finds the first row and does
nothing. The worker queues the builds a spec asks for
(``services.gitops.builds_for_version``), or for a push fetches the configured branch and
applies its tip (``services.gitops.apply``): a pushed commit that is no longer the tip is
recorded as superseded, and one that is not on the branch is refused, so neither a late
delivery nor a replayed one under a new delivery id (GitHub does not sign the id) nor a
commit from another ref puts an older or foreign spec in place. It records the plan or
the error on the delivery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipway.builds.celery_app import HOOK_TASK
from shipway.container import Container
from shipway.errors import InvalidInput, NotFound, ShipwayError, Unavailable
from shipway.gitops import push_events, signatures
from shipway.gitops.push_events import PushEvent, RegistryEvent
from shipway.store.models import DeliveryStatus, HookDelivery, ModelVersion, utcnow

if TYPE_CHECKING:
    from shipway.services.git_source import GitRepository

log = logging.getLogger(__name__)

MLFLOW_ACTOR = "mlflow:webhook"
# How many times one delivery re-applies a branch that moved while it applied (each newer
# push has its own delivery too; this only makes the last apply to finish the tip's).
CATCH_UP_APPLIES = 3


@dataclass(frozen=True)
class Outcome:
    """What the worker did with a delivery: the status to record, the plan, a message."""

    status: DeliveryStatus
    plan: dict[str, Any] | None = None
    message: str | None = None


class HookDisabled(NotFound):
    """The hook's secret (or the repository it needs) is not configured; names the
    setting that enables it. Answered 404: the endpoint is off on this server (a 503
    would tell senders to retry, and nothing will change until someone sets it)."""


@dataclass(frozen=True)
class Receipt:
    """What the sender is told: the delivery (new or the first of a replay)."""

    delivery: HookDelivery
    duplicate: bool


def receive_git(container: Container, headers: Mapping[str, str], body: bytes) -> Receipt:
    """A GitHub or GitLab delivery: ``HookDisabled``, ``signatures.BadSignature`` (before
    anything is read from the body), ``push_events.InvalidPayload``, or the receipt."""
    settings = container.settings
    provider = push_events.provider_of(headers)
    lowered = {key.lower(): value for key, value in headers.items()}
    if provider is None:  # no sender named: nothing to check a signature against
        raise signatures.BadSignature(
            f"not a GitHub or GitLab delivery: no {push_events.GITHUB_EVENT_HEADER} or "
            f"{push_events.GITLAB_EVENT_HEADER} header"
        )
    if provider == "github":
        if settings.github_webhook_secret is None:
            raise HookDisabled("GitHub deliveries are off: set SHIPWAY_GITHUB_WEBHOOK_SECRET")
        signatures.verify_github(
            settings.github_webhook_secret.get_secret_value(),
            body,
            lowered.get(signatures.GITHUB_SIGNATURE_HEADER.lower()),
        )
    else:
        if settings.gitlab_webhook_token is None:
            raise HookDisabled("GitLab deliveries are off: set SHIPWAY_GITLAB_WEBHOOK_TOKEN")
        signatures.verify_gitlab(
            settings.gitlab_webhook_token.get_secret_value(),
            lowered.get(signatures.GITLAB_TOKEN_HEADER.lower()),
        )
    if not settings.gitops_repository_url:
        raise HookDisabled("pushes are not applied: set SHIPWAY_GITOPS_REPOSITORY_URL")
    push = push_events.parse_git(provider, headers, body, settings.gitops_branch)
    return _record(container, _git_row(push))


def receive_mlflow(
    container: Container, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> Receipt:
    """An MLflow delivery; the event starts builds when the model's last applied spec
    asks for it (``triggers.mlflow``), else it is recorded as ignored, with the reason."""
    secret = container.settings.mlflow_webhook_secret
    if secret is None:
        raise HookDisabled("MLflow deliveries are off: set SHIPWAY_MLFLOW_WEBHOOK_SECRET")
    lowered = {key.lower(): value for key, value in headers.items()}
    signatures.verify_mlflow(
        secret.get_secret_value(),
        body,
        lowered.get(signatures.MLFLOW_DELIVERY_HEADER.lower()),
        lowered.get(signatures.MLFLOW_TIMESTAMP_HEADER.lower()),
        lowered.get(signatures.MLFLOW_SIGNATURE_HEADER.lower()),
        time.time() if now is None else now,
    )
    event = push_events.parse_mlflow(headers, body)
    reason = event.ignored
    if reason is None and event.model is not None:
        events, aliases = _mlflow_triggers(container, event.model)
        reason = push_events.trigger_reason(event, events, aliases)
    return _record(container, _mlflow_row(event, reason))


def process(container: Container, delivery_id: str, *, final: bool) -> str:
    """The worker's part: apply a queued delivery and record the outcome; its status.

    A delivery already finished is left alone (a re-delivered task does nothing). A
    retriable error (git or MLflow unreachable, a version not yet in Shipway's store) is
    raised for the task to retry, unless ``final``: then it is recorded as the failure,
    as every permanent error is at once."""
    with container.db.session() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        if row.status != DeliveryStatus.QUEUED:
            return row.status
    try:
        outcome = _run(container, row)
    except ShipwayError as exc:
        if exc.retriable and not final:
            log.warning("delivery %s: %s; retrying", delivery_id, exc)
            raise
        _finish(container, delivery_id, Outcome(DeliveryStatus.FAILED, message=str(exc)))
        return DeliveryStatus.FAILED
    except Exception:
        # Not the reader's business (a database error carries SQL and parameters): the
        # delivery says where to look, the worker's log has the traceback.
        log.exception("delivery %s: internal error", delivery_id)
        message = f"internal error; see the worker log (delivery {delivery_id})"
        _finish(container, delivery_id, Outcome(DeliveryStatus.FAILED, message=message))
        raise
    _finish(container, delivery_id, outcome)
    return outcome.status


def list_deliveries(container: Container, limit: int = 100) -> list[HookDelivery]:
    with container.db.session() as session:
        query = select(HookDelivery).order_by(HookDelivery.received_at.desc()).limit(limit)
        return list(session.scalars(query))


def get(container: Container, delivery_id: str) -> HookDelivery:
    with container.db.session() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return row


def _run(container: Container, row: HookDelivery) -> Outcome:
    from shipway.services import gitops

    if row.provider == "mlflow":
        assert row.model is not None and row.version is not None
        _known_version(container, row.model, row.version)
        plan = gitops.builds_for_version(container, row.model, row.version, actor=MLFLOW_ACTOR)
        return Outcome(DeliveryStatus.APPLIED, plan.to_dict())
    return _apply_tip(container, row)


def _apply_tip(container: Container, row: HookDelivery) -> Outcome:
    """Apply the configured branch's tip for a push of ``row.commit``: superseded (ignored)
    when the branch has moved on, refused when the commit is not on the branch.

    Two deliveries applying at once may finish in either order, so after applying, the
    tip is read again and, if it moved, applied again: the last apply to finish is the
    tip's (applying is idempotent, so this costs nothing when another delivery did it)."""
    from shipway.services.git_source import GitRepository, redact

    settings = container.settings
    if not settings.gitops_repository_url:  # unset since the delivery was accepted
        raise NotFound("SHIPWAY_GITOPS_REPOSITORY_URL is not set on the worker")
    assert row.commit is not None
    branch = settings.gitops_branch
    repository = GitRepository(
        settings.gitops_repository_url, settings.gitops_cache_dir, settings.gitops_git_timeout
    )
    position = repository.position(row.commit, branch)
    if not position.on_branch:
        raise InvalidInput(
            f"commit {row.commit} is not on branch {branch!r} of "
            f"{redact(settings.gitops_repository_url)} (at {position.tip}); only the "
            "branch's own commits are applied (SHIPWAY_GITOPS_BRANCH)"
        )
    if position.tip != row.commit:
        return Outcome(DeliveryStatus.IGNORED, message=f"superseded: {branch} is at {position.tip}")
    tip, message, actor = row.commit, None, f"git:{row.provider}"
    plan = _apply_commit(container, repository, tip, actor)
    # This delivery's commit is applied from here on: a later error is only noted (the
    # newer push's own delivery records and retries its failure).
    for _ in range(CATCH_UP_APPLIES):
        try:
            latest = repository.fetch_tip(branch)
        except ShipwayError as exc:
            message = f"applied; could not check whether {branch} moved meanwhile: {exc}"
            break
        if latest == tip:
            break
        message = f"{branch} moved to {latest} during the apply; applied it too"
        try:
            plan = _apply_commit(container, repository, latest, actor)
        except ShipwayError as exc:
            message = f"{branch} moved to {latest} during the apply; applying it failed: {exc}"
            break
        tip = latest
    return Outcome(DeliveryStatus.APPLIED, plan, message)


def _apply_commit(
    container: Container, repository: GitRepository, commit: str, actor: str
) -> dict[str, Any]:
    from shipway.services import gitops

    source = repository.spec_source(commit, container.settings.gitops_spec_path)
    return gitops.apply(container, source, dry_run=False, actor=actor).to_dict()


def _known_version(container: Container, model: str, version: int) -> None:
    """MLflow announces a version as it creates it, before Shipway's registration has
    stored it: not there yet is worth a retry."""
    with container.db.session() as session:
        found = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.name == model, ModelVersion.version == version
            )
        )
    if found is None:
        raise Unavailable(
            f"model {model!r} version {version} is not registered in Shipway (yet); "
            "versions registered in MLflow directly cannot be built"
        )


def _mlflow_triggers(
    container: Container, model: str
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """``triggers.mlflow``'s events and aliases in the model's last applied spec (events
    None where there is no spec or no MLflow trigger)."""
    from shipway.services import gitops

    spec = gitops.last_applied(container, model)
    mlflow = spec.triggers.mlflow if spec is not None and spec.triggers is not None else None
    if mlflow is None:
        return None, ()
    return tuple(mlflow.events), tuple(mlflow.aliases)


def _git_row(push: PushEvent) -> HookDelivery:
    now = utcnow()  # one clock reading: an ignored delivery finishes as it is received
    return HookDelivery(
        key=f"{push.provider}:{push.delivery_id}",
        provider=push.provider,
        delivery_id=push.delivery_id,
        event=push.event,
        ref=push.ref,
        commit=push.commit,
        repository=push.repository,
        status=DeliveryStatus.IGNORED if push.ignored else DeliveryStatus.QUEUED,
        message=push.ignored,
        received_at=now,
        finished_at=now if push.ignored else None,
    )


def _mlflow_row(event: RegistryEvent, reason: str | None) -> HookDelivery:
    now = utcnow()
    return HookDelivery(
        key=f"mlflow:{event.delivery_id}",
        provider="mlflow",
        delivery_id=event.delivery_id,
        event=event.event,
        model=event.model,
        version=event.version,
        alias=event.alias,
        status=DeliveryStatus.IGNORED if reason else DeliveryStatus.QUEUED,
        message=reason,
        received_at=now,
        finished_at=now if reason else None,
    )


def _record(container: Container, row: HookDelivery) -> Receipt:
    """Insert the delivery; a replay (the unique key taken, even by a concurrent insert)
    returns the first one's row. A queued delivery is handed to a worker after the
    commit; if the queue cannot take it, the row goes again (so the sender's retry is
    not mistaken for a replay) and ``Unavailable`` says so."""
    try:
        with container.db.session() as session:
            session.add(row)
    except IntegrityError:
        with container.db.session() as session:
            first = session.scalar(select(HookDelivery).where(HookDelivery.key == row.key))
        if first is None:  # the other insert rolled back meanwhile: not a replay
            raise Unavailable("a concurrent copy of this delivery failed; send it again") from None
        return Receipt(first, duplicate=True)
    if row.status == DeliveryStatus.QUEUED:
        try:
            # to SHIPWAY_HOOK_QUEUE (celery_app's task_routes), never to the build workers
            container.celery.send_task(HOOK_TASK, args=[row.id])
        except Exception as exc:
            with container.db.session() as session:
                found = session.get(HookDelivery, row.id)
                if found is not None:  # gone already: nothing to take back
                    session.delete(found)
            raise Unavailable(f"the task queue did not take the delivery: {exc}") from None
    return Receipt(row, duplicate=False)


def _finish(container: Container, delivery_id: str, outcome: Outcome) -> None:
    with container.db.session() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is None:
            return
        row.status = outcome.status
        row.message = outcome.message
        row.plan = outcome.plan
        row.finished_at = utcnow()
