"""The rollout loop: the shared rollout controller, ticked per resource, at the time it asks.

One pass (``tick``) reads the ModelDeployment, takes its rollout record
(``status.rollout``, the controller's whole memory, in Kubernetes conventions) and runs
``Controller.reconcile`` with the Kubernetes ports (``rollout_ports``): the controller
decides, saves the record (``save``: a status write conditioned on the resource's
version, so a reconcile racing it is never overwritten), then converges the ports. The
pass returns when the controller wants to run again (``requeue_after``).

The status is the only memory: an operator killed at any point resumes from the record
it saved last. A decision saved but not carried out is carried out first (the
controller's catch-up), with the same weights; nothing is decided twice, so no step is
repeated and traffic does not flap.

``RolloutScheduler`` runs the passes: one operator-wide asyncio task with a due time
per resource, rather than kopf's per-resource ``@kopf.timer``/``@kopf.daemon``, because
kopf puts a finalizer on every resource that has a timer or daemon (nolar/kopf#1074),
and a resource must stay deletable while the operator is down. Resources enter it from
kopf's events on them (the initial listing included, so a restarted operator resumes
every running rollout); each leaves it when its controller has nothing to do until
someone acts (finished, paused, at a gate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipway.errors import Conflict, InvalidInput
from shipway.rollout.controller import Controller, Event, abandon
from shipway.rollout.controller import parse_spec as rollout_spec
from shipway.rollout.ports import Ports
from shipway.rollout.state import Phase
from shipway.rollout.status import RolloutStatus
from shipway_operator.kube import Kube
from shipway_operator.rollout_ports import CapacityPending
from shipway_operator.rollout_status import candidate_build_id, from_resource, to_resource
from shipway_operator.spec import API_VERSION, KIND, InvalidSpec, parse_spec
from shipway_operator.status import timestamp

log = logging.getLogger(__name__)


class Superseded(Exception):
    """The resource's record is no longer the one this pass works on (the spec named
    another build meanwhile): the pass stops; the next one starts from the new record."""


@dataclass(frozen=True)
class LoopSettings:
    """``start_timeout_seconds``: how long a candidate may take to become ready before
    its rollout fails; ``poll_seconds``: the requeue while waiting on the world;
    ``attempts``: tries of a status write that lost a race (HTTP 409)."""

    start_timeout_seconds: float = 600.0
    poll_seconds: float = 1.0
    attempts: int = 5


def tick(
    kube: Kube,
    namespace: str,
    name: str,
    ports: Ports,
    settings: LoopSettings,
    apply: Callable[[str], None],
    now: float | None = None,
) -> float | None:
    """One controller pass on ``namespace/name``; seconds until the next one is due, or
    None when the resource has no running rollout (or is gone, or its spec is invalid:
    the reconcile reports that). Port and API failures propagate only when the record
    could not be read; the controller's own port failures are retried after the poll.
    ``apply(name)`` reconciles the resource: called once its record is finished, so
    that what the finished record no longer wants (a promoted candidate) goes."""
    now = time.time() if now is None else now
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    record = (body.get("status") or {}).get("rollout")
    if not record or record.get("finished"):
        return None
    try:
        status = from_resource(record)
        spec = parse_spec(body.get("spec") or {})
    except (InvalidInput, InvalidSpec) as exc:  # the reconcile reports the spec's faults
        log.warning("rollout of %s %s/%s not run: %s", KIND, namespace, name, exc)
        return None
    save = _saver(kube, namespace, name, body, settings.attempts, now)
    try:
        strategy_spec = rollout_spec(spec.rollout.strategy, spec.rollout.engine_settings())
    except InvalidInput as exc:
        # settings the schema admits but the engine refuses (steps that do not rise...):
        # the rollout cannot run; it ends failed, saying why, and the candidate goes
        ended = abandon(status, f"spec.rollout is not valid: {exc}", now)
        with contextlib.suppress(Superseded):
            save(ended.status, ended.events)
            ports.placement.remove(name, status.variant)
        return None
    if status.candidate_build != spec.build.id:
        # the spec went back to the stable build mid-rollout: this record is over (a spec
        # naming yet another build has its own record, made by the reconcile)
        ended = abandon(status, f"spec.build changed to {spec.build.id} during the rollout", now)
        with contextlib.suppress(Superseded):
            save(ended.status, ended.events)
            ports.placement.remove(name, status.variant)  # traffic off it, then its objects
        return None
    controller = Controller(ports, settings.start_timeout_seconds, settings.poll_seconds)
    operation = wanted_operation(body["metadata"].get("annotations") or {}, status)
    try:
        if operation is not None:
            try:
                result = controller.operate(
                    name, strategy_spec, status, operation, OPERATOR_ACTOR, now, save
                )
            except Conflict as exc:  # the rollout moved on meanwhile: nothing to do
                log.info("%s of %s %s/%s not done: %s", operation, KIND, namespace, name, exc)
                result = controller.reconcile(name, strategy_spec, status, now, save)
        else:
            result = controller.reconcile(name, strategy_spec, status, now, save)
    except Superseded:
        return settings.poll_seconds
    if result.status.finished:
        apply(name)
    if isinstance(result.error, CapacityPending):
        log.info("rollout of %s %s/%s: %s", KIND, namespace, name, result.error)
    elif result.error is not None:
        log.warning(
            "rollout of %s %s/%s: %s (retried in %.0fs)",
            KIND,
            namespace,
            name,
            result.error,
            result.requeue_after or 0,
        )
    return result.requeue_after


# Rollout operations on Kubernetes are annotations of the ModelDeployment, declarative
# and idempotent (each names what it applies to, so applying it twice changes nothing,
# and a Git commit or `kubectl annotate` can carry it): see operators/README.md.
ANNOTATION_PAUSED = "shipway.io/paused"  # "true": pause the running rollout; else resume
ANNOTATION_APPROVED_STEP = "shipway.io/approved-step"  # approve the gates up to step N
ANNOTATION_PROMOTE = "shipway.io/promote"  # a candidate build id: promote it now
ANNOTATION_ABORT = "shipway.io/abort"  # a candidate build id: roll it back now
OPERATOR_ACTOR = "kubernetes-annotation"
_PAUSABLE = (Phase.SHADOWING, Phase.PROGRESSING, Phase.WAITING_GATE, Phase.BAKING)


def wanted_operation(annotations: dict[str, str], status: RolloutStatus) -> str | None:
    """The operation the resource's annotations ask of ``status`` now, or None. Pure.
    Abort before promote before pause/resume before approve; a build-scoped annotation
    applies to that candidate's rollout only; a stale one asks nothing."""
    state = status.state
    if status.finished:
        return None
    if state is None:  # still starting: only an abort applies
        return "abort" if annotations.get(ANNOTATION_ABORT) == status.candidate_build else None
    candidate = status.candidate_build
    if annotations.get(ANNOTATION_ABORT) == candidate and not state.phase.finished:
        return "abort"
    if annotations.get(ANNOTATION_PROMOTE) == candidate and state.phase in (
        Phase.SHADOWING,
        Phase.PROGRESSING,
        Phase.WAITING_GATE,
    ):
        return "promote"
    paused = annotations.get(ANNOTATION_PAUSED, "").strip().lower() == "true"
    if paused and state.phase in _PAUSABLE:
        return "pause"
    if not paused and state.phase is Phase.PAUSED:
        return "resume"
    approved = annotations.get(ANNOTATION_APPROVED_STEP, "").strip()
    if state.phase is Phase.WAITING_GATE and approved.isascii() and approved.isdigit():
        return "approve" if state.step <= int(approved) else None
    return None


