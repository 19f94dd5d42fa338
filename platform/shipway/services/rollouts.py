"""Rollouts: start one, follow it, operate it; and the controller that runs them.

The engine (``shipway.rollout``) decides; this module persists and carries out. Each
tick, for every running rollout: analyse if an interval has passed (one engine step,
saved with its audit events in one transaction), then converge the ports to the saved
state. Converging is level-triggered and idempotent, so a control plane killed between
saving and converging repairs the difference on its next tick after a restart.

Lineage: every audit event of a rollout names the model version, the candidate and
the stable build, so "which decision put this version in production, on what
numbers" is one query on ``rollout/<id>``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipway import audit
from shipway.container import Container
from shipway.errors import Conflict, InvalidInput, NotFound, ShipwayError
from shipway.rollout import canary, codec, counts, experiment
from shipway.rollout.canary import CanarySpec
from shipway.rollout.checks import Observation
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.ports import MetricsProvider, MetricsUnavailable, Placement, Router
from shipway.rollout.state import Action, Phase, Record, State
from shipway.services import deployments
from shipway.services.deployments import STABLE
from shipway.store.models import AuditEvent, Build, Deployment, Rollout

log = logging.getLogger(__name__)

VARIANTS = {"canary": "canary", "experiment": "challenger"}  # strategy -> candidate variant
INITIALIZING = "initializing"  # waiting for the candidate's replicas; no traffic yet
FAILED = "failed"  # the candidate never became ready
OPERATIONS = ("pause", "resume", "promote", "approve", "abort")
_EMPTY = counts.VariantCounts()
CONTROLLER = "rollout-controller"


@dataclass
class Ports:
    router: Router
    placement: Placement
    metrics: MetricsProvider


def local_ports(container: Container) -> Ports:
    from shipway.gateway.metrics_source import GatewayMetricsSource
    from shipway.services.rollout_ports import StorePlacement, StoreRouter

    return Ports(
        StoreRouter(container),
        StorePlacement(container),
        GatewayMetricsSource(container.settings.gateway_url),
    )


def parse_spec(strategy: str, data: dict[str, Any]) -> CanarySpec | ExperimentSpec:
    if strategy == "canary":
        return codec.canary_spec(data)
    if strategy == "experiment":
        return codec.experiment_spec(data)
    raise InvalidInput(f"strategy must be 'canary' or 'experiment', got {strategy!r}")


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
    variant = VARIANTS[strategy]
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
                rollout = Rollout(
                    deployment=deployment,
                    strategy=strategy,
                    variant=variant,
                    candidate_build_id=build_id,
                    stable_build_id=current.build_id,
                    spec=codec.spec_to_dict(spec),
                    phase=INITIALIZING,
                    metrics={},
                    active_key=deployment,
                    created_by=actor,
                )
                session.add(rollout)
                session.flush()
                _audit(
                    session,
                    actor,
                    rollout,
                    "rollout.created",
                    f"{strategy} of build {build_id}",
                    {"spec": rollout.spec, "signature_changes": changes}
                    if changes
                    else {"spec": rollout.spec},
                    candidate,
                )
                rollout_id = rollout.id
        except IntegrityError:  # a concurrent start won the unique active_key
            raise Conflict(f"deployment {deployment!r} has a running rollout") from None
        try:
            _converge(container, ports, rollout_id)  # the candidate placed, no traffic yet
        except ShipwayError as exc:
            _finish_unstarted(container, rollout_id, f"could not place the candidate: {exc}")
            raise
    return get(container, rollout_id)


def get(container: Container, rollout_id: str, deployment: str | None = None) -> Rollout:
    with container.db.session() as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None or (deployment is not None and rollout.deployment != deployment):
            where = f" on deployment {deployment!r}" if deployment else ""
            raise NotFound(f"rollout {rollout_id!r} does not exist{where}")
        return rollout


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
    if operation not in OPERATIONS:
        raise InvalidInput(f"operation must be one of {', '.join(OPERATIONS)}")
    now = time.time() if now is None else now
    with container.rollout_lock:
        rollout = get(container, rollout_id, deployment)
        if rollout.active_key is None:
            raise Conflict(f"rollout {rollout_id} already {rollout.phase}")
        if rollout.state is None:  # still starting: only an abort makes sense
            if operation != "abort":
                raise Conflict(f"rollout {rollout_id} is still starting; it can only be aborted")
            reason = "aborted by an operator"
            _finish_unstarted(container, rollout_id, reason, actor, Phase.ROLLED_BACK)
        else:
            state = codec.state_from_dict(rollout.state)
            spec = parse_spec(rollout.strategy, rollout.spec)
            state, actions = _operation(spec, state, operation, now)
            metrics = None
            if operation in ("approve", "resume"):  # the next interval starts now
                metrics = _restart_interval(ports, rollout)
            _save(container, rollout_id, state, actions, actor, metrics)
        try:
            _converge(container, ports, rollout_id)
        except ShipwayError as exc:  # saved: the controller's next tick carries it out
            log.warning("rollout %s: %s; retried on the next tick", rollout_id, exc)
    return get(container, rollout_id)


def _restart_interval(ports: Ports, rollout: Rollout) -> dict[str, Any] | None:
    """After a pause or a gate, the first analysis must not judge traffic from before."""
    snapshot = _snapshot(ports, rollout.deployment)
    if snapshot is None:
        return None
    metrics = dict(rollout.metrics)
    _accumulate(metrics, snapshot)
    return metrics


def _operation(
    spec: CanarySpec | ExperimentSpec, state: State, operation: str, now: float
) -> tuple[State, list[Action]]:
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


# ---- the controller ---------------------------------------------------------------


def tick(container: Container, ports: Ports, now: float | None = None) -> None:
    """One pass over every running rollout. Errors of one rollout are logged and
    retried next pass; they must not stop the others."""
    now = time.time() if now is None else now
    with container.db.session() as session:
        ids = list(session.scalars(select(Rollout.id).where(Rollout.active_key.is_not(None))))
    for rollout_id in ids:
        try:
            with container.rollout_lock:
                _step(container, ports, rollout_id, now)
                _converge(container, ports, rollout_id)
        except ShipwayError as exc:
            log.warning("rollout %s: %s", rollout_id, exc)
        except Exception:
            log.exception("rollout %s failed a pass", rollout_id)


def _step(container: Container, ports: Ports, rollout_id: str, now: float) -> None:
    rollout = get(container, rollout_id)
    spec = parse_spec(rollout.strategy, rollout.spec)
    if rollout.state is None:
        _begin(container, ports, rollout, spec, now)
        return
    state = codec.state_from_dict(rollout.state)
    if state.phase not in (Phase.SHADOWING, Phase.PROGRESSING, Phase.BAKING):
        return
    if now - state.last_analysis_at < spec.interval_s:
        return
    snapshot = _snapshot(ports, rollout.deployment)
    metrics = dict(rollout.metrics)
    interval: counts.Snapshot = {}
    if snapshot is not None:
        interval = _accumulate(metrics, snapshot)
    if isinstance(spec, CanarySpec):
        observation = None
        if snapshot is not None:
            observation = _observe(rollout, spec, interval, metrics)
            if spec.thresholds.max_drift_score is not None:
                score = _drift_score(container, rollout)
                observation = replace(observation, drift_score=score)
        state, actions = canary.advance(spec, state, observation, now)
    else:
        arms = None
        if snapshot is not None:
            total = counts.snapshot_from_dict(metrics["total"])
            empty = counts.VariantCounts()
            arms = (
                counts.arm(STABLE, total.get(STABLE, empty)),
                counts.arm(rollout.variant, total.get(rollout.variant, empty)),
            )
        state, actions = experiment.advance_experiment(spec, state, arms, now)
    _save(container, rollout_id, state, actions, metrics=metrics)


def _accumulate(metrics: dict[str, Any], snapshot: counts.Snapshot) -> counts.Snapshot:
    """The increase since the last reading, added to the rollout's running totals.

    Totals grow interval by interval, each increase taken against the reading just
    before it, so a gateway restart (its counters back at zero) costs one interval's
    precision, not the whole experiment's arithmetic. The first reading only sets the
    baseline."""
    if "last" not in metrics:
        metrics["last"] = counts.snapshot_to_dict(snapshot)
        metrics["total"] = {}
        return {}
    interval = counts.increase(snapshot, counts.snapshot_from_dict(metrics["last"]))
    total = counts.snapshot_from_dict(metrics.get("total"))
    metrics["total"] = counts.snapshot_to_dict(counts.add(total, interval))
    metrics["last"] = counts.snapshot_to_dict(snapshot)
    return interval


def _begin(
    container: Container,
    ports: Ports,
    rollout: Rollout,
    spec: CanarySpec | ExperimentSpec,
    now: float,
) -> None:
    """The first step once the candidate's replicas are ready; counters start here."""
    if ports.placement.ready(rollout.deployment, rollout.variant, rollout.candidate_build_id):
        if isinstance(spec, CanarySpec):
            state, actions = canary.start(spec, now)
        else:
            state, actions = experiment.start_experiment(spec, now)
        snapshot = _snapshot(ports, rollout.deployment)
        metrics: dict[str, Any] = {}
        if snapshot is not None:
            _accumulate(metrics, snapshot)
            # stable's record before the rollout: with its totals during the rollout,
            # the 4xx yardstick when stable serves too little in an interval (kept
            # here, so a gateway restart that zeroes its counters does not lose it)
            metrics["before"] = counts.snapshot_to_dict({STABLE: snapshot.get(STABLE, _EMPTY)})
        _save(container, rollout.id, state, actions, metrics=metrics)
    elif now - _epoch(rollout.created_at) > container.settings.rollout_start_timeout:
        waited = container.settings.rollout_start_timeout
        reason = f"the candidate's replicas were not ready after {waited:.0f}s"
        _finish_unstarted(container, rollout.id, reason)


