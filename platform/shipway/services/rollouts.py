"""Rollouts in local mode: start one, follow it, operate it; and the store-backed shell
around the shared rollout controller (``shipway.rollout.controller``).

The controller decides and carries out through the ports; this module only loads a
rollout's status (one JSON column), hands it to the controller with the rollout's
spec, and saves what the controller asks it to — a status and its audit events, in one
transaction — before the controller changes the world and again once it has. The
controller says when it wants to run next; ``run`` sleeps until the earliest of those
(or until a start or an operation wakes it), so nothing polls at a fixed rate.
Converging is level-triggered and idempotent, so a control plane killed between saving
and converging repairs the difference on its next pass.

Lineage: every audit event of a rollout names the model version, the candidate and
the stable build, so "which decision put this version in production, on what
numbers" is one query on ``rollout/<id>``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipway import audit
from shipway.container import Container
from shipway.errors import Conflict, NotFound, ShipwayError
from shipway.rollout import codec
from shipway.rollout.controller import (
    OPERATIONS,
    VARIANTS,
    Controller,
    Event,
    Result,
    Save,
    abandon,
    end_unstarted,
    new_status,
    parse_spec,
)
from shipway.rollout.ports import Ports
from shipway.rollout.state import Phase
from shipway.rollout.status import RolloutStatus
from shipway.services import deployments
from shipway.services.deployments import STABLE
from shipway.store.models import AuditEvent, Build, Deployment, Rollout

__all__ = ["OPERATIONS", "VARIANTS", "Ports", "parse_spec"]

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0  # the longest the loop sleeps: rollouts started elsewhere show up
RETRY_SECONDS = 5.0  # after a pass that failed as a whole (the store down)
_wakeups: weakref.WeakKeyDictionary[Container, threading.Event] = weakref.WeakKeyDictionary()


def local_ports(container: Container) -> Ports:
    from shipway.gateway.metrics_source import GatewayMetricsSource
    from shipway.services.rollout_ports import (
        StoreDriftScores,
        StorePlacement,
        StoreReleaseAliases,
        StoreRouter,
    )

    return Ports(
        StoreRouter(container),
        StorePlacement(container),
        GatewayMetricsSource(container.settings.gateway_url),
        StoreReleaseAliases(container),
        StoreDriftScores(container),
    )


def controller(container: Container, ports: Ports) -> Controller:
    poll = container.settings.rollout_tick_seconds or 1.0
    return Controller(ports, container.settings.rollout_start_timeout, poll)


def wake(container: Container) -> None:
    """Run the controller loop now (a rollout started or was operated, or it stops)."""
    _wakeup(container).set()


def _wakeup(container: Container) -> threading.Event:
    return _wakeups.setdefault(container, threading.Event())


# ---- start, read ------------------------------------------------------------------


def start(
    container: Container,
    ports: Ports,
    deployment: str,
    build_id: str,
    actor: str,
    strategy: str = "canary",
    settings: dict[str, Any] | None = None,
    allow_signature_change: bool = False,
) -> Rollout:
    """Validate everything, write the rollout, then place the candidate (no traffic).

    A candidate whose signature would break stable's clients is refused (409) before
    any traffic moves, unless ``allow_signature_change``; then the changes are part
    of the rollout's ``rollout.created`` audit event."""
    spec = parse_spec(strategy, settings or {})
    now = time.time()
    with container.rollout_lock:
        try:
            with container.db.session() as session:
                current = session.scalar(select(Deployment).where(Deployment.name == deployment))
                if current is None:
                    raise NotFound(f"deployment {deployment!r} does not exist")
                candidate = deployments.succeeded_build(session, build_id)
                if build_id == current.build_id:
                    raise Conflict(f"build {build_id} already serves {deployment} as stable")
                changes = deployments.signature_changes(
                    session, current.build_id, candidate, allow_signature_change
                )
                running = session.scalar(select(Rollout).where(Rollout.active_key == deployment))
                if running is not None:
                    raise Conflict(
                        f"deployment {deployment!r} has a running rollout {running.id} "
                        f"({running.phase}); abort it or wait for it to finish"
                    )
                others = [v.name for v in current.variants if v.name != STABLE]
                if others:
                    raise Conflict(
                        f"deployment {deployment!r} has other variants ({', '.join(others)}); "
                        "a rollout splits traffic between stable and its candidate only: "
                        "remove them first"
                    )
                status = new_status(strategy, build_id, current.build_id, now)
                rollout = Rollout(
                    deployment=deployment,
                    strategy=strategy,
                    variant=status.variant,
                    candidate_build_id=build_id,
                    stable_build_id=current.build_id,
                    spec=codec.spec_to_dict(spec),
                    status=status.to_dict(),
                    active_key=deployment,
                    created_by=actor,
                    created_at=datetime.fromtimestamp(now, UTC),
                )
                session.add(rollout)
                session.flush()
                details: dict[str, Any] = {"spec": rollout.spec}
                if changes:
                    details["signature_changes"] = changes
                _audit(session, rollout, Event("rollout.created", "", details, actor), candidate)
                rollout_id = rollout.id
        except IntegrityError:  # a concurrent start won the unique active_key
            raise Conflict(f"deployment {deployment!r} has a running rollout") from None
        # the candidate placed, no traffic yet
        save = _saver(container, rollout_id)
        result = controller(container, ports).reconcile(deployment, spec, status, now, save)
        if isinstance(result.error, ShipwayError):
            reason = f"could not place the candidate: {result.error}"
            ended = end_unstarted(status, Phase.FAILED, reason, time.time())
            save(ended, [Event("rollout.failed", reason, {})])
            raise result.error
        _log(rollout_id, result)
    wake(container)
    return get(container, rollout_id)


