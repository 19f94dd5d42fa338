"""The rollout loop's passes (``rollouts.tick``) with the Kubernetes ports, on the real
test cluster: weights, replica ranges, promotion and rollback as the API server stores
them. kwok makes the pods Ready and nothing serves, so the metrics here are the
in-memory fake of the port (``shipway.rollout.testing.FakeMetrics``), fed per pass
as a gateway would count; real traffic, Triton and Prometheus are the e2e's
(tests/e2e/kubernetes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from shipway.rollout.ports import Ports
from shipway.rollout.testing import FakeMetrics
from shipway_operator import reconcile, rollouts
from shipway_operator.capacity import variant_range
from shipway_operator.kube import Kube
from shipway_operator.rollout_ports import kubernetes_ports
from shipway_operator.rollout_status import from_resource
from shipway_operator.spec import parse_spec
from tests.kube.cluster import wait_for

from .conftest import SETTLE, Cluster, resource

pytestmark = pytest.mark.integration

B2 = {"id": "b-2", "modelRepository": "s3://models/minilm/b-2", "modelVersion": 4}
FETCH_IMAGE = "registry.test/shipway-operator:test"
CANARY = {
    "strategy": "canary",
    "canary": {
        "stepWeights": [20, 50, 100],
        "intervalSeconds": 1,
        "checksPerStep": 1,
        "bakeSeconds": 0,
        "thresholds": {"minRequests": 20},
    },
}
AUTOSCALING = {
    "minReplicas": 2,
    "maxReplicas": 10,
    "target": {"metric": "cpu", "averageUtilization": 70},
}


class Loop:
    """The operator's rollout loop for one namespace, driven pass by pass by the test."""

    def __init__(self, api: client.ApiClient, namespace: str, metrics: FakeMetrics) -> None:
        self.kube, self.namespace, self.metrics = Kube(api), namespace, metrics
        self.settings = rollouts.LoopSettings(start_timeout_seconds=SETTLE, poll_seconds=0.2)

    def apply(self, name: str) -> None:
        reconcile.reconcile(
            self.kube, {"metadata": {"namespace": self.namespace, "name": name}}, FETCH_IMAGE, 5
        )

    def ports(self) -> Ports:
        return kubernetes_ports(self.kube, self.namespace, self.metrics, self.apply, 5)

    def tick(self, name: str) -> float | None:
        return rollouts.tick(
            self.kube, self.namespace, name, self.ports(), self.settings, self.apply
        )


def _record(cluster: Cluster, name: str) -> dict[str, Any]:
    return (cluster.get(name).get("status") or {}).get("rollout") or {}


def _drive(
    loop: Loop,
    cluster: Cluster,
    name: str,
    traffic: Callable[[dict[str, Any]], None],
    until: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = SETTLE,
) -> list[dict[str, Any]]:
    """Passes until ``until(body)``; before each, ``traffic(body)`` counts the requests
    served since the last one. Returns every distinct (weights, HPA ranges) seen."""
    seen: list[dict[str, Any]] = []

    def done() -> bool:
        body = cluster.get(name)
        if until(body):
            return True
        traffic(body)
        loop.tick(name)
        body = cluster.get(name)
        view = {"weights": (body.get("status") or {}).get("weights"), "hpa": _ranges(cluster)}
        if not seen or seen[-1] != view:
            seen.append(view)
        return until(body)

    wait_for(done, timeout, what, interval=0.3)
    return seen


def _ranges(cluster: Cluster) -> dict[str, tuple[int, int]]:
    found = {}
    for variant in ("stable", "candidate"):
        hpa = cluster.hpa(f"minilm-{variant}")
        if hpa is not None:
            found[variant] = (hpa.spec.min_replicas, hpa.spec.max_replicas)
    return found


def _serve(metrics: FakeMetrics, errors: float = 0.0) -> Callable[[dict[str, Any]], None]:
    """40 requests per pass split by the live weights; the canary fails ``errors`` of
    its share."""

    def count(body: dict[str, Any]) -> None:
        weights = (body.get("status") or {}).get("weights") or {"stable": 100}
        canary = round(40 * weights.get("candidate", 0) / 100)
        metrics.add("minilm", "stable", 40 - canary)
        if canary:
            metrics.add("minilm", "canary", canary, errors=round(canary * errors))

    return count


def _wait_ready(cluster: Cluster, loop: Loop, what: str) -> None:
    def ready() -> bool:  # no operator runs: its reconcile refreshes the status
        loop.apply("minilm")
        return (cluster.get("minilm").get("status") or {}).get("phase") == "Ready"

    wait_for(ready, SETTLE, what)


def _start(cluster: Cluster, loop: Loop, rollout: dict[str, Any] = CANARY, **spec: Any) -> None:
    cluster.create(resource("minilm", rollout=rollout, **spec))
    _wait_ready(cluster, loop, "stable ready")
    cluster.patch_spec("minilm", {"build": B2})
    loop.apply("minilm")
    assert _record(cluster, "minilm")["candidateBuildID"] == "b-2"