def _epoch(at: datetime) -> float:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _drift_score(container: Container, rollout: Rollout) -> float | None:
    from shipway.services import drift

    try:
        return drift.score_between(container, rollout.deployment, STABLE, rollout.variant)
    except ShipwayError as exc:  # the gateway's samples unreachable: inconclusive
        log.warning("drift score of rollout %s: %s", rollout.id, exc)
        return None
    except Exception:  # whatever the samples hold, the analysis goes on: inconclusive
        log.exception("drift score of rollout %s failed", rollout.id)
        return None


def _snapshot(ports: Ports, deployment: str) -> counts.Snapshot | None:
    try:
        return ports.metrics.snapshot(deployment)
    except MetricsUnavailable as exc:
        log.warning("metrics unavailable: %s", exc)
        return None


def _observe(
    rollout: Rollout, spec: CanarySpec, interval: counts.Snapshot, metrics: dict[str, Any]
) -> Observation:
    """The interval's numbers, candidate and stable side by side. Latency is compared
    only with stable's traffic of the same interval: a yardstick from another interval
    was measured under another load (at 100 % the candidate's replicas carry what both
    variants carried before), so without concurrent stable traffic the latency checks
    do not apply."""
    empty = counts.VariantCounts()
    confidence = spec.thresholds.confidence
    candidate = counts.stats(interval.get(rollout.variant, empty), confidence)
    stable = counts.stats(interval.get(STABLE, empty), confidence)
    total = counts.snapshot_from_dict(metrics.get("total"))
    shadow = total.get(rollout.variant, empty).shadow_counts()
    # stable's record before and during the rollout: the 4xx yardstick for intervals
    # in which stable served too little alongside
    before = counts.snapshot_from_dict(metrics.get("before")).get(STABLE, empty)
    reference = counts.stats(before.plus(total.get(STABLE, empty)), confidence)
    return Observation(candidate, stable, shadow=shadow, stable_reference=reference)


