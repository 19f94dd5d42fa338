"""The rollout controller: begin, observe, accumulate counters, step, converge.

Written against the ports only (``shipway.rollout.ports``), so local mode (a
store-backed shell, ``shipway.services.rollouts``) and the Kubernetes operator run the
same controller. It holds no state between calls: a rollout's whole memory is its
``RolloutStatus``, passed in and handed back with what happened (events to audit) and
when the controller wants to run again (``requeue_after``, seconds). The caller
persists the status; whatever it does with the events is its business (locally: audit
rows, in one transaction with the status).

Decide, save, then act: ``reconcile`` and ``operate`` take a ``save`` callback and call
it with a decided status (and its events) *before* any port changes the world, then
again once the world is converged. A caller killed after the first save finds a status
whose ``converged`` lags its target and converges it on the next call, without deciding
again; one killed before it finds the world untouched. Deciding after acting would let
a restart re-decide from a later reading — a rollback undone by a step, say.

Converging is level-triggered and idempotent: the ports are brought to the status's
phase and weight, and ``status.converged`` records that they were.

The spec is not part of the status: on Kubernetes it is the resource's ``.spec``,
locally its own column; it is validated (``parse_spec``) before a rollout starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shipway.errors import Conflict, InvalidInput
from shipway.rollout import canary, codec, counts, experiment
from shipway.rollout.canary import CanarySpec
from shipway.rollout.checks import Observation
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.ports import MetricsUnavailable, Ports
from shipway.rollout.state import Action, Phase, Record, State
from shipway.rollout.status import RUNNING, STABLE, Counters, RolloutStatus

log = logging.getLogger(__name__)

Spec = CanarySpec | ExperimentSpec
VARIANTS = {"canary": "canary", "experiment": "challenger"}  # strategy -> candidate variant
OPERATIONS = ("pause", "resume", "promote", "approve", "abort")
CONTROLLER = "rollout-controller"  # the actor of the controller's own events
_EMPTY = counts.VariantCounts()


@dataclass(frozen=True)
class Event:
    """Something that happened to a rollout, to audit: ``rollout.step``,
    ``rollout.check-failed``, ``rollout.finished``... ``details`` holds plain JSON."""

    event: str
    reason: str
    details: dict[str, Any]
    actor: str = CONTROLLER


Save = Callable[[RolloutStatus, "list[Event]"], None]  # persist a status and its events


@dataclass(frozen=True)
class Result:
    """The new status, its events (in order; each already given to ``save``), and when
    to call again:
    ``requeue_after`` seconds from now, or None when nothing but an operation (or a
    changed spec) can move it. ``error`` is a port's failure while converging: the
    status still holds what was decided, converging is retried after
    ``requeue_after``."""

    status: RolloutStatus
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    error: Exception | None = None


def parse_spec(strategy: str, data: dict[str, Any]) -> Spec:
    """The strategy's spec from plain JSON; ``InvalidInput`` naming what is wrong."""
    if strategy == "canary":
        return codec.canary_spec(data)
    if strategy == "experiment":
        return codec.experiment_spec(data)
    raise InvalidInput(f"strategy must be 'canary' or 'experiment', got {strategy!r}")


def new_status(strategy: str, candidate_build: str, stable_build: str, now: float) -> RolloutStatus:
    """A rollout not begun yet: the first ``reconcile`` places the candidate."""
    if strategy not in VARIANTS:
        raise InvalidInput(f"strategy must be 'canary' or 'experiment', got {strategy!r}")
    return RolloutStatus(strategy, VARIANTS[strategy], candidate_build, stable_build, now)