def _saver(
    kube: Kube, namespace: str, name: str, body: dict[str, Any], attempts: int, now: float
) -> Callable[[RolloutStatus, list[Event]], None]:
    """``save`` for one pass: writes the record only over the one the pass started from
    (or saved last), so two writers of one rollout (a second operator process during an
    upgrade, say) never both decide a step: the one that finds the record changed
    stops (``Superseded``) and its next pass starts from what the other saved."""
    expected: list[Any] = [(body.get("status") or {}).get("rollout")]

    def save(status: RolloutStatus, events: list[Event]) -> None:
        record = to_resource(status)

        def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
            current = (fresh.get("status") or {}).get("rollout")
            if candidate_build_id(current) != status.candidate_build:
                raise Superseded(f"{KIND} {namespace}/{name} rolls out another build now")
            if current != expected[0]:
                raise Superseded(f"the rollout record of {KIND} {namespace}/{name} changed")
            new: dict[str, Any] = {"rollout": record}
            analysed = [e for e in events if e.details.get("numbers")]
            if analysed:
                last = analysed[-1]
                new["lastAnalysis"] = {
                    "time": timestamp(datetime.fromtimestamp(now, UTC)),
                    "event": last.event,
                    "reason": last.reason,
                    "weight": last.details.get("weight"),
                    "step": last.details.get("step"),
                    "numbers": last.details.get("numbers"),
                }
            return new

        kube.update_status(namespace, name, compute, attempts)
        expected[0] = record
        for event in events:
            kind = "Warning" if event.event in WARNINGS else "Normal"
            try:
                kube.event(body, kind, _reason(event.event), event.reason[:1024] or event.event)
            except Exception as exc:  # an Event is a courtesy: the status says it all
                log.warning("event on %s %s/%s not posted: %s", KIND, namespace, name, exc)

    return save