def get(container: Container, rollout_id: str, deployment: str | None = None) -> Rollout:
    with container.db.session() as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None or (deployment is not None and rollout.deployment != deployment):
            where = f" on deployment {deployment!r}" if deployment else ""
            raise NotFound(f"rollout {rollout_id!r} does not exist{where}")
        return rollout


def status_of(rollout: Rollout) -> RolloutStatus:
    return RolloutStatus.from_dict(rollout.status)


def list_rollouts(container: Container, deployment: str, limit: int = 20) -> list[Rollout]:
    with container.db.session() as session:
        query = (
            select(Rollout)
            .where(Rollout.deployment == deployment)
            .order_by(Rollout.created_at.desc())
            .limit(limit)
        )
        return list(session.scalars(query))


def timeline(container: Container, rollout_id: str) -> list[AuditEvent]:
    with container.db.session() as session:
        query = (
            select(AuditEvent)
            .where(AuditEvent.subject == f"rollout/{rollout_id}")
            .order_by(AuditEvent.id)
        )
        return list(session.scalars(query))


# ---- operations -------------------------------------------------------------------


def operate(
    container: Container,
    ports: Ports,
    deployment: str,
    rollout_id: str,
    operation: str,
    actor: str,
    now: float | None = None,
) -> Rollout:
    """pause, resume, promote, approve, abort: ``Conflict`` (409) when the rollout's
    phase does not allow it, nothing changed. Saved before converging: a port that
    fails is retried by the controller's next pass."""
    now = time.time() if now is None else now
    with container.rollout_lock:
        rollout = get(container, rollout_id, deployment)
        if rollout.active_key is None and operation in OPERATIONS:
            raise Conflict(f"rollout {rollout_id} already {rollout.phase}")
        spec = parse_spec(rollout.strategy, rollout.spec)
        save = _saver(container, rollout_id)
        result = controller(container, ports).operate(
            deployment, spec, status_of(rollout), operation, actor, now, save
        )
        if result.error is not None:
            log.warning("rollout %s: %s; retried on the next pass", rollout_id, result.error)
    wake(container)
    return get(container, rollout_id)