@dataclass(frozen=True)
class Controller:
    """``start_timeout_seconds``: how long the candidate's replicas may take to become
    ready before the rollout ends failed, having served nothing. ``poll_seconds``: the
    requeue while waiting on the world (replicas starting, a port that failed)."""

    ports: Ports
    start_timeout_seconds: float = 300.0
    poll_seconds: float = 1.0

    # ---- the loop ---------------------------------------------------------------

    def reconcile(
        self, deployment: str, spec: Spec, status: RolloutStatus, now: float, save: Save
    ) -> Result:
        """One pass: begin once the candidate is ready, analyse if an interval has
        passed (one engine step), ``save`` what was decided, then converge the ports to
        it (and ``save`` that). Errors of the metrics provider make that analysis
        inconclusive; a port's failure before the step leaves the status as it was
        (``error`` set), one while converging keeps the step's result. An error of
        ``save`` propagates, with no port changed after the decision.

        A decision not carried out yet (``converged`` behind its target: a port failed,
        or the process died after saving) is converged first and nothing is analysed
        in that pass: the next analysis must judge traffic served at the decided
        weight, so its interval starts once the world matches."""
        if status.finished:
            return Result(status)
        if status.state is not None and status.converged != status.target:
            return self._catch_up(deployment, spec, status, now, save)
        try:
            stepped, events = self._step(deployment, spec, status, now)
        except Exception as exc:  # a port failed (readiness): nothing decided, retried
            return Result(status, [], self.poll_seconds, exc)
        return self._converge_into(deployment, spec, status, stepped, events, now, save)

    def operate(
        self,
        deployment: str,
        spec: Spec,
        status: RolloutStatus,
        operation: str,
        actor: str,
        now: float,
        save: Save,
    ) -> Result:
        """pause, resume, promote (now), approve (a gate), abort (roll back now): saved,
        then converged. ``Conflict`` when the rollout's phase does not allow it,
        ``InvalidInput`` for an unknown operation; either leaves the status as it was."""
        before = status
        if operation not in OPERATIONS:
            raise InvalidInput(f"operation must be one of {', '.join(OPERATIONS)}")
        if status.finished:
            raise Conflict(f"the rollout already {status.phase}")
        if status.state is None:  # still starting: only an abort makes sense
            if operation != "abort":
                raise Conflict("the rollout is still starting; it can only be aborted")
            reason = "aborted by an operator"
            status = end_unstarted(status, Phase.ROLLED_BACK, reason, now)
            events = [Event("rollout.rolled-back", reason, {}, actor)]
        else:
            state, actions = _operation(spec, status.state, operation, now)
            counters = status.counters
            if operation in ("approve", "resume"):
                # the next interval starts now: its analysis must not judge traffic
                # from before the pause or the gate
                snapshot = self._snapshot(deployment)
                if snapshot is not None:
                    counters, _ = counters.accumulate(snapshot)
            status = replace(status, state=state, phase=state.phase, counters=counters)
            events = _events(state, actions, actor)
        return self._converge_into(deployment, spec, before, status, events, now, save)

    def converge(
        self, deployment: str, spec: Spec, status: RolloutStatus
    ) -> tuple[RolloutStatus, list[Event]]:
        """Bring the ports to the status's phase and weight; idempotent, and a no-op
        once ``status.converged`` says so. A finished phase also takes the candidate
        out (rolled back, failed) or makes it stable (succeeded; done once the new
        stable replicas are ready), then marks the rollout finished. Port errors
        propagate, the status unchanged."""
        if status.finished or status.converged == status.target:
            return status, []
        ports, name, variant = self.ports, deployment, status.variant
        candidate, weight, phase = status.candidate_build, status.weight, status.phase
        experimenting = status.strategy == "experiment"
        finished = True
        if phase in (Phase.ROLLED_BACK, Phase.FAILED):  # stable as before, candidate gone
            ports.placement.remove(name, variant)
            ports.aliases.set_alias(status.stable_build, "production")
        else:
            # live weights and a mirror exclude each other: clear one before the other
            share = 0.0
            if isinstance(spec, CanarySpec) and spec.shadow and phase is Phase.SHADOWING:
                share = spec.shadow.share
            ports.placement.place(name, variant, candidate)
            if not share:
                ports.router.set_shadow(name, variant, 0.0)
            if experimenting and phase is not Phase.SUCCEEDED:
                ports.router.set_split(name, sticky=True)
            ports.router.set_weights(name, {STABLE: 100 - weight, variant: weight})
            if share:
                ports.router.set_shadow(name, variant, share)
            if phase is Phase.BAKING:
                ports.aliases.set_alias(candidate, "production")
            elif status.converged is None:
                ports.aliases.set_alias(candidate, "candidate")
            finished = phase is Phase.SUCCEEDED
            if finished:
                ports.placement.make_stable(name, candidate)
                if not ports.placement.ready(name, STABLE, candidate):
                    return status, []  # the new stable is starting; the candidate serves
                ports.placement.remove(name, variant)
                ports.aliases.set_alias(candidate, "production")
        events: list[Event] = []
        if finished:
            if experimenting:
                ports.router.set_split(name, sticky=False)
            ports.aliases.delete_alias(candidate, "candidate")
            events.append(Event("rollout.finished", str(phase), {"weight": weight}))
        return replace(status, converged=status.target, finished=finished), events

    def requeue_after(self, spec: Spec, status: RolloutStatus, now: float) -> float | None:
        """Seconds until the controller has something to do for this status: the next
        analysis, or a poll while the world catches up; None: nothing until an
        operation (paused, at a gate, finished)."""
        if status.finished:
            return None
        if status.converged != status.target or status.state is None:
            return self.poll_seconds
        if status.phase in RUNNING:
            due = status.state.last_analysis_at + spec.interval_seconds
            return max(0.0, due - now)
        return None

    # ---- inside -----------------------------------------------------------------

    def _catch_up(
        self, deployment: str, spec: Spec, status: RolloutStatus, now: float, save: Save
    ) -> Result:
        try:
            converged, events = self.converge(deployment, spec, status)
        except Exception as exc:  # still not carried out: retried after the poll
            return Result(status, [], self.poll_seconds, exc)
        state = converged.state
        if state is not None and state.phase in RUNNING:
            # the interval restarts now, from a fresh reading: traffic before this
            # moment was served at the previous weight
            counters = converged.counters
            snapshot = self._snapshot(deployment)
            if snapshot is not None:
                counters, _ = counters.accumulate(snapshot)
            converged = replace(
                converged, state=replace(state, last_analysis_at=now), counters=counters
            )
        if events or converged != status:  # still waiting (a new stable starting): no write
            save(converged, events)
        return Result(converged, events, self.requeue_after(spec, converged, now))

    def _converge_into(
        self,
        deployment: str,
        spec: Spec,
        before: RolloutStatus,
        status: RolloutStatus,
        events: list[Event],
        now: float,
        save: Save,
    ) -> Result:
        if events or status != before:
            save(status, events)  # decided, and kept before the world changes
        try:
            converged, more = self.converge(deployment, spec, status)
        except Exception as exc:  # kept: the next call converges what is saved
            return Result(status, events, self.poll_seconds, exc)
        if more or converged != status:
            save(converged, more)
        return Result(converged, events + more, self.requeue_after(spec, converged, now))

    def _step(
        self, deployment: str, spec: Spec, status: RolloutStatus, now: float
    ) -> tuple[RolloutStatus, list[Event]]:
        if status.state is None:
            return self._begin(deployment, spec, status, now)
        state = status.state
        if state.phase not in RUNNING or now - state.last_analysis_at < spec.interval_seconds:
            return status, []
        snapshot = self._snapshot(deployment)
        counters, interval = status.counters, {}
        if snapshot is not None:
            counters, interval = counters.accumulate(snapshot)
        if isinstance(spec, CanarySpec):
            observation = None
            if snapshot is not None:
                observation = observe(status.variant, spec, interval, counters)
                if spec.thresholds.max_drift_score is not None and self.ports.drift is not None:
                    score = self.ports.drift.score(deployment, STABLE, status.variant)
                    observation = replace(observation, drift_score=score)
            state, actions = canary.advance(spec, state, observation, now)
        else:
            arms = None
            if snapshot is not None:
                arms = (
                    counts.arm(STABLE, counters.total.get(STABLE, _EMPTY)),
                    counts.arm(status.variant, counters.total.get(status.variant, _EMPTY)),
                )
            state, actions = experiment.advance_experiment(spec, state, arms, now)
        status = replace(status, state=state, phase=state.phase, counters=counters)
        return status, _events(state, actions)

    def _begin(
        self, deployment: str, spec: Spec, status: RolloutStatus, now: float
    ) -> tuple[RolloutStatus, list[Event]]:
        """The first step once the candidate's replicas are ready; counters start here."""
        if self.ports.placement.ready(deployment, status.variant, status.candidate_build):
            if isinstance(spec, CanarySpec):
                state, actions = canary.start(spec, now)
            else:
                state, actions = experiment.start_experiment(spec, now)
            counters = Counters()
            snapshot = self._snapshot(deployment)
            if snapshot is not None:
                counters, _ = counters.accumulate(snapshot)
                # stable's record before the rollout (kept here, so a provider restart
                # that zeroes its counters does not lose it)
                counters = replace(counters, before={STABLE: snapshot.get(STABLE, _EMPTY)})
            status = replace(status, state=state, phase=state.phase, counters=counters)
            return status, _events(state, actions)
        if now - status.created_at > self.start_timeout_seconds:
            waited = self.start_timeout_seconds
            reason = f"the candidate's replicas were not ready after {waited:.0f}s"
            status = end_unstarted(status, Phase.FAILED, reason, now)
            return status, [Event("rollout.failed", reason, {})]
        return status, []

    def _snapshot(self, deployment: str) -> counts.Snapshot | None:
        try:
            return self.ports.metrics.snapshot(deployment)
        except MetricsUnavailable as exc:
            log.warning("metrics of %s unavailable: %s", deployment, exc)
            return None


