"""The in-cluster gateway's routing table from Kubernetes objects (pure, plain dicts)."""

from __future__ import annotations

from typing import Any

import pytest

from shipway.builds.accuracy import AgreementRule
from shipway.gateway.kube_routes import (
    endpoint_slice_fields,
    model_deployment_fields,
    pod_fields,
    routing_table,
)
from shipway.gateway.routing import ReplicaRoute


def md(name: str = "fraud", *, spec: dict[str, Any] | None = None, **status: Any) -> dict:
    body: dict[str, Any] = {
        "apiVersion": "shipway.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml", "generation": 2},
        "spec": spec or {"build": {"id": "b-1", "modelRepository": "s3://m/b-1"}},
    }
    if status:
        body["status"] = status
    return body


def endpoint(
    ip: str, pod: str | None = None, *, ready: bool | None = True, serving: bool = True,
    terminating: bool = False,
) -> dict[str, Any]:  # fmt: skip
    conditions: dict[str, Any] = {"serving": serving, "terminating": terminating}
    if ready is not None:
        conditions["ready"] = ready
    item: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if pod:
        item["targetRef"] = {"kind": "Pod", "namespace": "ml", "name": pod}
    return item


def eps(service: str, *endpoints: dict[str, Any], name: str | None = None, **meta: Any) -> dict:
    return {
        "metadata": {
            "name": name or f"{service}-abcde",
            "namespace": "ml",
            "labels": {"kubernetes.io/service-name": service},
            **meta,
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "grpc", "port": 8001, "protocol": "TCP"},
            {"name": "http", "port": 8000, "protocol": "TCP"},
            {"name": "metrics", "port": 8002, "protocol": "TCP"},
        ],
        "endpoints": list(endpoints),
    }


def pod(name: str, model: str | None = None, version: str | None = None) -> dict[str, Any]:
    annotations = {"prometheus.io/scrape": "true"}
    if model is not None:
        annotations["shipway.io/triton-model"] = model
    if version is not None:
        annotations["shipway.io/model-version"] = version
    return {"metadata": {"name": name, "namespace": "ml", "annotations": annotations}}


STABLE_BUILD = {"id": "b-1", "modelRepository": "s3://m/b-1", "tritonModelName": "fraud_b1"}
CANDIDATE_BUILD = {
    "id": "b-2",
    "modelRepository": "s3://m/b-2",
    "tritonModelName": "fraud_b2",
    "modelVersion": 4,
}


def test_only_ready_endpoints_are_replicas_not_ready_nor_terminating_ones() -> None:
    slices = [
        eps(
            "fraud-stable",
            endpoint("10.244.0.5", "p5"),
            endpoint("10.244.0.6", "p6", ready=False, serving=False),  # starting
            endpoint("10.244.0.7", "p7", ready=False, serving=True, terminating=True),
            endpoint("10.244.0.8", "p8", ready=True, terminating=True),  # publishNotReady
        )
    ]
    table = routing_table([md(stableBuild=STABLE_BUILD)], slices, [])
    (stable,) = table.deployments["fraud"].variants
    assert [r.url for r in stable.replicas] == ["http://10.244.0.5:8000"]


def test_an_unset_ready_condition_means_ready_as_the_api_defines_it() -> None:
    slices = [eps("fraud-stable", endpoint("10.244.0.5", "p5", ready=None))]
    (stable,) = routing_table([md()], slices, []).deployments["fraud"].variants
    assert [r.url for r in stable.replicas] == ["http://10.244.0.5:8000"]


