"""The HTTPRoute builder and the refusals of Gateway API routing (pure; the objects are
proved against the real API server in tests/integration/operator/test_httproute.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shipway_operator.httproute import (
    STATE_ANNOTATION,
    RouteState,
    RoutingMode,
    Served,
    Unexpressible,
    http_route,
    routing_mode,
    served_models,
    unsupported,
)
from shipway_operator.routing_spec import COHORT_HEADER, GatewayAPIRouting, ParentRef
from shipway_operator.spec import Spec, Variant, parse_spec

from .conftest import OWNER, base_spec

GATEWAY = GatewayAPIRouting(parent_refs=(ParentRef(name="edge", namespace="infra"),))
GATEWAY_API = RoutingMode(provider="gateway-api", gateway_api=GATEWAY)
SAME = {Variant.STABLE: Served("minilm_b1", 3), Variant.CANDIDATE: Served("minilm_b1", 4)}


def spec(**changes: Any) -> Spec:
    return parse_spec(base_spec(**changes))


def route(state: RouteState, served: dict[Variant, Served] | None = None) -> dict[str, Any]:
    return http_route(OWNER, spec(), GATEWAY, state, SAME if served is None else served)


def main_rule(manifest: dict[str, Any]) -> dict[str, Any]:
    """The rule matching every request to the deployment (no header, no version)."""
    (rule,) = [
        r
        for r in manifest["spec"]["rules"]
        if r["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/models/minilm"}}]
    ]
    return rule


def weights(rule: dict[str, Any]) -> dict[str, int]:
    return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}


def filters(rule: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in rule.get("filters", []) if f["type"] == kind]


# ---- the builder -------------------------------------------------------------------------


def test_the_route_is_named_owned_and_attached_as_configured() -> None:
    gateway = GatewayAPIRouting(
        parent_refs=(ParentRef(name="edge", namespace="infra", section_name="https"),),
        hostnames=("models.example.com",),
    )
    manifest = http_route(OWNER, spec(), gateway, RouteState(), SAME)
    assert manifest["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert manifest["kind"] == "HTTPRoute"
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("minilm", "models")
    (ref,) = meta["ownerReferences"]
    assert ref["uid"] == OWNER.uid and ref["controller"] is True
    assert meta["labels"]["shipway.io/deployment"] == "minilm"
    assert manifest["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "infra",
            "sectionName": "https",
        }
    ]
    assert manifest["spec"]["hostnames"] == ["models.example.com"]


def test_weights_become_backend_weights_of_the_variant_services() -> None:
    alone = main_rule(route(RouteState()))
    assert weights(alone) == {"minilm-stable": 100}  # no candidate: no reference to one
    assert all(ref["port"] == 8000 and ref["kind"] == "Service" for ref in alone["backendRefs"])
    canary = main_rule(route(RouteState(75, 25, "canary")))
    assert weights(canary) == {"minilm-stable": 75, "minilm-candidate": 25}
    assert not filters(canary, "RequestMirror")


def test_the_path_is_rewritten_to_the_triton_model_name_only_when_it_differs() -> None:
    rule = main_rule(route(RouteState(90, 10, "canary")))
    assert filters(rule, "URLRewrite") == [
        {
            "type": "URLRewrite",
            "urlRewrite": {
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2/models/minilm_b1"}
            },
        }
    ]
    named = {Variant.STABLE: Served("minilm"), Variant.CANDIDATE: Served("minilm")}
    assert "filters" not in main_rule(route(RouteState(90, 10, "canary"), named))


def test_builds_named_differently_in_triton_are_rewritten_per_backend() -> None:
    served = {Variant.STABLE: Served("m_b1"), Variant.CANDIDATE: Served("m_b2")}
    rule = main_rule(route(RouteState(90, 10, "canary"), served))
    assert "filters" not in rule  # no rewrite common to both
    prefixes = {
        ref["name"]: ref["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"]
        for ref in rule["backendRefs"]
    }
    assert prefixes == {"minilm-stable": "/v2/models/m_b1", "minilm-candidate": "/v2/models/m_b2"}


def test_a_shadow_is_a_mirror_to_the_candidate_after_the_rewrite() -> None:
    rule = main_rule(route(RouteState(100, 0, "canary", shadow_share=0.25)))
    assert [f["type"] for f in rule["filters"]] == ["URLRewrite", "RequestMirror"]
    (mirror,) = filters(rule, "RequestMirror")
    assert mirror["requestMirror"] == {
        "backendRef": {"group": "", "kind": "Service", "name": "minilm-candidate", "port": 8000},
        "percent": 25,
    }
    assert weights(rule) == {"minilm-stable": 100, "minilm-candidate": 0}


def test_a_share_that_is_no_whole_percent_is_a_fraction() -> None:
    (mirror,) = filters(
        main_rule(route(RouteState(100, 0, "canary", shadow_share=0.125))), "RequestMirror"
    )
    assert mirror["requestMirror"]["fraction"] == {"numerator": 1250, "denominator": 10_000}
    assert "percent" not in mirror["requestMirror"]
    (everything,) = filters(
        main_rule(route(RouteState(100, 0, "canary", shadow_share=1.0))), "RequestMirror"
    )
    assert everything["requestMirror"]["percent"] == 100


def test_no_shadow_no_mirror() -> None:
    assert not filters(main_rule(route(RouteState(100, 0, "canary"))), "RequestMirror")


def test_a_shadow_between_differently_named_builds_is_refused() -> None:
    served = {Variant.STABLE: Served("m_b1"), Variant.CANDIDATE: Served("m_b2")}
    with pytest.raises(Unexpressible, match="share a Triton model name"):
        route(RouteState(100, 0, "canary", shadow_share=0.5), served)


def test_a_sticky_split_routes_named_cohorts_by_a_header_match() -> None:
    manifest = route(RouteState(50, 50, "challenger", sticky=True))
    cohorts = {
        r["matches"][0]["headers"][0]["value"]: r
        for r in manifest["spec"]["rules"]
        if "headers" in r["matches"][0]
    }
    assert set(cohorts) == {"stable", "challenger"}
    for value, service in (("stable", "minilm-stable"), ("challenger", "minilm-candidate")):
        rule = cohorts[value]
        assert rule["matches"][0]["headers"] == [
            {"type": "Exact", "name": COHORT_HEADER, "value": value}
        ]
        assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v2/models/minilm"}
        assert [ref["name"] for ref in rule["backendRefs"]] == [service]
    # requests without the header: drawn by the weights
    assert weights(main_rule(manifest)) == {"minilm-stable": 50, "minilm-candidate": 50}
    # weighted again: no cohort rules
    unstuck = route(RouteState(50, 50, "challenger", sticky=False))
    assert not any("headers" in r["matches"][0] for r in unstuck["spec"]["rules"])


def test_a_registered_version_is_routed_to_the_live_variants_serving_it() -> None:
    manifest = route(RouteState(80, 20, "canary"))
    pinned = {
        r["matches"][0]["path"]["value"]: r
        for r in manifest["spec"]["rules"]
        if "/versions/" in r["matches"][0]["path"]["value"]
    }
    assert set(pinned) == {"/v2/models/minilm/versions/3", "/v2/models/minilm/versions/4"}
    three = pinned["/v2/models/minilm/versions/3"]
    assert [ref["name"] for ref in three["backendRefs"]] == ["minilm-stable"]
    # Triton serves its own version 1 of the model: the registered version is dropped
    assert three["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"] == (
        "/v2/models/minilm_b1"
    )
    # a candidate taking no live traffic (shadow) serves no pinned version
    shadowed = route(RouteState(100, 0, "canary", shadow_share=0.5))
    paths = [r["matches"][0]["path"]["value"] for r in shadowed["spec"]["rules"]]
    assert "/v2/models/minilm/versions/4" not in paths


def test_the_state_rides_on_the_route_and_reads_back() -> None:
    state = RouteState(60, 40, "challenger", sticky=True, shadow_share=0.0)
    manifest = route(state)
    assert RouteState.from_annotation(manifest["metadata"]["annotations"][STATE_ANNOTATION]) == (
        state
    )
    assert RouteState.from_annotation(None) == RouteState()
    assert RouteState.from_annotation("{not json") == RouteState()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stable": 90, "candidate_weight": 20, "candidate": "canary"}, "sum to 100"),
        ({"stable": 110, "candidate_weight": -10, "candidate": "canary"}, "within"),
        ({"stable": 90, "candidate_weight": 10}, "needs a candidate"),
        ({"candidate": "canary", "shadow_share": 1.5}, "shadow share"),
    ],
)
def test_bad_values_are_refused_with_a_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteState(**kwargs)


def test_served_models_come_from_the_builds_in_status() -> None:
    body = {
        "metadata": {"name": "minilm", "annotations": {"shipway.io/triton-model": "mini"}},
        "status": {
            "stableBuild": {"id": "b-1", "tritonModelName": "minilm_b1", "modelVersion": "3"},
            "candidateBuild": {"id": "b-2", "modelVersion": 4},
        },
    }
    assert served_models(body) == {
        Variant.STABLE: Served("minilm_b1", 3),
        Variant.CANDIDATE: Served("mini", 4),  # no name recorded: the annotation's
    }
    bare = served_models({"metadata": {"name": "minilm"}})
    assert bare[Variant.STABLE] == Served("minilm", None)


# ---- the spec's routing choice and the refusals -----------------------------------------


def test_the_routing_mode_is_read_from_the_raw_spec() -> None:
    raw = base_spec(
        routing={
            "provider": "gateway-api",
            "gatewayAPI": {"parentRefs": [{"name": "edge", "sectionName": "http"}]},
        }
    )
    mode = routing_mode(raw)
    assert mode.provider == "gateway-api"
    assert mode.gateway_api is not None
    assert mode.gateway_api.parent_refs == (ParentRef(name="edge", section_name="http"),)
    assert mode.gateway_api.cohort_header == COHORT_HEADER
    assert routing_mode(base_spec()).provider == "shipway-gateway"
    with pytest.raises(Unexpressible, match=r"spec\.routing\.provider"):
        routing_mode(base_spec(routing={"provider": "nginx"}))
    with pytest.raises(Unexpressible, match=r"spec\.routing\.gatewayAPI\.parentRefs"):
        routing_mode(
            base_spec(routing={"provider": "gateway-api", "gatewayAPI": {"parentRefs": []}})
        )


def test_a_canary_with_weights_only_is_supported() -> None:
    assert unsupported(spec(), GATEWAY_API) == []
    experiment = spec(rollout={"strategy": "experiment", "experiment": {"weight": 50}})
    assert unsupported(experiment, GATEWAY_API) == []  # split by named cohorts


def test_the_shipway_gateway_refuses_nothing_here() -> None:
    shadowed = spec(rollout={"canary": {"shadow": {"share": 0.5}}}, routing={"split": "sticky"})
    assert unsupported(shadowed) == []  # spec.routing's provider: the default
    assert unsupported(shadowed, RoutingMode()) == []


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        (
            {"rollout": {"canary": {"shadow": {"share": 0.5}}}},
            "spec.rollout.canary.shadow",
            "agreement",
        ),
        ({"routing": {"split": "sticky"}}, "spec.routing.split", "cannot hash"),
        (
            {"rollout": {"canary": {"thresholds": {"maxDriftScore": 0.2}}}},
            "spec.rollout.canary.thresholds.maxDriftScore",
            "samples nothing",
        ),
        ({"drift": {"actions": ["alert", "rollback"]}}, "spec.drift.actions", "never"),
    ],
)
def test_what_an_httproute_cannot_express_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    (message,) = unsupported(spec(**changes), GATEWAY_API)
    assert message.startswith(field + ":")
    assert reason in message
    assert "shipway-gateway" in message  # the way out


def test_the_choice_is_read_from_spec_routing() -> None:
    routed = spec(
        routing={
            "provider": "gateway-api",
            "split": "sticky",
            "gatewayAPI": {"parentRefs": [{"name": "edge"}]},
        }
    )
    (message,) = unsupported(routed)
    assert message.startswith("spec.routing.split:")


def test_gateway_api_routing_without_a_gateway_is_refused() -> None:
    (message,) = unsupported(spec(), RoutingMode(provider="gateway-api"))
    assert message.startswith("spec.routing.gatewayAPI.parentRefs:")


def test_every_refusal_is_reported_at_once() -> None:
    everything = spec(
        routing={"split": "sticky"},
        rollout={"canary": {"shadow": {"share": 1.0}, "thresholds": {"maxDriftScore": 0.1}}},
        drift={"actions": ["webhook"], "webhookURL": "https://hooks.test/x"},
    )
    fields = [m.split(":")[0] for m in unsupported(everything, GATEWAY_API)]
    assert fields == [
        "spec.routing.split",
        "spec.rollout.canary.shadow",
        "spec.rollout.canary.thresholds.maxDriftScore",
        "spec.drift.actions",
    ]
