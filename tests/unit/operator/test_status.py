"""Which builds serve (the rollout seam) and the status derived from live Deployments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipway.rollout.controller import new_status
from shipway_operator import status
from shipway_operator.rollout_status import from_resource, to_resource
from shipway_operator.spec import parse_spec

from .conftest import base_spec

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
B2 = {"id": "b-2", "modelRepository": "https://files.test/b-2.tar.gz"}


def _deployment(
    replicas: int, available: int, *, generation: int = 1, observed: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            **extra,
        },
    }


def _derive(spec: dict, previous: dict, stable: dict | None, candidate: dict | None = None):
    parsed = parse_spec(spec)
    plan = status.plan(parsed, previous, T0)
    return status.derive(
        name="minilm",
        generation=3,
        spec=parsed,
        plan=plan,
        stable=stable,
        candidate=candidate,
        previous=previous,
        now=T0,
    )


def _condition(result: dict, kind: str) -> dict:
    return next(c for c in result["conditions"] if c["type"] == kind)


def test_first_sight_makes_the_specs_build_stable() -> None:
    plan = status.plan(parse_spec(base_spec()), {}, T0)
    assert plan.stable.id == "b-1" and plan.candidate is None
    assert plan.weights == {"stable": 100, "candidate": 0} and plan.rollout is None


def test_a_new_build_becomes_the_candidate_with_a_rollout_record() -> None:
    previous = {
        "stableBuild": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"}
    }
    plan = status.plan(parse_spec(base_spec(build=B2)), previous, T0)
    assert (plan.stable.id, plan.candidate.id if plan.candidate else None) == ("b-1", "b-2")
    assert plan.stable.model_repository == "https://files.test/minilm/b-1.tar.gz"
    assert plan.weights == {"stable": 100, "candidate": 0}
    # the shared controller's own status, not begun: it places the candidate first
    assert plan.rollout is not None
    begun = from_resource(plan.rollout)  # in the resource's conventions
    assert (begun.strategy, begun.candidate_build, begun.stable_build) == ("canary", "b-2", "b-1")
    assert begun.state is None and begun.created_at == T0.timestamp()


def test_a_recorded_rollout_resumes_as_it_was() -> None:
    record = to_resource(new_status("canary", "b-2", "b-1", (T0 - timedelta(hours=1)).timestamp()))
    record["converged"] = "Progressing:25"  # the controller's progress, kept as it is
    previous = {
        "stableBuild": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"},
        "candidateBuild": B2,
        "weights": {"stable": 75, "candidate": 25},
        "rollout": record,
    }
    plan = status.plan(parse_spec(base_spec(build=B2)), previous, T0 + timedelta(hours=1))
    assert plan.rollout == record and plan.weights == {"stable": 75, "candidate": 25}


def test_a_running_rollouts_weights_and_record_are_left_to_the_controller() -> None:
    ready = _derive(base_spec(), {}, _deployment(2, 2))
    assert ready["weights"] == {"stable": 100, "candidate": 0} and "rollout" not in ready
    started = _derive(base_spec(build=B2), ready, _deployment(2, 2), _deployment(1, 1))
    assert started["weights"] == {"stable": 100, "candidate": 0}
    assert started["rollout"]["candidateBuildID"] == "b-2"  # a new record: written
    moved = started | {"weights": {"stable": 75, "candidate": 25}}
    again = _derive(base_spec(build=B2), moved, _deployment(2, 2), _deployment(1, 1))
    # the record exists: a status write leaves weights and rollout out of its patch
    assert "weights" not in again and "rollout" not in again
    # with the registered version the spec names, kept with the build from now on
    assert again["candidateBuild"] == B2 | {"modelVersion": 3}
    ended = _derive(base_spec(), moved, _deployment(2, 2))  # the stable build back
    # weights back to stable; the record stays, for the rollout loop to end it
    assert ended["weights"] == {"stable": 100, "candidate": 0} and "rollout" not in ended
    assert ended["routing"] is None and ended["candidateBuild"] is None


def test_another_build_mid_rollout_restarts_it_for_that_build() -> None:
    previous = {
        "stableBuild": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"},
        "candidateBuild": B2,
        "weights": {"stable": 75, "candidate": 25},
        "rollout": to_resource(new_status("canary", "b-2", "b-1", T0.timestamp() - 3600)),
    }
    b3 = {"id": "b-3", "modelRepository": "https://files.test/b-3.tar.gz"}
    plan = status.plan(parse_spec(base_spec(build=b3)), previous, T0)
    assert plan.candidate is not None and plan.candidate.id == "b-3"
    assert plan.weights == {"stable": 100, "candidate": 0}
    assert plan.rollout is not None and plan.rollout["candidateBuildID"] == "b-3"
    assert plan.rollout["createdAt"] == "2026-11-30T08:00:00Z"


def test_the_stable_build_back_in_the_spec_ends_the_candidate() -> None:
    previous = {
        "stableBuild": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"},
        "candidateBuild": B2,
        "rollout": to_resource(new_status("canary", "b-2", "b-1", T0.timestamp())),
    }
    plan = status.plan(parse_spec(base_spec()), previous, T0)
    assert plan.candidate is None and plan.weights == {"stable": 100, "candidate": 0}
    # the unfinished record is left for the rollout loop, which ends it (abandoned)
    assert plan.rollout == previous["rollout"] and not plan.writes_rollout


def test_ready_needs_every_desired_replica_available_on_the_latest_generation() -> None:
    assert not status.availability(None, 2).ready
    assert not status.availability(_deployment(2, 1), 2).ready
    assert not status.availability(_deployment(2, 2, generation=2, observed=1), 2).ready
    assert not status.availability(_deployment(1, 1), 2).ready  # the spec asks more
    assert status.availability(_deployment(2, 2), 2).ready
    rolling = _deployment(2, 3)  # a rolling update: an old replica is still there
    rolling["status"]["replicas"] = 3
    assert not status.availability(rolling, 2).ready
    scaled = status.availability(_deployment(5, 3), 2)  # the HPA asks more than the floor
    assert (scaled.ready, scaled.desired) == (False, 5)


def test_status_pending_then_ready() -> None:
    pending = _derive(base_spec(), {}, _deployment(2, 1))
    assert pending["phase"] == "Pending"
    assert _condition(pending, "Ready")["status"] == "False"
    assert _condition(pending, "Ready")["message"] == (
        "stable build b-1: 1/2 replicas available, 2 updated"
    )
    ready = _derive(base_spec(), pending, _deployment(2, 2))
    assert ready["phase"] == "Ready" and ready["observedGeneration"] == 3
    assert (ready["replicas"], ready["readyReplicas"]) == (2, 2)
    assert ready["selector"] == "shipway.io/deployment=minilm,shipway.io/variant=stable"
    assert ready["stableBuild"] == {
        "id": "b-1",
        "modelRepository": "https://files.test/minilm/b-1.tar.gz",
        "modelVersion": 3,  # spec.model.version, recorded with the build
    }
    assert _condition(ready, "Progressing")["status"] == "False"
    assert _condition(ready, "Degraded")["status"] == "False"


def test_build_change_is_progressing_with_the_candidate_at_zero() -> None:
    ready = _derive(base_spec(), {}, _deployment(2, 2))
    result = _derive(base_spec(build=B2), ready, _deployment(2, 2), _deployment(1, 0))
    assert result["phase"] == "Progressing"
    progressing = _condition(result, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RolloutStarted")
    assert result["candidateBuild"] == B2 | {"modelVersion": 3}
    assert result["weights"] == {"stable": 100, "candidate": 0}
    assert result["rollout"]["candidateBuildID"] == "b-2"
    assert _condition(result, "Ready")["status"] == "True"  # stable still serves


def test_a_failed_deployment_is_degraded() -> None:
    failed = _deployment(
        2,
        0,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    result = _derive(base_spec(), {}, failed)
    assert result["phase"] == "Degraded"
    assert _condition(result, "Degraded")["reason"] == "ProgressDeadlineExceeded"


def test_a_failed_stable_is_degraded_even_while_a_rollout_runs() -> None:
    failed = _deployment(2, 0, conditions=[{"type": "ReplicaFailure", "status": "True"}])
    ready = _derive(base_spec(), {}, _deployment(2, 2))
    result = _derive(base_spec(build=B2), ready, failed, _deployment(1, 1))
    assert result["phase"] == "Degraded"
    assert _condition(result, "Progressing")["status"] == "True"  # the rollout still runs
    assert _condition(result, "Degraded")["reason"] == "ReplicaFailure"


def test_transition_time_moves_only_when_the_status_does() -> None:
    later = T0 + timedelta(minutes=5)
    first = status.set_condition([], "Ready", False, "ReplicasUnavailable", "0/1", 1, T0)
    same = status.set_condition(first, "Ready", False, "ReplicasUnavailable", "0/1", 2, later)
    flipped = status.set_condition(same, "Ready", True, "ReplicasAvailable", "1/1", 2, later)
    assert same[0]["lastTransitionTime"] == "2026-11-30T08:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-11-30T08:05:00Z"
    assert len(flipped) == 1


def test_invalid_spec_is_failed_and_says_why() -> None:
    result = status.invalid({}, 4, "spec.build: Field required", T0)
    assert result["phase"] == "Failed" and result["observedGeneration"] == 4
    degraded = _condition(result, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert degraded["message"] == "spec.build: Field required"


def test_a_refused_generation_is_failed_when_nothing_serves() -> None:
    result = status.not_applied({}, 1, status.OBJECT_REFUSED, "x" * 5000, T0)
    assert result["phase"] == "Failed" and result["observedGeneration"] == 1
    degraded = _condition(result, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ObjectRefused")
    assert len(degraded["message"]) == status.MESSAGE_LIMIT
    assert degraded["message"].endswith("...")


def test_a_refused_generation_is_degraded_while_an_earlier_one_serves() -> None:
    previous = {"phase": "Ready", "observedGeneration": 1, "readyReplicas": 2}
    result = status.not_applied(previous, 2, status.NAME_CONFLICT, "Service x exists", T0)
    assert result["phase"] == "Degraded" and result["observedGeneration"] == 2
    assert status.blocked(result, 2)
    assert not status.blocked(result, 3)  # a newer generation is reconciled afresh


def _pod(**status_: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p-1"}, "status": status_}


def test_pod_trouble_names_the_schedulers_message() -> None:
    unscheduled = _pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: "
                "1 node(s) didn't match Pod's node affinity/selector.",
            }
        ]
    )
    trouble = status.pod_trouble([_pod(), unscheduled])
    assert trouble == (
        "pod p-1 not scheduled: 0/1 nodes are available: "
        "1 node(s) didn't match Pod's node affinity/selector."
    )


def test_pod_trouble_names_a_waiting_container_and_a_failed_init_container() -> None:
    pulling = _pod(
        containerStatuses=[{"name": "triton", "state": {"waiting": {"reason": "ErrImagePull"}}}]
    )
    assert status.pod_trouble([pulling]) == "pod p-1 container triton ErrImagePull"
    fetch = _pod(
        initContainerStatuses=[
            {"name": "fetch", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        ]
    )
    assert status.pod_trouble([fetch]) == "pod p-1 init container fetch failed (Error, exit code 1)"
    starting = _pod(
        containerStatuses=[{"name": "t", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    )
    assert status.pod_trouble([starting]) is None


def test_a_stable_that_is_not_available_says_why_in_ready_and_degraded() -> None:
    spec = parse_spec(base_spec())
    decided = status.plan(spec, {}, T0)
    unscheduled = _pod(
        conditions=[{"type": "PodScheduled", "status": "False", "message": "0/1 nodes"}]
    )
    result = status.derive(
        name="minilm",
        generation=1,
        spec=spec,
        plan=decided,
        stable=_deployment(2, 0),
        candidate=None,
        previous={},
        now=T0,
        stable_pods=[unscheduled],
    )
    assert result["phase"] == "Pending"
    assert _condition(result, "Ready")["message"].endswith("; pod p-1 not scheduled: 0/1 nodes")
    degraded = _condition(result, "Degraded")
    assert degraded["status"] == "False"
    assert "pod p-1 not scheduled: 0/1 nodes" in degraded["message"]


def _running(phase: str, finished: bool = False, **status: object) -> dict:
    record = to_resource(new_status("canary", "b-2", "b-1", T0.timestamp()))
    record["phase"], record["finished"] = phase, finished
    record["state"] = {"phase": phase, "reason": "2 failed analyses in a row (error_rate)"}
    return {
        "stableBuild": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"},
        "candidateBuild": B2,
        "weights": {"stable": 50, "candidate": 50},
        "rollout": record,
        **status,
    }


def test_a_running_rollout_sizes_the_candidate_for_the_share_it_is_about_to_take() -> None:
    previous = _running("Progressing", capacity={"candidate": 100}, baselineReplicas=4)
    plan = status.plan(parse_spec(base_spec(build=B2)), previous, T0)
    assert plan.weights == {"stable": 50, "candidate": 50}  # traffic: as the router set it
    assert plan.shares() == {"stable": 50, "candidate": 100}  # replicas: ahead of it
    assert plan.baseline == 4 and not plan.writes_weights and not plan.writes_rollout


def test_a_succeeded_rollout_moves_stable_first_then_drops_the_candidate() -> None:
    serving = status.plan(parse_spec(base_spec(build=B2)), _running("Succeeded"), T0)
    # stable rolls to the candidate's build, sized for all of the traffic, while the
    # candidate still serves; the router's weights stay the controller's
    assert serving.stable.id == "b-2" and serving.candidate is not None
    assert serving.shares()["stable"] == 100 and not serving.writes_weights
    done = status.plan(parse_spec(base_spec(build=B2)), _running("Succeeded", True), T0)
    assert done.stable.id == "b-2" and done.candidate is None
    assert done.weights == {"stable": 100, "candidate": 0} and done.writes_weights
    assert not done.writes_rollout  # the finished record stays for `rollouts status`


@pytest.mark.parametrize("phase", ["RolledBack", "Failed"])
def test_an_ended_rollout_takes_the_candidate_out_and_rejects_its_build(phase: str) -> None:
    previous = _running(phase, capacity={"candidate": 50})
    plan = status.plan(parse_spec(base_spec(build=B2)), previous, T0)
    assert plan.stable.id == "b-1" and plan.candidate is None
    assert plan.weights == {"stable": 100, "candidate": 0} and plan.writes_weights
    assert plan.rejected is not None and "error_rate" in plan.rejected
    derived = _derive(base_spec(build=B2), previous, _deployment(2, 2))
    degraded = _condition(derived, "Degraded")
    reason = "RolloutRolledBack" if phase == "RolledBack" else "RolloutFailed"
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    assert "b-2" in degraded["message"]
    assert derived["capacity"] is None and derived["routing"] is None
    assert _condition(derived, "Progressing")["reason"] == "RolloutEnded"


def test_stable_rolling_with_its_replicas_available_is_a_rolling_update_not_unavailable() -> None:
    # a promotion: the new template's replicas are up and available, an old one not gone
    rolling = _deployment(2, 2)
    rolling["status"] |= {"replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}
    ready = _condition(_derive(base_spec(), {}, rolling), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RollingUpdate")
    starved = _deployment(2, 1)  # fewer available than desired
    ready = _condition(_derive(base_spec(), {}, starved), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasUnavailable")


def test_a_container_failing_again_and_again_says_why_it_ended_last() -> None:
    pod = {
        "metadata": {"name": "minilm-stable-0"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {
                        "terminated": {"exitCode": 1, "message": "fetch failed: SHA-256 abc\n"}
                    },
                }
            ]
        },
    }
    trouble = status.pod_trouble([pod])
    assert trouble is not None and "CrashLoopBackOff: fetch failed: SHA-256 abc" in trouble