def test_replicas_of_every_slice_of_a_service_ordered_and_deduplicated() -> None:
    slices = [
        eps("fraud-stable", endpoint("10.244.0.9", "p9"), endpoint("10.244.0.3", "p3"), name="a"),
        eps("fraud-stable", endpoint("10.244.0.1", "p1"), endpoint("10.244.0.3", "p3"), name="b"),
        eps("other-stable", endpoint("10.244.0.2", "p2"), name="c"),  # another deployment's
    ]
    table = routing_table([md()], slices, [])
    (stable,) = table.deployments["fraud"].variants
    assert [r.url for r in stable.replicas] == [
        "http://10.244.0.1:8000",
        "http://10.244.0.3:8000",
        "http://10.244.0.9:8000",
    ]
    # the same objects in another order: the same table
    assert routing_table([md()], list(reversed(slices)), []) == table


def test_the_port_named_http_and_ipv6_addresses_in_brackets() -> None:
    item = eps("fraud-stable", endpoint("fd00::7", "p7"))
    item["addressType"] = "IPv6"
    item["ports"] = [{"name": "http", "port": 18000}]
    no_http = eps("fraud-stable", endpoint("10.244.0.4", "p4"), name="x")
    no_http["ports"] = [{"name": "grpc", "port": 8001}]
    (stable,) = routing_table([md()], [item, no_http], []).deployments["fraud"].variants
    assert [r.url for r in stable.replicas] == ["http://[fd00::7]:18000"]


def test_missing_status_routes_stable_alone_at_full_weight_with_defaults() -> None:
    slices = [eps("fraud-stable", endpoint("10.244.0.5", "p5"))]
    table = routing_table([md()], slices, [pod("p5")])
    route = table.deployments["fraud"]
    (stable,) = route.variants
    assert (stable.name, stable.weight, stable.shadow_share) == ("stable", 100, 0.0)
    assert stable.agreement == AgreementRule()
    assert stable.replicas == (ReplicaRoute("http://10.244.0.5:8000", "fraud", None),)
    assert (route.sticky, route.sticky_header) == (False, "x-shipway-key")
    assert route.serving() == (stable,)


def test_weights_builds_and_the_candidates_variant_name() -> None:
    slices = [
        eps("fraud-stable", endpoint("10.244.0.5", "p5")),
        eps("fraud-candidate", endpoint("10.244.0.6", "p6")),
    ]
    body = md(
        stableBuild=STABLE_BUILD,
        candidateBuild={
            **CANDIDATE_BUILD,
            "scalarInputs": ["threshold"],
            "scalarOutputs": ["score", 7],
            "outputKinds": {"probs": "class-scores", "emb": "embedding", "x": "bogus"},
        },
        weights={"stable": 75, "candidate": 25},
        routing={"candidateVariant": "challenger", "split": "weighted", "shadowShare": 0},
    )
    route = routing_table([body], slices, []).deployments["fraud"]
    stable, challenger = route.variants
    assert (stable.name, stable.weight) == ("stable", 75)
    assert stable.replicas == (ReplicaRoute("http://10.244.0.5:8000", "fraud_b1", None),)
    assert (challenger.name, challenger.weight) == ("challenger", 25)
    assert challenger.replicas == (ReplicaRoute("http://10.244.0.6:8000", "fraud_b2", 4),)
    assert challenger.scalar_inputs == frozenset({"threshold"})
    assert challenger.scalar_outputs == frozenset({"score"})
    assert challenger.output_kinds == (("emb", "embedding"), ("probs", "class-scores"))


def test_the_candidate_is_called_canary_by_default() -> None:
    body = md(candidateBuild=CANDIDATE_BUILD, weights={"stable": 95, "candidate": 5})
    route = routing_table([body], [], []).deployments["fraud"]
    assert [(v.name, v.weight) for v in route.variants] == [("stable", 95), ("canary", 5)]


def test_a_candidate_without_a_candidate_build_is_not_routed() -> None:
    slices = [eps("fraud-candidate", endpoint("10.244.0.6", "p6"))]
    body = md(weights={"stable": 50, "candidate": 50}, routing={"candidateVariant": "canary"})
    route = routing_table([body], slices, []).deployments["fraud"]
    assert [v.name for v in route.variants] == ["stable"]