def test_a_healthy_canary_steps_to_stable_with_ranges_following_weights(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, loop, replicas=None, autoscaling=AUTOSCALING)
    stable_rs = {
        rs for rs in cluster.owned("minilm")["ReplicaSet"] if rs.startswith("minilm-stable")
    }

    views = _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: bool(_record_of(b).get("finished")),
        "the canary promoted and finished",
    )
    body = cluster.get("minilm")
    status = body["status"]
    assert status["rollout"]["phase"] == "Succeeded"
    assert status["stableBuild"]["id"] == "b-2" and status["stableBuild"]["modelVersion"] == 4
    assert status.get("candidateBuild") is None
    assert status["weights"] == {"stable": 100, "candidate": 0}
    # the traffic went through every step, in order, never back
    candidate_weights = [v["weights"]["candidate"] for v in views if v["weights"]]
    steps = [w for i, w in enumerate(candidate_weights) if i == 0 or w != candidate_weights[i - 1]]
    assert [w for w in steps if w] == [20, 50, 100], views
    # each variant's HPA range is the pure function's for its share: the candidate's is
    # never behind the traffic it takes (sized first, then the weight moves; before the
    # next step it is sized for that one), and in each step both were exactly the
    # function's for the step's weights
    spec = parse_spec(body["spec"])
    baseline = 2  # the stable's replicas when the rollout began (its HPA's minimum)
    during: dict[int, list[dict[str, tuple[int, int]]]] = {}
    for view in views:
        weights = view["weights"]
        if not weights or not weights.get("candidate") or "candidate" not in view["hpa"]:
            continue
        needed = variant_range(spec, False, weights["candidate"], baseline)
        assert view["hpa"]["candidate"] >= needed, views
        during.setdefault(weights["candidate"], []).append(view["hpa"])
    for weight in (20, 50):
        expected = {
            "candidate": variant_range(spec, False, weight, baseline),
            # stable keeps all of the baseline as its floor while a rollback is possible
            "stable": variant_range(spec, True, 100 - weight, baseline),
        }
        assert expected in during[weight], views
        assert expected["stable"][0] == baseline
    # the candidate's objects are gone, and so is the old build's ReplicaSet
    wait_for(
        lambda: (
            cluster.owned("minilm")["Deployment"] == ["minilm-stable"]
            and not any(
                n.startswith("minilm-candidate") for n in cluster.owned("minilm")["Service"]
            )
        ),
        SETTLE,
        "the candidate's objects pruned",
    )
    stable = cluster.deployment("minilm-stable")
    assert stable is not None
    assert stable.spec.template.metadata.labels["shipway.io/build"] == "b-2"
    assert stable.spec.template.metadata.annotations["shipway.io/model-version"] == "4"
    wait_for(
        lambda: not (stable_rs & set(cluster.owned("minilm")["ReplicaSet"])),
        SETTLE,
        "the old build's ReplicaSet deleted",
    )
    assert loop.tick("minilm") is None  # finished: nothing left to do


def _record_of(body: dict[str, Any]) -> dict[str, Any]:
    return (body.get("status") or {}).get("rollout") or {}


def test_a_failing_canary_is_rolled_back_and_the_build_reported_not_promoted(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, loop)
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics, errors=0.3),
        lambda b: bool(_record_of(b).get("finished")),
        "the canary rolled back",
    )
    body = cluster.get("minilm")
    status = body["status"]
    assert status["rollout"]["phase"] == "RolledBack"
    assert "error_rate" in status["rollout"]["state"]["reason"]
    assert status["stableBuild"]["id"] == "b-1"
    assert status["weights"] == {"stable": 100, "candidate": 0}
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutRolledBack")
    assert "b-2" in degraded["message"]
    wait_for(
        lambda: cluster.owned("minilm")["Deployment"] == ["minilm-stable"],
        SETTLE,
        "the candidate's Deployment pruned",
    )
    stable = cluster.deployment("minilm-stable")
    assert stable is not None and stable.spec.replicas == 2
    assert stable.spec.template.metadata.labels["shipway.io/build"] == "b-1"
    assert loop.tick("minilm") is None
    # a reconcile (the operator's resync) leaves it so: the spec's build stays rejected
    loop.apply("minilm")
    assert cluster.owned("minilm")["Deployment"] == ["minilm-stable"]


def test_a_new_loop_resumes_mid_rollout_without_repeating_a_step(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    first = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, first)
    _drive(
        first,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: ((b.get("status") or {}).get("weights") or {}).get("candidate") == 50,
        "the canary at 50 %",
    )
    before = cluster.get("minilm")["status"]
    state = from_resource(before["rollout"]).state
    assert state is not None and state.weight == 50
    # another process (a restarted operator): new ports, new clients, the status only
    second = Loop(kube_api, cluster.namespace, metrics)
    after = second.tick("minilm")
    assert after is not None
    resumed = cluster.get("minilm")["status"]
    resumed_state = from_resource(resumed["rollout"]).state
    assert resumed_state is not None
    # from where it was: the same step, or (its interval up meanwhile) the next one;
    # never a step again from the start, never traffic back below 50 %
    assert (resumed_state.step, resumed_state.weight) in (
        (state.step, state.weight),
        (state.step + 1, 100),
    )
    assert resumed["weights"]["candidate"] >= before["weights"]["candidate"]  # no flap
    _drive(
        second,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: bool(_record_of(b).get("finished")),
        "the resumed canary finished",
    )
    assert cluster.get("minilm")["status"]["stableBuild"]["id"] == "b-2"