WARNINGS = frozenset({"rollout.rolled-back", "rollout.failed", "rollout.check-failed"})


def _reason(event: str) -> str:
    """``rollout.check-failed`` -> ``RolloutCheckFailed`` (an Event's CamelCase reason)."""
    return "".join(part.capitalize() for part in event.replace(".", "-").split("-"))


Key = tuple[str, str]  # (namespace, name)


class RolloutScheduler:
    """Runs ``run(namespace, name) -> requeue seconds | None`` for each resource at the
    time its last pass asked for, one pass per resource at a time, in the default
    executor (the passes block on the API). ``poke`` puts a resource in (due now) unless
    it is already scheduled or running: its own status writes must not make it spin."""

    def __init__(self, run: Callable[[str, str], float | None], retry_seconds: float = 5.0):
        self._run = run
        self._retry = retry_seconds
        self._due: dict[Key, float] = {}
        self._running: set[Key] = set()
        self._again: set[Key] = set()  # poked while its pass ran: another pass at once
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def poke(self, namespace: str, name: str) -> None:
        """Thread-safe; a no-op until ``run_forever`` started."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._poke, (namespace, name))

    def _poke(self, key: Key) -> None:
        if key in self._running:
            self._again.add(key)  # the pass may have read the resource before the change
            return
        if key in self._due:
            return
        self._due[key] = time.monotonic()
        assert self._wake is not None
        self._wake.set()

    def scheduled(self) -> set[Key]:
        return set(self._due) | set(self._running)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                now = time.monotonic()
                for key in [k for k, at in self._due.items() if at <= now]:
                    del self._due[key]
                    self._running.add(key)
                    task = asyncio.create_task(self._pass(key))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                wait = min(self._due.values(), default=now + 60.0) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, wait))
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _pass(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        try:
            after = await loop.run_in_executor(None, self._run, *key)
        except Exception as exc:  # the API was unreachable, say: try again later
            log.warning(
                "rollout pass of %s %s/%s failed (retried in %.0fs): %s",
                KIND,
                *key,
                self._retry,
                exc,
            )
            after = self._retry
        finally:
            self._running.discard(key)
        if key in self._again:
            self._again.discard(key)
            after = 0.0
        if after is not None:
            self._due[key] = time.monotonic() + after
            assert self._wake is not None
            self._wake.set()