def test_sticky_from_status_routing_else_from_the_spec_and_the_sticky_header() -> None:
    spec = {"build": {"id": "b-1"}, "routing": {"split": "sticky", "stickyHeader": "x-user"}}
    from_spec = routing_table([md(spec=spec)], [], []).deployments["fraud"]
    assert (from_spec.sticky, from_spec.sticky_header) == (True, "x-user")
    overridden = md(spec=spec, routing={"split": "weighted"})
    assert routing_table([overridden], [], []).deployments["fraud"].sticky is False
    experiment = md(routing={"split": "sticky", "candidateVariant": "challenger"})
    route = routing_table([experiment], [], []).deployments["fraud"]
    assert (route.sticky, route.sticky_header) == (True, "x-shipway-key")


def test_shadow_share_and_agreement_rule_of_the_candidate() -> None:
    rule = AgreementRule(0.95, class_scores=frozenset({"probs"}), batched=False)
    body = md(
        candidateBuild={**CANDIDATE_BUILD, "agreement": rule.to_dict()},
        weights={"stable": 100, "candidate": 0},
        routing={"shadowShare": 0.25},
    )
    slices = [
        eps("fraud-stable", endpoint("10.244.0.5", "p5")),
        eps("fraud-candidate", endpoint("10.244.0.6", "p6")),
    ]
    route = routing_table([body], slices, []).deployments["fraud"]
    stable, canary = route.variants
    assert (canary.weight, canary.shadow_share, canary.agreement) == (0, 0.25, rule)
    assert route.shadows() == (canary,)
    assert route.serving() == (stable,)


@pytest.mark.parametrize(
    "agreement",
    [
        {"min_cosine": 7},  # out of range
        {"threshold": 0.9},  # unknown field
        {"class_scores": "probs"},  # not a list
        {"scales": ["x"]},  # not a map
        "0.99",  # not an object
    ],
)
def test_a_bad_agreement_rule_falls_back_to_the_default(agreement: object) -> None:
    body = md(candidateBuild={**CANDIDATE_BUILD, "agreement": agreement})
    _, canary = routing_table([body], [], []).deployments["fraud"].variants
    assert canary.agreement == AgreementRule()


def test_bad_status_values_fall_back_to_defaults() -> None:
    body = md(
        stableBuild="b-1",
        candidateBuild={**CANDIDATE_BUILD, "modelVersion": "four", "scalarInputs": "x"},
        weights={"stable": "lots", "candidate": 250},
        routing={"candidateVariant": "stable", "split": 3, "shadowShare": float("nan")},
    )
    route = routing_table([body], [], []).deployments["fraud"]
    stable, candidate = route.variants
    assert (stable.name, stable.weight) == ("stable", 100)
    assert (candidate.name, candidate.weight, candidate.shadow_share) == ("canary", 100, 0.0)
    assert candidate.scalar_inputs == frozenset()
    assert route.sticky is False
    listed_status = {**md(), "status": ["weights"]}  # not an object: as no status
    nameless = [{"metadata": {}}, {"spec": []}]
    assert routing_table([*nameless, listed_status], [], []) == routing_table([md()], [], [])