def test_the_stable_build_back_in_the_spec_ends_the_running_rollout(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, loop)
    cluster.patch_spec("minilm", {"build": resource("x")["spec"]["build"]})
    loop.apply("minilm")
    assert loop.tick("minilm") is None
    record = _record(cluster, "minilm")
    assert record["phase"] == "Failed" and record["finished"] is True
    assert "spec.build changed" in record["state"]["reason"]

    _wait_ready(cluster, loop, "Ready again with the stable build")
    wait_for(
        lambda: cluster.owned("minilm")["Deployment"] == ["minilm-stable"],
        SETTLE,
        "the candidate's Deployment pruned",
    )


GATEWAY_API = {
    "split": "weighted",
    "provider": "gateway-api",
    "gatewayAPI": {"parentRefs": [{"name": "edge", "namespace": "gateway-system"}]},
}


def _route_weights(cluster: Cluster, kube_api: client.ApiClient) -> dict[str, int]:
    route = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", cluster.namespace, "httproutes", "minilm"
    )
    weights: dict[str, int] = {}
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs") or []:
            weights[ref["name"]] = max(weights.get(ref["name"], 0), ref.get("weight", 1))
    return weights


def test_a_gateway_api_routed_canary_moves_the_httproute_and_rolls_back_off_it(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, loop, routing=GATEWAY_API)
    # made by the reconcile at stable 100 %, attached to the named Gateway
    assert _route_weights(cluster, kube_api).get("minilm-stable")
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: ((b.get("status") or {}).get("weights") or {}).get("candidate") == 50,
        "the canary at 50 %",
    )
    weights = _route_weights(cluster, kube_api)
    assert (weights["minilm-stable"], weights["minilm-candidate"]) == (50, 50)
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics, errors=0.5),
        lambda b: bool(_record_of(b).get("finished")),
        "the canary rolled back",
    )
    # the route no longer sends anything to the candidate's Service, which is gone
    weights = _route_weights(cluster, kube_api)
    assert not weights.get("minilm-candidate"), weights
    wait_for(
        lambda: cluster.service("minilm-candidate") is None, SETTLE, "candidate Service pruned"
    )
    # routing moved back to the Shipway gateway: the route goes with it
    cluster.custom.patch_namespaced_custom_object(
        "shipway.io",
        "v1alpha1",
        cluster.namespace,
        "modeldeployments",
        "minilm",
        {"spec": {"routing": {"provider": "shipway-gateway", "gatewayAPI": None}}},
    )
    loop.apply("minilm")
    routes = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", cluster.namespace, "httproutes"
    )
    assert routes["items"] == []


def _annotate(cluster: Cluster, name: str, annotations: dict[str, str | None]) -> None:
    cluster.custom.patch_namespaced_custom_object(
        "shipway.io",
        "v1alpha1",
        cluster.namespace,
        "modeldeployments",
        name,
        {"metadata": {"annotations": annotations}},
    )


def test_annotations_pause_resume_approve_a_gate_and_abort(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    gated = {"strategy": "canary", "canary": {**CANARY["canary"], "gates": [1]}}
    _start(cluster, loop, rollout=gated)

    def phase(body: dict[str, Any]) -> str:
        return (_record_of(body).get("state") or {}).get("phase", "")

    _drive(loop, cluster, "minilm", _serve(metrics), lambda b: phase(b) == "WaitingGate", "gate")
    assert loop.tick("minilm") is None  # waiting for a person: off the loop's schedule
    _annotate(cluster, "minilm", {"shipway.io/approved-step": "1"})
    _drive(loop, cluster, "minilm", _serve(metrics), lambda b: phase(b) != "WaitingGate", "go")
    _annotate(cluster, "minilm", {"shipway.io/paused": "true"})
    _drive(loop, cluster, "minilm", _serve(metrics), lambda b: phase(b) == "Paused", "paused")
    weight = cluster.get("minilm")["status"]["weights"]["candidate"]
    assert loop.tick("minilm") is None and loop.tick("minilm") is None  # stays paused
    assert cluster.get("minilm")["status"]["weights"]["candidate"] == weight
    _annotate(cluster, "minilm", {"shipway.io/paused": None})  # removed: resume
    _drive(loop, cluster, "minilm", _serve(metrics), lambda b: phase(b) != "Paused", "resumed")
    _annotate(cluster, "minilm", {"shipway.io/abort": "b-2"})
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: bool(_record_of(b).get("finished")),
        "aborted",
    )
    record = _record(cluster, "minilm")
    assert record["phase"] == "RolledBack" and "aborted" in record["state"]["reason"]
    assert cluster.get("minilm")["status"]["stableBuild"]["id"] == "b-1"
