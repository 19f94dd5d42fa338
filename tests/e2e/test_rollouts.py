"""Progressive delivery end to end: real Triton replicas, the real gateway under steady
load, the rollout controller in the API process, driven through the CLI.

Bad candidates are real served models that misbehave (tests/support/models/flaky):
one fails a share of its requests, one sleeps on a share of them. The fault is in the
model, never a switch in the gateway.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy.stats import binom

from shipway.examples import minilm
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.services import models
from shipway.store.models import ModelVersion
from tests.e2e.test_local_story import cli
from tests.support.builds import publish_flaky_build, real_build, register_doubler
from tests.support.load import steady_load
from tests.support.plane import Plane, local_plane, stamp
from tests.support.services import wait_until

pytestmark = pytest.mark.e2e

ALL_STEPS = ["weight 20 %", "weight 50 %", "weight 100 %"]
FAST = ["--steps", "20,50,100", "--interval", "2", "--min-requests", "20"]


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, triton_dist: TritonDistribution
) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("rollouts") / "home"
    with local_plane(home, triton_dist.home, sample_rate=1.0) as plane:
        yield plane


def prepare(plane: Plane, name: str, **fault: float) -> tuple[ModelVersion, ModelVersion, str, str]:
    """Two versions of a model: v1's build serves as stable, v2's (with ``fault``) is the
    candidate."""
    v1, v2 = register_doubler(plane.container, name), register_doubler(plane.container, name)
    stable = publish_flaky_build(plane.container, v1)
    candidate = publish_flaky_build(plane.container, v2, **fault)
    plane.deploy(name, stable)
    return v1, v2, stable, candidate


def rollout(plane: Plane, name: str, *args: str) -> dict[str, Any]:
    return json.loads(cli(plane.settings, "rollouts", *args, name, "--json").stdout)


def wait_finished(plane: Plane, name: str, timeout: float = 120) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def finished() -> bool:
        state.update(rollout(plane, name, "status"))
        return not state["running"]

    try:
        wait_until(finished, timeout, f"the rollout of {name} to finish")
    except TimeoutError:
        tail = [(e["event"], e["reason"], e["details"].get("numbers")) for e in state["timeline"]]
        raise AssertionError(f"{state['phase']} at {state['weight']} %: {tail[-6:]}") from None
    return state


def routed_variants(plane: Plane, name: str) -> set[str]:
    """The variants the gateway routes to now (its own table, not the store's)."""
    url = f"{plane.settings.gateway_url}/admin/routes"
    headers = {"Authorization": f"Bearer {plane.settings.token}"}
    routes = httpx.get(url, headers=headers, timeout=5, trust_env=False).json()
    return {v for v, route in routes.get(name, {}).get("variants", {}).items() if route["weight"]}


def wait_routed_to_stable_only(plane: Plane, name: str) -> float:
    """Wait until the gateway routes the deployment to stable alone; returns when."""
    wait_until(lambda: routed_variants(plane, name) == {"stable"}, 30, "routes to stable only")
    return time.time()


def within_share(count: int, total: int, share: float) -> bool:
    """``count`` of ``total`` weighted draws is no more than ``share`` allows: under the
    binomial's 99.9 % quantile, not a fixed margin."""
    return count <= binom.ppf(0.999, total, share)


def events(body: dict[str, Any]) -> list[str]:
    return [e["event"] for e in body["timeline"]]


def serving(plane: Plane, name: str) -> dict[str, Any]:
    with plane.client() as client:
        return client.deployment(name)


def test_a_healthy_candidate_goes_through_every_step_and_becomes_stable(plane: Plane) -> None:
    _, v2, _, candidate = prepare(plane, "healthy")
    with steady_load(plane.settings.gateway_url, "healthy") as load:
        drift = ["--max-drift-score", "0.25"]  # needs 100 sampled rows per variant first
        shadow = ["--shadow", "1.0", "--shadow-min-compared", "100"]
        started = rollout(plane, "healthy", "start", "--build", candidate, *FAST, *drift, *shadow)
        assert started["phase"] == "initializing" and started["running"]
        done = wait_finished(plane, "healthy")
        assert done["phase"] == "succeeded", done
        # the old stable's replicas go once the new stable serves
        wait_until(
            lambda: {r["build_id"] for r in serving(plane, "healthy")["replicas"]} == {candidate},
            60,
            "the old replicas to go",
        )
    steps = [e["reason"] for e in done["timeline"] if e["event"] == "rollout.step"]
    assert steps == ALL_STEPS and "rollout.promoted" in events(done)
    assert events(done)[:2] == ["rollout.created", "rollout.shadowing"]
    handed = next(e for e in done["timeline"] if e["event"] == "rollout.handed-over")
    shadowed = handed["details"]["numbers"]["shadow"]
    assert shadowed["disagree"] == 0 and shadowed["agree"] >= 100
    assert shadowed["low"] >= shadowed["limit"] == 0.98
    passed = [e for e in done["timeline"] if e["event"] == "rollout.check-passed"]
    assert all(e["details"]["numbers"]["error_rate"]["value"] == 0 for e in passed)
    drift = [
        e["details"]["numbers"]["drift_score"]
        for e in done["timeline"]
        if "numbers" in e["details"] and "drift_score" in e["details"]["numbers"]
    ]
    assert drift[0]["outcome"] == "inconclusive" and drift[0]["value"] is None  # no rows yet
    assert all(d["outcome"] == "passed" and d["value"] <= 0.25 for d in drift[-3:])
    deployment = serving(plane, "healthy")
    assert deployment["build_id"] == candidate
    assert [v["name"] for v in deployment["variants"]] == ["stable"]
    assert plane.container.registry.aliases("healthy") == {"production": v2.version}
    assert load.failed() == [] and {a.variant for a in load.answers} == {"stable", "canary"}


def test_a_candidate_that_fails_a_share_of_requests_is_rolled_back(plane: Plane) -> None:
    v1, _, stable, bad = prepare(plane, "failing", fail_share=0.3)
    with steady_load(plane.settings.gateway_url, "failing") as load:
        rollout(plane, "failing", "start", "--build", bad, *FAST)
        done = wait_finished(plane, "failing")
        after = wait_routed_to_stable_only(plane, "failing")
        wait_until(lambda: len(load.since(after)) >= 20, 30, "20 requests after the rollback")
    assert done["phase"] == "rolled-back" and "error_rate" in done["reason"], done
    steps = [e["reason"] for e in done["timeline"] if e["event"] == "rollout.step"]
    assert steps == ["weight 20 %"] and done["weight"] == 0  # never past its first step
    deployment = serving(plane, "failing")
    assert deployment["build_id"] == stable and [v["name"] for v in deployment["variants"]] == [
        "stable"
    ]
    failed = load.failed()
    assert failed and {a.variant for a in failed} == {"canary"}  # only the canary failed
    assert all(a.status < 500 for a in load.since(after))  # and stable serves everything
    canary = [a for a in load.answers if a.variant == "canary"]
    while_served = [a for a in load.answers if canary[0].at <= a.at <= canary[-1].at]
    assert within_share(len(canary), len(while_served), 0.2)  # never past its first step
    assert plane.container.registry.aliases("failing") == {"production": v1.version}


def test_a_candidate_with_a_latency_regression_is_rolled_back(plane: Plane) -> None:
    _, _, stable, slow = prepare(plane, "slow", sleep_ms=80, sleep_share=0.5)
    with steady_load(plane.settings.gateway_url, "slow"):
        rollout(plane, "slow", "start", "--build", slow, *FAST)
        done = wait_finished(plane, "slow")
    assert done["phase"] == "rolled-back", done
    # half the candidate's requests are 80 ms slower: its p50 and its p99 both regress,
    # and which bound clears its limit first depends on the machine's noise; the check
    # the reason names must have failed on its numbers
    failed_check = next(e for e in done["timeline"] if e["event"] == "rollout.rolled-back")
    numbers = failed_check["details"]["numbers"]
    named = [c for c in ("p50_ratio", "p99_ratio") if c in done["reason"]]
    assert named, done["reason"]
    for check in named:
        assert numbers[check]["outcome"] == "failed", numbers[check]
        assert numbers[check]["value"] > numbers[check]["limit"], numbers[check]
    assert serving(plane, "slow")["build_id"] == stable


def test_an_ab_experiment_with_sticky_keys_ends_with_a_recorded_decision(plane: Plane) -> None:
    _, _, _, challenger = prepare(plane, "ab", sleep_ms=15)
    keys = [f"user-{i}" for i in range(40)]
    with steady_load(plane.settings.gateway_url, "ab", keys=keys) as load:
        args = ["--strategy", "experiment", "--interval", "2", "--min-requests", "150"]
        rollout(plane, "ab", "start", "--build", challenger, *args)
        done = wait_finished(plane, "ab")
    assert done["phase"] == "rolled-back" and done["winner"] == "stable", done
    decided = next(e for e in done["timeline"] if e["event"] == "experiment.decided")
    latency = next(
        c for c in decided["details"]["numbers"]["comparisons"] if c["metric"] == "latency"
    )
    assert latency["test"] == "Mann-Whitney U" and latency["significant"] and not latency["better"]
    # sticky: while both arms served, each key stayed in one arm
    arms = [a for a in load.answers if a.variant == "challenger"]
    first, last = arms[0].at + 1.5, arms[-1].at - 1.5
    seen: dict[str, set[str]] = {}
    for answer in load.answers:
        if first <= answer.at <= last and answer.key:
            seen.setdefault(answer.key, set()).add(answer.variant)
    assert all(len(v) == 1 for v in seen.values()), seen
    in_challenger = sum(v == {"challenger"} for v in seen.values())
    assert 0.2 * len(keys) <= in_challenger <= 0.8 * len(keys)
    assert serving(plane, "ab")["split"] == "weighted"


def test_a_rollout_resumes_where_it_was_after_the_control_plane_is_killed(plane: Plane) -> None:
    _, _, _, candidate = prepare(plane, "resume")
    with steady_load(plane.settings.gateway_url, "resume") as load:
        rollout(plane, "resume", "start", "--build", candidate, *FAST, "--checks-per-step", "2")
        wait_until(lambda: rollout(plane, "resume", "status")["weight"] == 50, 90, "50 %")
        plane.stop("api", kill=True)  # SIGKILL: no chance to save anything on the way out
        killed = time.time()
        time.sleep(3)
        plane.start("api")
        done = wait_finished(plane, "resume")
    assert done["phase"] == "succeeded", done
    at = [(e["event"], e["reason"]) for e in done["timeline"]]
    assert [r for e, r in at if e == "rollout.step"] == ALL_STEPS
    later = [e["event"] for e in done["timeline"] if stamp(e["at"]) > killed + 3]
    assert "rollout.check-passed" in later and "rollout.promoted" in later  # went on
    assert any(a.at > killed and a.variant == "canary" for a in load.answers)
    assert load.failed() == []  # the data plane never noticed
    assert serving(plane, "resume")["build_id"] == candidate


def test_a_second_rollout_is_refused_and_bad_input_is_named(plane: Plane) -> None:
    _, _, stable, candidate = prepare(plane, "guard")
    first = rollout(plane, "guard", "start", "--build", candidate, "--interval", "60")
    second = cli(plane.settings, "rollouts", "start", "guard", "--build", candidate, ok=False)
    assert second.returncode == 1 and f"running rollout {first['id']}" in second.stderr
    same = cli(plane.settings, "rollouts", "start", "guard", "--build", stable, ok=False)
    assert "409" in same.stderr or "already" in same.stderr
    bad = cli(plane.settings, "rollouts", "start", "guard", "--build", candidate,
              "--steps", "50,20,100", ok=False)  # fmt: skip
    assert "rise strictly" in bad.stderr
    aborted = rollout(plane, "guard", "abort")
    assert aborted["phase"] == "rolled-back" and not aborted["running"]
    assert [v["name"] for v in serving(plane, "guard")["variants"]] == ["stable"]


def test_a_candidate_that_refuses_stable_clients_requests_is_rolled_back(plane: Plane) -> None:
    """The issue's case: the candidate is the same graph with its input renamed from x to
    features; clients keep sending x, so Triton answers the candidate's share with 400.
    Without --allow-signature-change the rollout is refused before any traffic; with it,
    the 4xx beyond stable's roll it back within its failure threshold."""
    v1 = register_doubler(plane.container, "renamed")
    v2 = register_doubler(plane.container, "renamed", input_name="features")
    stable, renamed = real_build(plane.container, v1), real_build(plane.container, v2)
    plane.deploy("renamed", stable)
    refused = cli(plane.settings, "rollouts", "start", "renamed", "--build", renamed, ok=False)
    said = " ".join(refused.stderr.split())  # the terminal wraps long lines
    assert refused.returncode == 1 and "409" in said and "input 'x' is gone" in said, said
    with steady_load(plane.settings.gateway_url, "renamed") as load:
        rollout(plane, "renamed", "start", "--build", renamed, *FAST, "--allow-signature-change")
        done = wait_finished(plane, "renamed")
        wait_until(
            lambda: [v["name"] for v in serving(plane, "renamed")["variants"]] == ["stable"],
            30,
            "the candidate's variant to go",
        )
        after = wait_routed_to_stable_only(plane, "renamed")
        wait_until(lambda: len(load.since(after)) >= 20, 30, "20 requests after the rollback")
    assert done["phase"] == "rolled-back" and "client_error_excess" in done["reason"], done
    assert "features" in json.dumps(done["timeline"][0]["details"]["signature_changes"])
    steps = [e["reason"] for e in done["timeline"] if e["event"] == "rollout.step"]
    assert steps == ["weight 20 %"] and done["weight"] == 0  # never past its first step
    failed = [e for e in done["timeline"] if e["event"] == "rollout.check-failed"]
    assert len(failed) <= 1  # rolled back at its failure threshold (2)
    refusals = [a for a in load.answers if 400 <= a.status < 500]
    assert refusals and {a.variant for a in refusals} == {"canary"}  # only the candidate
    assert all(a.status == 200 for a in load.answers if a.variant == "stable")
    assert load.failed() == []  # no 5xx anywhere
    canary = [a for a in load.answers if a.variant == "canary"]
    while_served = [a for a in load.answers if canary[0].at <= a.at <= canary[-1].at]
    assert within_share(len(refusals), len(while_served), 0.2)  # bounded by the canary's share
    assert all(a.status == 200 for a in load.since(after))  # stable serves everything
    assert serving(plane, "renamed")["build_id"] == stable


def test_a_gate_passing_int8_build_hands_over_from_its_shadow_phase(
    plane: Plane, minilm_onnx: Path, minilm_sample: Path
) -> None:
    """The issue's case: MiniLM INT8 (cosine ~0.993 at its gate) shadowed behind FP32 had
    0 of 63 mirrored answers "agree" under an element-wise 1e-3 tolerance and was rolled
    back. Judged by its gate's per-row test it hands over, then goes through its steps."""
    registration = models.Registration(
        "embed", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}
    )
    version = models.register(plane.container, registration, "test")
    fp32 = real_build(plane.container, version)
    int8 = real_build(plane.container, version, "int8")
    plane.deploy("embed", fp32)
    stop = threading.Event()

    def client(seed: int) -> None:  # sentences of varied length, one a request
        url = f"{plane.settings.gateway_url}/v2/models/embed/infer"
        with httpx.Client(timeout=30.0, trust_env=False) as http:
            n = 0
            while not stop.is_set():
                rows = minilm.make_inputs(1, seq_len=32, seed=seed * 100_000 + n)
                body = {
                    "inputs": [
                        {"name": k, "shape": list(v.shape), "datatype": "INT64",
                         "data": v.ravel().tolist()}
                        for k, v in rows.items()
                    ]
                }  # fmt: skip
                http.post(url, json=body).raise_for_status()
                n += 1
                stop.wait(0.05)

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(2)]
    for thread in clients:
        thread.start()
    try:
        args = ["--steps", "50,100", "--interval", "2", "--min-requests", "10"]
        shadow = ["--shadow", "1.0", "--shadow-min-compared", "100"]
        rollout(plane, "embed", "start", "--build", int8, *args, *shadow)
        done = wait_finished(plane, "embed", timeout=300)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert done["phase"] == "succeeded", done
    handed = next(e for e in done["timeline"] if e["event"] == "rollout.handed-over")
    compared = handed["details"]["numbers"]["shadow"]
    assert compared["agree"] >= 100 and compared["low"] >= compared["limit"], compared
    assert compared["error"] == 0
    steps = [e["reason"] for e in done["timeline"] if e["event"] == "rollout.step"]
    assert steps == ["weight 50 %", "weight 100 %"]