def test_pod_annotations_name_each_replicas_model_and_version() -> None:
    """During a build change a variant's old pods serve the old build: each replica's
    model and version are its own pod's, the build's only when the pod does not say."""
    slices = [
        eps(
            "fraud-stable",
            endpoint("10.244.0.5", "old"),
            endpoint("10.244.0.6", "new"),
            endpoint("10.244.0.7", "bare"),
            endpoint("10.244.0.8", "unseen"),
            endpoint("10.244.0.9"),  # no targetRef
        )
    ]
    pods = [
        pod("old", "fraud_b0", "2"),
        pod("new", "fraud_b1", "3"),
        pod("bare"),
        pod("bad", "x", "v3"),
        pod("odd", "y", "³"),  # a digit to str.isdigit, not to int()
    ]
    body = md(stableBuild={**STABLE_BUILD, "modelVersion": "3"})
    (stable,) = routing_table([body], slices, pods).deployments["fraud"].variants
    assert stable.replicas == (
        ReplicaRoute("http://10.244.0.5:8000", "fraud_b0", 2),
        ReplicaRoute("http://10.244.0.6:8000", "fraud_b1", 3),
        ReplicaRoute("http://10.244.0.7:8000", "fraud_b1", 3),
        ReplicaRoute("http://10.244.0.8:8000", "fraud_b1", 3),
        ReplicaRoute("http://10.244.0.9:8000", "fraud_b1", 3),
    )
    versions = routing_table([body], slices, pods).deployments["fraud"].versions()
    assert versions == (2, 3)
    bad = [eps("fraud-stable", endpoint("10.244.0.5", "bad"), endpoint("10.244.0.6", "odd"))]
    (stable,) = routing_table([md()], bad, pods).deployments["fraud"].variants
    assert stable.replicas == (
        ReplicaRoute("http://10.244.0.5:8000", "x", None),
        ReplicaRoute("http://10.244.0.6:8000", "y", None),
    )


def test_the_deployments_annotation_names_the_model_when_nothing_else_does() -> None:
    body = md()
    body["metadata"]["annotations"] = {"shipway.io/triton-model": "fraud_model"}
    slices = [eps("fraud-stable", endpoint("10.244.0.5", "p5"))]
    (stable,) = routing_table([body], slices, []).deployments["fraud"].variants
    assert stable.replicas[0].triton_model_name == "fraud_model"


def test_resources_being_deleted_are_skipped() -> None:
    gone = {"deletionTimestamp": "2026-11-30T10:00:00Z"}
    leaving = md("leaving")
    leaving["metadata"].update(gone)
    slices = [
        eps("fraud-stable", endpoint("10.244.0.5", "p5"), name="kept"),
        eps("fraud-stable", endpoint("10.244.0.6", "p6"), name="old", **gone),
    ]
    table = routing_table([leaving, md()], slices, [])
    assert list(table.deployments) == ["fraud"]
    (stable,) = table.deployments["fraud"].variants
    assert [r.url for r in stable.replicas] == ["http://10.244.0.5:8000"]


def test_deployments_are_keyed_by_name_in_order() -> None:
    table = routing_table([md("zeta"), md("alpha"), md("mid")], [], [])
    assert list(table.deployments) == ["alpha", "mid", "zeta"]
    assert table.get("alpha") is not None and table.get("ml") is None


def test_the_kept_fields_build_the_same_table_as_whole_objects() -> None:
    """The watch keeps only what the builder reads: no route may depend on a dropped field."""
    body = md(
        stableBuild=STABLE_BUILD,
        candidateBuild={**CANDIDATE_BUILD, "agreement": {"min_cosine": 0.9}},
        weights={"stable": 80, "candidate": 20},
        routing={"candidateVariant": "canary", "shadowShare": 0.5},
        conditions=[{"type": "Ready", "status": "True"}],
        lastAnalysis={"at": "now"},
    )
    body["spec"]["routing"] = {"split": "sticky", "stickyHeader": "x-k"}
    body["metadata"]["annotations"] = {"shipway.io/triton-model": "m"}
    slices = [
        eps(
            "fraud-stable", endpoint("10.244.0.5", "p5"), endpoint("10.244.0.6", "p6", ready=False)
        ),
        eps("fraud-candidate", endpoint("10.244.0.7", "p7")),
    ]
    pods = [pod("p5", "a", "1"), pod("p7", "b", "2")]
    whole = routing_table([body], slices, pods)
    kept = routing_table(
        [model_deployment_fields(body)],
        [endpoint_slice_fields(s) for s in slices],
        [pod_fields(p) for p in pods],
    )
    assert kept == whole
    assert [len(v.replicas) for v in whole.deployments["fraud"].variants] == [1, 1]
    assert "conditions" not in model_deployment_fields(body)["status"]