def _save(
    container: Container,
    rollout_id: str,
    state: State,
    actions: list[Action],
    actor: str = CONTROLLER,
    metrics: dict[str, Any] | None = None,
) -> None:
    """The new state and its audit events, in one transaction."""
    with container.db.session() as session:
        rollout = session.get(Rollout, rollout_id)
        assert rollout is not None
        rollout.state = codec.state_to_dict(state)
        rollout.phase = state.phase.value
        if metrics is not None:
            rollout.metrics = metrics
        for action in actions:
            if isinstance(action, Record):
                extra = {"weight": state.weight, "step": state.step, "numbers": action.details}
                _audit(session, actor, rollout, action.event, action.reason, extra)


def _finish_unstarted(
    container: Container,
    rollout_id: str,
    reason: str,
    actor: str = CONTROLLER,
    phase: Phase | None = None,
) -> None:
    with container.db.session() as session:
        rollout = session.get(Rollout, rollout_id)
        assert rollout is not None
        rollout.phase = str(phase) if phase else FAILED
        now = time.time()  # a state only for its reason: it never took traffic
        ended = phase or Phase.FAILED
        rollout.state = codec.state_to_dict(State(ended, 0, 0, now, now, reason=reason))
        event = "rollout.rolled-back" if phase else "rollout.failed"
        _audit(session, actor, rollout, event, reason, {})


