"""Plans: the spec against observed state. Idempotence, reuse, and what a failed build
or a rolled-back rollout leads to, on plain values (the service observes and executes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shipway.builds.recipes import BuildOptions
from shipway.gitops.plan import (
    BuildState,
    DeploymentState,
    Files,
    IntentAction,
    IntentState,
    Kind,
    Observed,
    Plan,
    RolloutState,
    VersionState,
    make_plan,
)
from shipway.gitops.spec import parse

SPEC = """\
apiVersion: shipway.io/v1alpha1
kind: ModelRelease
model: {name: gemm, onnx: m.onnx, sample: s.npz}
builds:
  - {name: fast, recipe: int8-dynamic}
  - {name: exact}
deployment:
  name: gemm
  build: fast
  rollout: {strategy: canary, settings: {stepWeights: [50, 100]}}
"""
FILES = Files("a" * 64, "b" * 64)
DEFAULTS = BuildOptions().to_dict()
V1 = VersionState(1, FILES.onnx, FILES.sample)
FAST = BuildState("b-fast", 1, "int8-dynamic", "onnxruntime-cpu", DEFAULTS, "succeeded")
EXACT = BuildState("b-exact", 1, "fp32", "onnxruntime-cpu", DEFAULTS, "succeeded")
SERVING_FAST = DeploymentState("gemm", "b-fast", 1, 1, {}, {})


def kinds(plan: Plan) -> list[str]:
    return [a.kind.value for a in plan.actions]


def changes(plan: Plan) -> list[str]:
    return [a.kind.value for a in plan.actions if a.changed]


def test_a_fresh_model_registers_builds_and_deploys_once_built() -> None:
    plan = make_plan(parse(SPEC), Observed(), files=FILES)
    assert plan.changed
    assert kinds(plan) == ["register-version", "create-build", "create-build", "deploy"]
    deploy = plan.actions[-1]
    assert deploy.after_build and deploy.build == "fast" and deploy.build_id is None
    assert deploy.then is IntentAction.DEPLOY  # no rollout for a deployment not there yet
    assert "once build fast succeeds: create gemm serving it" in deploy.detail
    assert plan.to_dict()["actions"][0]["kind"] == "register-version"


def test_the_same_spec_again_changes_nothing() -> None:
    observed = Observed((V1,), (FAST, EXACT), SERVING_FAST)
    plan = make_plan(parse(SPEC), observed, files=FILES)
    assert not plan.changed
    assert kinds(plan) == ["version", "build", "build", "deployment"]
    assert [a.build_id for a in plan.actions[1:3]] == ["b-fast", "b-exact"]


def test_a_build_still_running_is_reused_and_an_intent_already_waiting_is_kept() -> None:
    running = replace(FAST, status="running")
    intent = IntentState(7, "gemm", "b-fast", IntentAction.DEPLOY)
    plan = make_plan(
        parse(SPEC), Observed((V1,), (running, EXACT), None, (), (intent,)), files=FILES
    )
    assert not plan.changed
    assert kinds(plan) == ["version", "build", "build", "wait-for-build"]
    assert plan.actions[-1].intent_id == 7


def test_a_version_is_matched_by_its_onnx_sample_and_calibration() -> None:
    spec = parse(SPEC)
    other_sample = VersionState(1, FILES.onnx, "c" * 64)
    unrecorded = VersionState(2, FILES.onnx, None)  # registered without apply
    for versions in ((other_sample,), (unrecorded,)):
        plan = make_plan(spec, Observed(versions), files=FILES)
        assert kinds(plan)[0] == "register-version"
    with_calibration = Files(FILES.onnx, FILES.sample, "d" * 64)
    assert kinds(make_plan(spec, Observed((V1,)), files=with_calibration))[0] == "register-version"
    # the highest of several matching versions
    plan = make_plan(spec, Observed((V1, replace(V1, version=3))), files=FILES)
    assert plan.actions[0].kind is Kind.VERSION and plan.actions[0].version == 3


def test_a_new_onnx_registers_builds_and_rolls_out_once_built() -> None:
    observed = Observed((V1,), (FAST, EXACT), SERVING_FAST)
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    assert changes(plan) == ["register-version", "create-build", "create-build", "start-rollout"]
    rollout = plan.actions[-1]
    assert rollout.after_build and rollout.then is IntentAction.ROLLOUT
    assert "canary rollout of it against b-fast" in rollout.detail


def test_a_succeeded_build_of_a_new_version_rolls_out_now() -> None:
    v2 = VersionState(2, "e" * 64, FILES.sample)
    fast2 = replace(FAST, id="b-fast2", version=2)
    observed = Observed((V1, v2), (FAST, EXACT, fast2), SERVING_FAST)
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    assert changes(plan) == ["create-build", "start-rollout"]  # exact of v2 is new
    start = plan.actions[-1]
    assert not start.after_build and start.build_id == "b-fast2"


def test_without_a_rollout_in_the_spec_a_new_build_is_deployed_in_place() -> None:
    spec = parse(
        SPEC.replace("  rollout: {strategy: canary, settings: {stepWeights: [50, 100]}}\n", "")
    )
    fast2 = replace(FAST, id="b-fast2", version=2)
    observed = Observed((V1, VersionState(2, "e" * 64, FILES.sample)), (FAST, fast2), SERVING_FAST)
    plan = make_plan(spec, observed, files=replace(FILES, onnx="e" * 64))
    deploy = next(a for a in plan.actions if a.kind is Kind.DEPLOY)
    assert deploy.changed and deploy.then is IntentAction.DEPLOY
    assert "serve build fast (b-fast2) in place of b-fast" in deploy.detail


def test_changed_build_options_make_a_new_build() -> None:
    spec = parse(SPEC.replace("{name: exact}", "{name: exact, options: {minCosine: 0.999}}"))
    observed = Observed((V1,), (FAST, EXACT), SERVING_FAST)
    plan = make_plan(spec, observed, files=FILES)
    assert changes(plan) == ["create-build"]
    assert plan.actions[2].build == "exact" and "minCosine=0.999" in plan.actions[2].detail
    # a build made with those options is reused
    tuned = replace(EXACT, id="b-tuned", options={**DEFAULTS, "min_cosine": 0.999})
    plan = make_plan(spec, Observed((V1,), (FAST, EXACT, tuned), SERVING_FAST), files=FILES)
    assert not plan.changed and plan.actions[2].build_id == "b-tuned"


def test_a_failed_build_is_reported_not_rebuilt_and_blocks_its_deploy() -> None:
    failed = replace(FAST, status="failed", error="accuracy gate: cosine 0.91 < 0.99")
    plan = make_plan(parse(SPEC), Observed((V1,), (failed, EXACT)), files=FILES)
    assert not plan.changed
    assert kinds(plan) == ["version", "build-failed", "build", "blocked"]
    assert "accuracy gate: cosine 0.91" in plan.actions[1].detail
    assert "not rebuilt from the same inputs" in plan.actions[1].detail
    assert "build fast (b-fast) failed: nothing to deploy" in plan.actions[-1].detail
    # not "no changes": the plan names what keeps the platform from matching the spec
    assert plan.problems == (
        f"build/fast: {plan.actions[1].detail}",
        "deployment/gemm: build fast (b-fast) failed: nothing to deploy",
    )
    assert plan.to_dict()["problems"] == list(plan.problems)
    # asked for, the same inputs are built again, and the deploy waits for that build
    retried = make_plan(
        parse(SPEC), Observed((V1,), (failed, EXACT)), files=FILES, retry_failed=True
    )
    assert changes(retried) == ["create-build", "deploy"] and not retried.problems
    assert retried.actions[1].build_id is None
    assert retried.actions[1].detail.endswith("again: b-fast failed")
    assert retried.actions[-1].after_build
    # a build made again by hand (not failed) is reused over the failed one
    again = replace(FAST, id="b-again")
    plan = make_plan(parse(SPEC), Observed((V1,), (failed, EXACT, again)), files=FILES)
    assert plan.actions[1].build_id == "b-again" and plan.actions[-1].kind is Kind.DEPLOY


def test_a_missing_deployment_is_created_with_its_scaling_and_drift_policy() -> None:
    spec = parse(
        SPEC.replace(
            "  build: fast\n",
            "  build: fast\n  replicas: 2\n  maxReplicas: 4\n"
            "  targetInflight: 3\n  drift: {actions: [alert, rollback]}\n",
        )
    )
    plan = make_plan(spec, Observed((V1,), (FAST, EXACT)), files=FILES)
    assert changes(plan) == ["deploy"]
    deploy = plan.actions[-1]
    assert not deploy.after_build and deploy.build_id == "b-fast"
    assert deploy.detail == (
        "create gemm serving build fast (b-fast), 2-4 replicas at 3 in flight each "
        "(scale down after 30 s), drift policy alert, rollback"
    )


def test_scaling_and_drift_policy_change_only_where_the_spec_sets_them() -> None:
    observed = Observed((V1,), (FAST, EXACT), SERVING_FAST)
    assert not make_plan(parse(SPEC), observed, files=FILES).changed  # neither set
    spec = parse(
        SPEC.replace(
            "  build: fast\n", "  build: fast\n  replicas: 2\n  drift: {actions: [rollback]}\n"
        )
    )
    plan = make_plan(spec, observed, files=FILES)
    assert changes(plan) == ["update-scaling", "set-drift-policy"]
    assert plan.actions[-2].detail == "from 1 replica to 2 replicas"
    matching = replace(
        SERVING_FAST,
        min_replicas=2,
        max_replicas=2,
        drift_policy={"actions": ["rollback"], "webhook_url": None},
    )
    assert not make_plan(spec, replace(observed, deployment=matching), files=FILES).changed


def test_an_autoscaled_deployment_s_scaling_change_is_said_in_words() -> None:
    autoscaled = replace(
        SERVING_FAST,
        min_replicas=1,
        max_replicas=3,
        autoscale={"target_inflight": 2.0, "scale_down_stabilization_window_seconds": 30.0},
    )
    observed = Observed((V1,), (FAST, EXACT), autoscaled)
    spec = parse(SPEC.replace("  build: fast\n", "  build: fast\n  replicas: 2\n"))
    [update] = [a for a in make_plan(spec, observed, files=FILES).actions if a.changed]
    assert update.kind is Kind.UPDATE_SCALING
    assert update.detail == (
        "from 1-3 replicas at 2 in flight each (scale down after 30 s) to 2 replicas"
    )


def test_a_rollout_of_the_build_running_is_left_alone() -> None:
    fast2 = replace(FAST, id="b-fast2", version=2)
    v2 = VersionState(2, "e" * 64, FILES.sample)
    running = RolloutState("r-1", "b-fast2", True, "progressing")
    observed = Observed(
        (V1, v2), (FAST, fast2, replace(EXACT, version=2)), SERVING_FAST, (running,)
    )
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    assert not plan.changed
    assert plan.actions[-1].kind is Kind.ROLLOUT and plan.actions[-1].rollout_id == "r-1"


def test_a_rolled_back_build_is_not_rolled_out_again() -> None:
    fast2 = replace(FAST, id="b-fast2", version=2)
    v2 = VersionState(2, "e" * 64, FILES.sample)
    ended = RolloutState("r-1", "b-fast2", False, "rolled-back", "p99 ratio 3.1 > 1.5")
    observed = Observed((V1, v2), (FAST, fast2, replace(EXACT, version=2)), SERVING_FAST, (ended,))
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    assert not plan.changed
    blocked = plan.actions[-1]
    assert blocked.kind is Kind.BLOCKED
    assert "rollout r-1 of build fast (b-fast2) ended rolled-back (p99 ratio 3.1 > 1.5)" in (
        blocked.detail
    )
    assert "not rolled out again" in blocked.detail


def test_a_running_rollout_of_another_build_blocks_the_new_one() -> None:
    fast2 = replace(FAST, id="b-fast2", version=2)
    v2 = VersionState(2, "e" * 64, FILES.sample)
    other = RolloutState("r-9", "b-other", True, "paused")
    observed = Observed((V1, v2), (FAST, fast2, replace(EXACT, version=2)), SERVING_FAST, (other,))
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    assert not plan.changed
    assert plan.actions[-1].kind is Kind.BLOCKED and "rollout r-9" in plan.actions[-1].detail


def test_intents_for_builds_no_longer_wanted_are_cancelled() -> None:
    stale = IntentState(3, "gemm", "b-old", IntentAction.ROLLOUT)
    observed = Observed((V1,), (FAST, EXACT), SERVING_FAST, (), (stale,))
    plan = make_plan(parse(SPEC), observed, files=FILES)
    assert changes(plan) == ["cancel-intent"]
    assert plan.actions[-2].intent_id == 3


def test_kubernetes_mode_deploys_the_new_build_for_the_operator_to_roll_out() -> None:
    fast2 = replace(FAST, id="b-fast2", version=2)
    v2 = VersionState(2, "e" * 64, FILES.sample)
    kube = replace(SERVING_FAST, drift_policy=None)
    observed = Observed((V1, v2), (FAST, fast2), kube, kubernetes=True)
    plan = make_plan(parse(SPEC), observed, files=replace(FILES, onnx="e" * 64))
    deploy = next(a for a in plan.actions if a.kind is Kind.DEPLOY)
    assert deploy.then is IntentAction.DEPLOY and "the operator rolls it out" in deploy.detail
    # the drift policy is the resource's: said, not a problem that fails the apply
    drifting = parse(
        SPEC.replace("  build: fast\n", "  build: fast\n  drift: {actions: [rollback]}\n")
    )
    plan = make_plan(drifting, replace(observed, builds=(FAST, EXACT)), files=FILES)
    assert not plan.changed and not plan.problems
    drift = plan.actions[-1]
    assert drift.kind is Kind.SET_DRIFT_POLICY and "ModelDeployment's spec.drift" in drift.detail


def test_a_version_named_by_a_trigger_is_used_as_it_is() -> None:
    plan = make_plan(parse(SPEC), Observed((V1,), (FAST,), SERVING_FAST), version=1)
    assert kinds(plan) == ["version", "build", "create-build", "deployment"]
    assert changes(plan) == ["create-build"] and plan.actions[2].version == 1


def test_a_dry_run_plan_says_so_and_is_the_same_plan() -> None:
    observed = Observed((V1,), (FAST,), None)
    real = make_plan(parse(SPEC), observed, files=FILES)
    dry = make_plan(parse(SPEC), observed, files=FILES, dry_run=True)
    assert dry.dry_run and dry.to_dict()["dry_run"] is True
    assert dry.actions == real.actions


def test_files_or_version_not_both() -> None:
    with pytest.raises(ValueError):
        make_plan(parse(SPEC), Observed(), files=FILES, version=1)


def test_a_deploy_in_place_carries_the_scaling_rather_than_a_second_step() -> None:
    spec = parse(
        SPEC.replace(
            "  rollout: {strategy: canary, settings: {stepWeights: [50, 100]}}\n", ""
        ).replace("  build: fast\n", "  build: fast\n  replicas: 3\n")
    )
    fast2 = replace(FAST, id="b-fast2", version=2)
    observed = Observed((V1, VersionState(2, "e" * 64, FILES.sample)), (FAST, fast2), SERVING_FAST)
    plan = make_plan(spec, observed, files=replace(FILES, onnx="e" * 64))
    assert changes(plan) == ["create-build", "deploy"]
    assert "3 replicas" not in plan.actions[-1].detail  # the deployment exists: kept as is
    # the deploy waits for a build: the scaling changes now, on the build serving
    pending = replace(fast2, status="running")
    plan = make_plan(
        spec, replace(observed, builds=(FAST, pending)), files=replace(FILES, onnx="e" * 64)
    )
    assert changes(plan) == ["create-build", "deploy", "update-scaling"]
    assert plan.actions[-1].build_id == "b-fast"


def test_a_build_that_was_never_queued_is_queued_again() -> None:
    unqueued = replace(FAST, status="failed", error="could not enqueue: Connection refused")
    plan = make_plan(parse(SPEC), Observed((V1,), (unqueued, EXACT)), files=FILES)
    assert changes(plan) == ["create-build", "deploy"]
    assert plan.actions[1].build == "fast" and plan.actions[1].build_id is None