def observe(
    variant: str, spec: CanarySpec, interval: counts.Snapshot, counters: Counters
) -> Observation:
    """The interval's numbers, candidate and stable side by side. Latency is compared
    only with stable's traffic of the same interval: a yardstick from another interval
    was measured under another load (at 100 % the candidate's replicas carry what both
    variants carried before), so without concurrent stable traffic the latency checks
    do not apply. 4xx are also judged against stable's record before and during the
    rollout, for intervals in which stable served too little alongside."""
    confidence = spec.thresholds.confidence
    candidate = counts.stats(interval.get(variant, _EMPTY), confidence)
    stable = counts.stats(interval.get(STABLE, _EMPTY), confidence)
    shadow = counters.total.get(variant, _EMPTY).shadow_counts()
    before = counters.before.get(STABLE, _EMPTY)
    reference = counts.stats(before.plus(counters.total.get(STABLE, _EMPTY)), confidence)
    return Observation(candidate, stable, shadow=shadow, stable_reference=reference)


def _operation(spec: Spec, state: State, operation: str, now: float) -> tuple[State, list[Action]]:
    if operation == "pause":
        return canary.pause(state)
    if operation == "resume":
        return canary.resume(state, now)
    if operation == "abort":
        return canary.abort(state)
    if isinstance(spec, ExperimentSpec):
        if operation == "approve":
            raise Conflict("an experiment has no approval gates")
        return experiment.promote_challenger(state)
    if operation == "approve":
        return canary.approve(spec, state, now)
    return canary.promote_now(spec, state, now)


def _events(state: State, actions: list[Action], actor: str = CONTROLLER) -> list[Event]:
    """The engine's records as events, with where the rollout stands."""
    return [
        Event(
            a.event,
            a.reason,
            {"weight": state.weight, "step": state.step, "numbers": a.details},
            actor,
        )
        for a in actions
        if isinstance(a, Record)
    ]


def end_unstarted(status: RolloutStatus, phase: Phase, reason: str, now: float) -> RolloutStatus:
    """Ended before it began (``phase`` FAILED or ROLLED_BACK): a state only for its
    reason, it never took traffic. Converging then takes the candidate out."""
    return replace(status, phase=phase, state=State(phase, 0, 0, now, now, reason=reason))


def abandon(status: RolloutStatus, reason: str, now: float) -> Result:
    """The deployment is gone (deleted under the rollout): failed and finished at once,
    nothing left to converge."""
    state = status.state or State(Phase.FAILED, 0, 0, now, now)
    state = replace(state, phase=Phase.FAILED, weight=0, reason=reason)
    ended = replace(status, phase=Phase.FAILED, state=state)
    ended = replace(ended, converged=ended.target, finished=True)
    return Result(ended, [Event("rollout.failed", reason, {})])