# ---- the controller's loop ----------------------------------------------------------


def tick(container: Container, ports: Ports, now: float | None = None) -> float | None:
    """One pass over every running rollout; returns the seconds until the earliest
    wants to run again (None: none does). Errors of one rollout are logged and retried
    after the poll period; they must not stop the others."""
    now = time.time() if now is None else now
    core = controller(container, ports)
    with container.db.session() as session:
        ids = list(session.scalars(select(Rollout.id).where(Rollout.active_key.is_not(None))))
    due: list[float] = []
    for rollout_id in ids:
        try:
            with container.rollout_lock:
                result = _reconcile(container, core, rollout_id, now)
            if result is not None:
                _log(rollout_id, result)
                if result.requeue_after is not None:
                    due.append(result.requeue_after)
        except ShipwayError as exc:
            log.warning("rollout %s: %s", rollout_id, exc)
            due.append(core.poll_seconds)
        except Exception:
            log.exception("rollout %s failed a pass", rollout_id)
            due.append(core.poll_seconds)
    return min(due, default=None)


def run(container: Container, ports: Ports, stop: threading.Event) -> None:
    """The controller's loop: a pass, then sleep for as long as the rollouts asked
    (at most ``RESYNC_SECONDS``), or until a start, an operation or ``stop`` wakes it
    (``wake``). State lives in the store, so a restarted process picks up where this
    one stopped."""
    woken = _wakeup(container)
    while not stop.is_set():
        woken.clear()
        try:
            delay = tick(container, ports)
        except Exception:  # the store unreachable, say: the loop must outlive it
            log.exception("the rollout controller's pass failed; retrying")
            delay = RETRY_SECONDS
        woken.wait(RESYNC_SECONDS if delay is None else min(delay, RESYNC_SECONDS))


def _reconcile(
    container: Container, core: Controller, rollout_id: str, now: float
) -> Result | None:
    rollout = get(container, rollout_id)
    if rollout.active_key is None:
        return None  # finished meanwhile
    status = status_of(rollout)
    save = _saver(container, rollout_id)
    if not _deployment_exists(container, rollout.deployment):
        result = abandon(status, "the deployment was deleted", now)
        save(result.status, result.events)
        return result
    spec = parse_spec(rollout.strategy, rollout.spec)
    return core.reconcile(rollout.deployment, spec, status, now, save)  # saves what changed


def _log(rollout_id: str, result: Result) -> None:
    if isinstance(result.error, ShipwayError):
        log.warning("rollout %s: %s", rollout_id, result.error)
    elif result.error is not None:
        log.error("rollout %s: a port failed", rollout_id, exc_info=result.error)


def _saver(container: Container, rollout_id: str) -> Save:
    def save(status: RolloutStatus, events: list[Event]) -> None:
        """A status and its audit events, in one transaction; a finished rollout frees
        its deployment for the next."""
        with container.db.session() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            rollout.status = status.to_dict()
            for event in events:
                _audit(session, rollout, event)
            if status.finished and rollout.active_key is not None:
                rollout.active_key, rollout.finished_at = None, datetime.now(UTC)

    return save


def _audit(session: Any, rollout: Rollout, event: Event, candidate: Build | None = None) -> None:
    build = candidate or session.get(Build, rollout.candidate_build_id)
    audit.record(
        session,
        event.actor,
        event.event,
        f"rollout/{rollout.id}",
        reason=event.reason,
        deployment=rollout.deployment,
        model=build.model_version.name,
        version=build.model_version.version,
        candidate_build=rollout.candidate_build_id,
        stable_build=rollout.stable_build_id,
        **event.details,
    )


def _deployment_exists(container: Container, name: str) -> bool:
    with container.db.session() as session:
        return session.scalar(select(Deployment.id).where(Deployment.name == name)) is not None
