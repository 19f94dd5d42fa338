"""Progressive delivery on Kubernetes, end to end: the operator's rollout loop judging
real traffic from Prometheus, the in-cluster Shipway gateway routing it by the
resources and EndpointSlices, real Triton answering in every pod.

Everything is real but the kubelet (tests/kube/kubelet.py runs each pod's Triton on
its IP). Bad candidates are real served models that misbehave (the flaky test model):
one fails a share of its requests, one refuses what stable accepts (its input renamed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binom

from shipway_operator.capacity import variant_range
from shipway_operator.spec import parse_spec
from tests.kube.cluster import TestCluster, wait_for
from tests.kube.kubelet import TritonKubelet
from tests.support.kubeplane import SETTLE, KubePlane, kube_plane
from tests.support.load import Load, steady_load
from tests.support.repositories import ArchiveServer

pytestmark = pytest.mark.e2e

RATE = 30.0  # requests a second through the gateway: 2 cores run everything here
CANARY = {
    "strategy": "canary",
    "canary": {
        "stepWeights": [20, 50, 100],
        # 3 s at 30 requests a second: about 18 requests at 20 %, judged from 10
        "intervalSeconds": 3,
        "checksPerStep": 1,
        "failureLimit": 2,
        "thresholds": {"minRequests": 10},
    },
}


@pytest.fixture(scope="module")
def plane(
    kube_cluster: TestCluster,
    triton_kubelet: TritonKubelet,
    archive_server: ArchiveServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KubePlane]:
    with kube_plane(kube_cluster, archive_server, tmp_path_factory.mktemp("kubeplane")) as p:
        yield p


def _logs(plane: KubePlane) -> str:
    parts = []
    for name in ("operator.log", "gateway.log"):
        path: Path = plane.workdir / name
        if path.exists():
            parts.append(f"--- {name}\n{path.read_text()[-4000:]}")
    return "\n".join(parts)


def _finished(plane: KubePlane, name: str, timeout: float = SETTLE) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record = plane.record(name)
        return record if record.get("finished") else None

    try:
        return wait_for(done, timeout, f"{name}'s rollout finished", 0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status {plane.status(name)}\n{_logs(plane)}") from None


def _canary_window(load: Load) -> tuple[float, float] | None:
    """From the first answer the canary gave to its last."""
    times = [a.at for a in load.answers if a.variant == "canary"]
    return (min(times), max(times)) if times else None


def test_a_healthy_canary_goes_through_every_step_with_no_failed_request(
    plane: KubePlane,
) -> None:
    name = "healthy"
    plane.deploy(
        name,
        plane.build("healthy-b1", 1),
        CANARY,
        replicas=None,
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 4,
            "target": {"metric": "cpu", "averageUtilization": 80},
        },
        triton={"resources": {"requests": {"cpu": "100m"}}},
    )
    plane.wait_serving(name)
    old_sets = set(plane.object_names(name)["ReplicaSet"])
    seen: list[tuple[int, tuple[int, int] | None, tuple[int, int] | None]] = []
    with steady_load(plane.gateway_url, name, rate=RATE) as load:
        plane.set_build(name, plane.build("healthy-b2", 2))

        def finished() -> bool:
            weights = plane.status(name).get("weights") or {}
            view = (
                weights.get("candidate", 0),
                plane.hpa_range(f"{name}-stable"),
                plane.hpa_range(f"{name}-candidate"),
            )
            if not seen or seen[-1] != view:
                seen.append(view)
            return bool(plane.record(name).get("finished"))

        wait_for(finished, SETTLE, "the healthy canary finished", 0.3)
        time.sleep(2.0)  # answers after the last change: stable alone serves them
    record = plane.record(name)
    assert record["phase"] == "Succeeded", f"{record}\n{_logs(plane)}"
    failed = load.failed()
    assert failed == [], f"{len(failed)} failed of {len(load.answers)}: {failed[:5]}"
    # every step, in order
    steps = [w for w, _, _ in seen]
    assert [w for i, w in enumerate(steps) if w and (i == 0 or w != steps[i - 1])] == [
        20,
        50,
        100,
    ], seen
    # each HPA's range in each step is the pure function's for the variant's share (the
    # candidate's is sized before its weight moves)
    spec = parse_spec(plane.get(name)["spec"])
    baseline = 1  # the stable's replicas when the rollout began (min 1, no CPU load)
    for weight in (20, 50):
        expected = (
            variant_range(spec, True, 100 - weight, baseline),
            variant_range(spec, False, weight, baseline),
        )
        assert expected in [(s, c) for w, s, c in seen if w == weight], seen
    # and the candidate's was never behind the traffic it took
    for weight, _, candidate in seen:
        if weight > 0 and candidate:
            assert candidate >= variant_range(spec, False, weight, baseline), seen
    # the new build is stable; the candidate's objects and the old ReplicaSet are gone
    status = plane.status(name)
    assert status["stableBuild"]["id"] == "healthy-b2" and not status.get("candidateBuild")
    wait_for(
        lambda: (
            plane.object_names(name)["Deployment"] == [f"{name}-stable"]
            and not (old_sets & set(plane.object_names(name)["ReplicaSet"]))
        ),
        SETTLE,
        "the candidate's Deployment and the old build's ReplicaSet gone",
    )
    last = [a for a in load.answers if a.at > load.answers[-1].at - 1.0]
    assert last and all(a.variant == "stable" and a.status == 200 for a in last)


def _bounded(load: Load, share: float, weight: float) -> None:
    """Failures only on the canary, within the binomial's 99.9 % bound for ``share`` of
    the requests it served; and it served no more than its ``weight`` of the traffic
    while it served (the same bound): failures never beyond the canary's share."""
    failed = load.failed()
    assert all(a.variant == "canary" for a in failed), failed[:5]
    served = sum(1 for a in load.answers if a.variant == "canary")
    assert len(failed) <= binom.ppf(0.999, served, share), (len(failed), served)
    window = _canary_window(load)
    assert window is not None
    during = [a for a in load.answers if window[0] <= a.at <= window[1]]
    assert served <= binom.ppf(0.999, len(during), weight), (served, len(during))