def _audit(
    session: Any,
    actor: str,
    rollout: Rollout,
    event: str,
    reason: str,
    details: dict[str, Any],
    candidate: Build | None = None,
) -> None:
    build = candidate or session.get(Build, rollout.candidate_build_id)
    audit.record(
        session,
        actor,
        event,
        f"rollout/{rollout.id}",
        reason=reason,
        deployment=rollout.deployment,
        model=build.model_version.name,
        version=build.model_version.version,
        candidate_build=rollout.candidate_build_id,
        stable_build=rollout.stable_build_id,
        **details,
    )


# ---- converging the ports to the saved state -----------------------------------------


def _converge(container: Container, ports: Ports, rollout_id: str) -> None:
    rollout = get(container, rollout_id)
    if rollout.active_key is None:
        return  # finished: whatever the deployment does now is not this rollout's
    weight = int((rollout.state or {}).get("weight", 0))
    target = f"{rollout.phase}:{weight}"
    if rollout.converged == target:
        return
    if not _deployment_exists(container, rollout.deployment):
        _abandon(container, rollout_id, "the deployment was deleted")
        return
    name, variant, candidate = rollout.deployment, rollout.variant, rollout.candidate
    finished = True
    if rollout.phase in (Phase.ROLLED_BACK, FAILED):  # stable as before, the candidate gone
        ports.placement.remove(name, variant)
        _alias(container, rollout.stable, "production")
    else:
        # live weights and a mirror exclude each other: clear one before setting the other
        share = float((rollout.spec.get("shadow") or {}).get("share", 1.0))
        share = share if rollout.phase == Phase.SHADOWING else 0.0
        ports.placement.place(name, variant, candidate.id)
        if not share:
            ports.router.set_shadow(name, variant, 0.0)
        if rollout.strategy == "experiment" and rollout.phase != Phase.SUCCEEDED:
            ports.router.set_split(name, sticky=True)
        ports.router.set_weights(name, {STABLE: 100 - weight, variant: weight})
        if share:
            ports.router.set_shadow(name, variant, share)
        if rollout.phase == Phase.BAKING:
            _alias(container, candidate, "production")
        elif rollout.converged is None:
            _alias(container, candidate, "candidate")
        finished = rollout.phase == Phase.SUCCEEDED
        if finished:
            ports.placement.make_stable(name, candidate.id)
            if not ports.placement.ready(name, STABLE, candidate.id):
                return  # the new stable replicas are starting; the candidate serves meanwhile
            ports.placement.remove(name, variant)
            _alias(container, candidate, "production")
    if finished:
        if rollout.strategy == "experiment":
            ports.router.set_split(name, sticky=False)
        container.registry.delete_alias(candidate.model_version.name, "candidate")
    with container.db.session() as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        row.converged = target
        if finished:
            row.active_key, row.finished_at = None, datetime.now(UTC)
            _audit(session, CONTROLLER, row, "rollout.finished", f"{row.phase}", {"weight": weight})


def _deployment_exists(container: Container, name: str) -> bool:
    with container.db.session() as session:
        return session.scalar(select(Deployment.id).where(Deployment.name == name)) is not None


def _abandon(container: Container, rollout_id: str, reason: str) -> None:
    with container.db.session() as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        row.phase, row.active_key, row.finished_at = FAILED, None, datetime.now(UTC)
        _audit(session, CONTROLLER, row, "rollout.failed", reason, {})


def _alias(container: Container, build: Build, alias: str) -> None:
    version = build.model_version
    container.registry.set_alias(version.name, alias, version.version)
