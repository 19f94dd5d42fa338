"""The ModelDeployment's ``.status``, derived from what the cluster reports (pure).

Which builds serve (``stableBuild``, ``candidateBuild``) is decided once, here, from the
spec and the previous status, so that a restarted operator resumes from status: a build
recorded as stable stays stable until a rollout promotes another.

The rollout seam: a build change in the spec, while a build is stable, makes that build
the candidate, records ``status.rollout`` as the shared rollout controller's own
``RolloutStatus`` not begun yet (``shipway.rollout.controller.new_status``, written in
Kubernetes conventions by ``rollout_status.to_resource``) and sets ``Progressing=True``
(reason ``RolloutStarted``) with the candidate at 0 % of traffic. This module only ever
writes that first status; the controller (run by the operator's rollout loop) owns
the object from then on (steps, weights, analyses, promotion), stored opaque by the CRD
and read back with ``rollout_status.from_resource``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipway.rollout.controller import new_status
from shipway_operator.capacity import variant_range
from shipway_operator.manifests import selector_string
from shipway_operator.rollout_status import candidate_build_id, to_resource
from shipway_operator.spec import Build, Spec, Variant

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC, seconds precision (metav1.Time)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Plan:
    """Which build each variant serves, the live traffic weights, the shares replicas
    are sized for (``capacity``), and the rollout record."""

    stable: Build
    candidate: Build | None
    weights: dict[str, int]
    rollout: dict[str, Any] | None
    # True when this plan starts the rollout record (a new candidate): only then does the
    # operator write ``rollout``; otherwise it is the rollout controller's, and a status
    # write leaves it alone (a finished record stays, for `shipway rollouts status`)
    writes_rollout: bool = True
    # True when the operator decides the weights (no rollout running, or a new one); in
    # between they are the rollout controller's (its Router port writes them)
    writes_weights: bool = True
    capacity: dict[str, int] | None = None  # None: as ``weights``
    baseline: int | None = None  # the stable's replicas when the running rollout began
    rejected: str | None = None  # why spec.build does not serve: its rollout's verdict

    def shares(self) -> dict[str, int]:
        return dict(self.capacity if self.capacity is not None else self.weights)


FULL = {"stable": 100, "candidate": 0}
ENDED = ("RolledBack", "Failed")  # record phases (rollout_status) that took the candidate out


def _versioned(spec: Spec) -> Build:
    """The spec's build, with the spec's model version when the build does not say its
    own (resources written before builds carried it)."""
    build = spec.build
    version = spec.model.version
    if build.model_version is None and version.isascii() and version.isdigit() and int(version):
        build = build.model_copy(update={"model_version": int(version)})
    return build


def plan(
    spec: Spec, status: dict[str, Any], now: datetime, stable_replicas: int | None = None
) -> Plan:
    """Stable is the build status records (the spec's on first sight); a different build
    in the spec is the candidate, until its rollout ends:

    - a new candidate starts at 0 % with a fresh rollout record (``baseline``: the
      stable's replicas now, ``stable_replicas``);
    - while its rollout runs, weights and record are the rollout controller's;
    - once the rollout succeeded, stable serves the candidate's build (sized for all of
      the traffic) while the candidate still serves, until the controller finishes the
      record; then the candidate goes;
    - a rollout that rolled back or failed takes the candidate out: stable serves as
      before, the spec's build is ``rejected`` until the spec names another one."""
    recorded = status.get("stableBuild") or {}
    wanted = _versioned(spec)
    stable = Build.model_validate(recorded) if recorded.get("id") else wanted
    record = status.get("rollout") or None
    live = dict(status.get("weights") or FULL)
    if record is not None and candidate_build_id(record) == wanted.id:
        phase, finished = record.get("phase"), bool(record.get("finished"))
        if phase in ENDED:
            reason = (record.get("state") or {}).get("reason") or phase
            return Plan(stable, None, dict(FULL), record, False, rejected=f"{phase}: {reason}")
        if phase == "Succeeded":
            if finished:
                return Plan(wanted, None, dict(FULL), record, False)
            capacity = {"stable": 100, "candidate": live.get("candidate", 100)}
            return Plan(wanted, wanted, live, record, False, False, capacity)
        if stable.id != wanted.id:
            baseline = status.get("baselineReplicas")
            # the candidate is sized for the weight it is about to take (the Router
            # raises ``status.capacity`` first, and moves the traffic once it is there)
            ahead = int((status.get("capacity") or {}).get("candidate") or 0)
            capacity = {
                "stable": live.get("stable", 100),
                "candidate": max(live.get("candidate", 0), ahead),
            }
            return Plan(stable, wanted, live, record, False, False, capacity, baseline)
    if stable.id == wanted.id:  # the spec may refresh where the build is
        kept = stable.model_version if wanted.model_version is None else wanted.model_version
        refreshed = wanted.model_copy(update={"model_version": kept})
        return Plan(refreshed, None, dict(FULL), record, False)
    fresh = new_status(spec.rollout.strategy, wanted.id, stable.id, now.timestamp())
    return Plan(stable, wanted, dict(FULL), to_resource(fresh), baseline=stable_replicas)


@dataclass(frozen=True)
class Availability:
    """A Deployment's progress toward ``desired`` available, updated replicas."""

    ready: bool
    desired: int
    available: int
    replicas: int
    failure: str | None  # reason of a Deployment condition that will not heal by waiting
    message: str


def availability(deployment: dict[str, Any] | None, desired_floor: int) -> Availability:
    """Ready once the Deployment has seen its latest spec, the desired count of its
    replicas are updated and available, and no replica of an older template is left.
    ``desired_floor``: the count the spec asks for (the HPA may ask more; that count
    then is the desired one)."""
    if deployment is None:
        return Availability(False, desired_floor, 0, 0, None, "the Deployment does not exist")
    meta, spec = deployment.get("metadata", {}), deployment.get("spec", {})
    status = deployment.get("status") or {}
    desired = max(desired_floor, spec.get("replicas") or 0)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    available = status.get("availableReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    failure = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            failure = condition.get("reason") or "ReplicaFailure"
        if condition.get("reason") == "ProgressDeadlineExceeded":
            failure = "ProgressDeadlineExceeded"
    total = status.get("replicas") or 0
    # as `kubectl rollout status`: all updated, no old replica left, all available
    ready = observed and updated >= desired and total <= updated and available >= desired
    message = f"{available}/{desired} replicas available, {updated} updated"
    return Availability(ready, desired, available, total, failure, message)


# waiting reasons that are a pod's normal way up, not trouble
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def pod_trouble(pods: list[dict[str, Any]]) -> str | None:
    """Why the first troubled pod of a variant is not serving, from the pods' own status
    (as ``kubectl describe pod`` shows it), or None: the scheduler's message of an
    unscheduled pod (PodScheduled=False, e.g. "0/1 nodes are available: ... didn't
    match Pod's node affinity/selector"), a container (or init container) waiting for
    a reason other than starting (ErrImagePull, CrashLoopBackOff...), an init container
    that exited non-zero."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        state = pod.get("status") or {}
        for condition in state.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                why = condition.get("message") or condition.get("reason") or "not scheduled"
                return f"pod {name} not scheduled: {why}"
        for kind, key in (
            ("init container", "initContainerStatuses"),
            ("container", "containerStatuses"),
        ):
            for container in state.get(key) or []:
                current = container.get("state") or {}
                waiting = current.get("waiting") or {}
                if waiting.get("reason") and waiting["reason"] not in _STARTING:
                    detail = f": {waiting['message']}" if waiting.get("message") else ""
                    # a container that keeps failing: why it ended last time (its
                    # termination message, e.g. the fetch's "SHA-256 ... expected ...")
                    ended_last = (container.get("lastState") or {}).get("terminated") or {}
                    if ended_last.get("message"):
                        detail = f": {ended_last['message'].strip()}"
                    return f"pod {name} {kind} {container.get('name')} {waiting['reason']}{detail}"
                ended = current.get("terminated") or {}
                if kind == "init container" and ended and ended.get("exitCode", 0) != 0:
                    return (
                        f"pod {name} init container {container.get('name')} failed "
                        f"({ended.get('reason') or 'Error'}, exit code {ended.get('exitCode')})"
                    )
    return None


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The list with condition ``kind`` replaced; its lastTransitionTime moves only when
    its status changes (metav1.Condition semantics)."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == kind), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else timestamp(now)
    new = {
        "type": kind,
        "status": value,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }
    return [c for c in conditions if c.get("type") != kind] + [new]


def derive(
    *,
    name: str,
    generation: int,
    spec: Spec,
    plan: Plan,
    stable: dict[str, Any] | None,
    candidate: dict[str, Any] | None,
    previous: dict[str, Any],
    now: datetime,
    stable_pods: list[dict[str, Any]] | None = None,
    candidate_pods: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The status (everything but ``lastAnalysis``, which the rollout controller
    writes) from the plan and the live stable and candidate Deployments; ``weights`` and
    ``rollout`` only when the plan starts or ends a rollout (``Plan.writes_rollout``).
    ``plan`` must come from ``previous`` (the status this write replaces), never from
    an earlier read: the rollout controller may have moved on since. ``stable_pods``,
    ``candidate_pods``: each variant's pods, whose trouble (``pod_trouble``) a variant
    that is not available names in its condition's message."""
    floor = variant_range(spec, True, plan.shares().get("stable", 100), plan.baseline)[0]
    serving = availability(stable, floor)
    # Ready means stable serves exactly the spec, so a rolling update of stable (a new
    # template, a promotion) is Ready=False until it completes; with every replica it
    # wants available meanwhile (maxUnavailable 0) it says so: RollingUpdate, not
    # ReplicasUnavailable (Progressing and Degraded say the rest)
    rolling = not serving.ready and serving.failure is None
    rolling = rolling and serving.available >= serving.desired
    stable_trouble = None if serving.ready else pod_trouble(stable_pods or [])
    conditions = list(previous.get("conditions") or [])
    if serving.ready:
        ready_reason = "ReplicasAvailable"
    else:
        ready_reason = "RollingUpdate" if rolling else "ReplicasUnavailable"
    conditions = set_condition(
        conditions,
        READY,
        serving.ready,
        ready_reason,
        f"stable build {plan.stable.id}: {serving.message}"
        + (f"; {stable_trouble}" if stable_trouble else ""),
        generation,
        now,
    )
    if plan.rejected is not None:
        conditions = set_condition(
            conditions,
            PROGRESSING,
            False,
            "RolloutEnded",
            f"build {spec.build.id} does not serve: its rollout {plan.rejected}; stable build "
            f"{plan.stable.id} serves. Put right what the reason names, then change "
            "spec.build to roll out a build (back to the stable one and forth again to "
            "retry this one).",
            generation,
            now,
        )
    elif plan.candidate is not None:
        trial = availability(candidate, 1)
        trouble = None if trial.ready else pod_trouble(candidate_pods or [])
        conditions = set_condition(
            conditions,
            PROGRESSING,
            True,
            "RolloutStarted",
            f"candidate build {plan.candidate.id} at {plan.weights.get('candidate', 0)} % "
            f"({spec.rollout.strategy}): {trial.message}" + (f"; {trouble}" if trouble else ""),
            generation,
            now,
        )
    else:
        conditions = set_condition(
            conditions, PROGRESSING, False, "NoRollout", "no rollout running", generation, now
        )
    # Degraded: what waiting will not heal (the Deployment's own verdict); fewer ready
    # replicas than desired is Ready=False, as a scale-up and a lost pod look alike
    if serving.failure:
        degraded, reason, message = True, serving.failure, f"stable: {serving.message}"
        if stable_trouble:
            message += f"; {stable_trouble}"
    elif serving.ready:
        degraded, reason, message = False, "AsExpected", "serving as specified"
    elif rolling:
        degraded, reason = False, "AsExpected"
        message = f"no lasting failure; stable rolling to its new template: {serving.message}"
    else:  # not (yet) available, without a lasting failure: say what the pods say
        degraded, reason = False, "AsExpected"
        message = f"no lasting failure; stable not available: {stable_trouble or serving.message}"
    conditions = set_condition(conditions, DEGRADED, degraded, reason, message, generation, now)
    if plan.rejected is not None and not degraded:  # as an aborted Argo Rollout
        degraded = True
        reason = "RolloutFailed" if plan.rejected.startswith("Failed") else "RolloutRolledBack"
        message = f"spec.build {spec.build.id} was not promoted ({plan.rejected})"
        conditions = set_condition(conditions, DEGRADED, True, reason, message, generation, now)
    # a failing stable outranks a running rollout (as Argo Rollouts): it needs a human
    if degraded:
        phase = "Degraded"
    elif plan.candidate is not None:
        phase = "Progressing"
    elif serving.ready:
        phase = "Ready"
    else:
        phase = "Pending"
    derived: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "conditions": conditions,
        "stableBuild": plan.stable.as_status(),
        "candidateBuild": plan.candidate.as_status() if plan.candidate else None,
        "replicas": serving.replicas,
        "readyReplicas": serving.available,
        "selector": selector_string(name, Variant.STABLE),
    }
    # else absent: a merge patch leaves the controller's as they are
    if plan.writes_weights:
        derived["weights"] = plan.weights
        if plan.candidate is None:
            derived["routing"] = None  # no candidate: nothing split, mirrored or sticky
            derived["baselineReplicas"] = None
            derived["capacity"] = None
    if plan.writes_rollout:  # a new record: nothing of the previous rollout's split stays
        derived["rollout"] = plan.rollout
        derived["baselineReplicas"] = plan.baseline
        derived["routing"] = None
        derived["capacity"] = None
    return derived


# Degraded reasons of a generation the operator could not apply: they stand until the spec
# changes (a refresh from the Deployments must not report "serving as specified")
INVALID_SPEC, OBJECT_REFUSED, NAME_CONFLICT = "InvalidSpec", "ObjectRefused", "NameConflict"
ROUTING_UNSUPPORTED = "RoutingUnsupported"  # the Gateway API cannot express the spec
NOT_APPLIED = frozenset({INVALID_SPEC, OBJECT_REFUSED, NAME_CONFLICT, ROUTING_UNSUPPORTED})
MESSAGE_LIMIT = 1024  # characters of an API server's message kept in a condition


def invalid(
    previous: dict[str, Any], generation: int, message: str, now: datetime
) -> dict[str, Any]:
    """Status of a resource whose spec cannot be built: Failed, Degraded=InvalidSpec;
    what already runs keeps running (nothing is applied or removed)."""
    return not_applied(previous, generation, INVALID_SPEC, message, now, phase="Failed")


def not_applied(
    previous: dict[str, Any],
    generation: int,
    reason: str,
    message: str,
    now: datetime,
    phase: str | None = None,
) -> dict[str, Any]:
    """Status of a generation the operator did not apply (``reason`` one of
    ``NOT_APPLIED``): Degraded=True with ``message`` (trimmed to ``MESSAGE_LIMIT``);
    phase ``Degraded`` while replicas of an earlier generation still serve, else
    ``Failed`` (``phase`` forces one). Nothing was applied or removed."""
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    conditions = set_condition(
        list(previous.get("conditions") or []), DEGRADED, True, reason, message, generation, now
    )
    if phase is None:
        phase = "Degraded" if previous.get("readyReplicas") else "Failed"
    return {"phase": phase, "observedGeneration": generation, "conditions": conditions}


def blocked(previous: dict[str, Any], generation: int) -> bool:
    """True when ``previous`` says ``generation`` could not be applied (Degraded with a
    ``NOT_APPLIED`` reason for it): only a new reconcile may change that."""
    for condition in previous.get("conditions") or []:
        if (
            condition.get("type") == DEGRADED
            and condition.get("status") == "True"
            and condition.get("reason") in NOT_APPLIED
            and condition.get("observedGeneration") == generation
        ):
            return True
    return False