def test_a_canary_failing_30_percent_is_rolled_back_failures_bounded_by_its_share(
    plane: KubePlane,
) -> None:
    name = "failing"
    plane.deploy(name, plane.build("failing-b1", 1), CANARY)
    plane.wait_serving(name)
    with steady_load(plane.gateway_url, name, rate=RATE) as load:
        plane.set_build(name, plane.build("failing-b2", 2, fail_share=0.3))
        record = _finished(plane, name)
        time.sleep(2.0)
    assert record["phase"] == "RolledBack", f"{record}\n{_logs(plane)}"
    assert "error_rate" in record["state"]["reason"]
    assert load.failed(), "the canary failed nothing: the test proves nothing"
    _bounded(load, 0.3, 0.2)  # rolled back at its first step, 20 %
    status = plane.status(name)
    assert status["stableBuild"]["id"] == "failing-b1"
    assert status["weights"] == {"stable": 100, "candidate": 0}
    window = _canary_window(load)
    assert window is not None
    after = [a for a in load.answers if a.at > window[1]]
    assert after and all(a.status == 200 and a.variant == "stable" for a in after)
    wait_for(
        lambda: plane.object_names(name)["Deployment"] == [f"{name}-stable"],
        SETTLE,
        "the candidate's Deployment gone",
    )


def test_a_canary_refusing_what_stable_accepts_is_rolled_back(plane: KubePlane) -> None:
    name = "refusing"
    plane.deploy(name, plane.build("refusing-b1", 1), CANARY)
    plane.wait_serving(name)
    with steady_load(plane.gateway_url, name, rate=RATE) as load:
        plane.set_build(name, plane.build("refusing-b2", 2, input_name="x2"))
        record = _finished(plane, name)
        time.sleep(2.0)
    assert record["phase"] == "RolledBack", f"{record}\n{_logs(plane)}"
    assert "client_error_excess" in record["state"]["reason"]
    refused = [a for a in load.answers if 400 <= a.status < 500]
    assert refused and all(a.variant == "canary" for a in refused)
    assert load.failed() == []
    assert plane.status(name)["stableBuild"]["id"] == "refusing-b1"


def test_an_ab_experiment_with_sticky_keys_is_decided_and_recorded(plane: KubePlane) -> None:
    name = "ab"
    experiment = {
        "strategy": "experiment",
        "experiment": {
            "weight": 50,
            "intervalSeconds": 2,
            "minRequests": 40,
            "maxDurationSeconds": 120,
        },
    }
    plane.deploy(name, plane.build("ab-b1", 1), experiment)
    plane.wait_serving(name)
    keys = [f"user-{i}" for i in range(40)]
    with steady_load(plane.gateway_url, name, rate=RATE, keys=keys) as load:
        plane.set_build(name, plane.build("ab-b2", 2, fail_share=0.3))
        record = _finished(plane, name)
    assert record["phase"] == "RolledBack", f"{record}\n{_logs(plane)}"
    assert record["state"]["winner"] == "stable"  # the control arm won: recorded
    # while the experiment ran, each key stayed with one arm
    window = _canary_window_by(load, "challenger")
    assert window is not None
    arms: dict[str, set[str]] = {}
    for answer in load.answers:
        if window[0] <= answer.at <= window[1] and answer.key and answer.variant:
            arms.setdefault(answer.key, set()).add(answer.variant)
    assert arms and all(len(v) == 1 for v in arms.values()), arms
    assert {"stable", "challenger"} <= set().union(*arms.values())


def _canary_window_by(load: Load, variant: str) -> tuple[float, float] | None:
    times = [a.at for a in load.answers if a.variant == variant]
    return (min(times), max(times)) if times else None


def test_an_operator_killed_at_50_percent_resumes_from_50_percent(plane: KubePlane) -> None:
    name = "resumed"
    slow = {**CANARY, "canary": {**CANARY["canary"], "intervalSeconds": 5}}
    plane.deploy(name, plane.build("resumed-b1", 1), slow)
    plane.wait_serving(name)
    with steady_load(plane.gateway_url, name, rate=RATE) as load:
        plane.set_build(name, plane.build("resumed-b2", 2))
        wait_for(
            lambda: (plane.status(name).get("weights") or {}).get("candidate") == 50,
            SETTLE,
            "the canary at 50 %",
            0.2,
        )
        step = plane.record(name)["state"]["step"]
        plane.operator.kill()
        killed_at = time.time()
        # while the operator is down nothing moves: the weights stay, traffic is served
        time.sleep(6.0)
        assert (plane.status(name).get("weights") or {}).get("candidate") == 50
        plane.operator.start()
        weights: list[int] = []

        def finished() -> bool:
            weights.append((plane.status(name).get("weights") or {}).get("candidate", 0))
            return bool(plane.record(name).get("finished"))

        wait_for(finished, SETTLE, "the resumed canary finished", 0.2)
    record = plane.record(name)
    assert record["phase"] == "Succeeded", f"{record}\n{_logs(plane)}"
    # it went on from 50 %: never back below it before promotion, the next step next
    live = [w for w in weights if w]
    assert live and min(live) >= 50, weights
    assert record["state"]["step"] > step
    assert load.failed() == [] and any(a.at > killed_at for a in load.answers)
