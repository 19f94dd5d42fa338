"""Gateway API routing against the real API server of the test cluster (tests/kube), with
the Gateway API v1.6.3 standard-channel CRDs the ``kube_cluster`` fixture installs.

No Gateway API implementation (controller) runs here: these tests prove the objects —
that every HTTPRoute the builder makes is admitted by the real CRD (schema and CEL
rules, dry run then apply) and stored as built (nothing pruned), and that the
``GatewayAPIRouter`` adapter, driven by the port's calls and by the real rollout
controller, leaves the stored route with the weights, mirror and cohort matches asked,
idempotently — not the data path through a gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shipway.rollout.canary import CanarySpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.controller import Controller, Event, new_status
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.ports import Ports
from shipway.rollout.state import Phase
from shipway.rollout.status import STABLE, RolloutStatus
from shipway.rollout.testing import FakeAliases, FakeMetrics, FakePlacement, FakeWorld
from shipway_operator.httproute import (
    GATEWAY_API_VERSION,
    ROUTE_KIND,
    TRITON_MODEL_ANNOTATION,
    GatewayAPIRouter,
    RouteNotOwned,
    RouteState,
    Served,
    Unexpressible,
    http_route,
    unsupported,
)
from shipway_operator.kube import Kube
from shipway_operator.manifests import MANAGER, Owner
from shipway_operator.routing_spec import COHORT_HEADER, GatewayAPIRouting, ParentRef
from shipway_operator.spec import InvalidSpec, Variant, parse_spec

from .conftest import GROUP, PLURAL, VERSION, resource

pytestmark = pytest.mark.integration

GATEWAY = GatewayAPIRouting(
    parent_refs=(ParentRef(name="edge", namespace="infra", section_name="http"),),
    hostnames=("models.example.com",),
)
NAME = "minilm"


@pytest.fixture
def kube(kube_api: client.ApiClient) -> Kube:
    return Kube(kube_api)


@pytest.fixture
def owner_body(kube_api: client.ApiClient, kube_namespace: str) -> dict[str, Any]:
    """A ModelDeployment (no operator runs: only its uid, spec and metadata matter here)
    whose Triton knows the model as ``minilm_b1`` (its ``shipway.io/triton-model``
    annotation: the CRD's status does not keep a build's ``tritonModelName`` yet, so the
    names per build are proved on the builder's routes below)."""
    body = resource(NAME)
    body["metadata"]["annotations"] = {TRITON_MODEL_ANNOTATION: "minilm_b1"}
    return client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, kube_namespace, PLURAL, body
    )


def stored_route(kube: Kube, namespace: str, name: str = NAME) -> dict[str, Any]:
    live = kube.get(GATEWAY_API_VERSION, ROUTE_KIND, namespace, name)
    assert live is not None, f"HTTPRoute {namespace}/{name} missing"
    return live


def main_rule(route: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    (rule,) = [
        r
        for r in route["spec"]["rules"]
        if r["matches"] == [{"path": {"type": "PathPrefix", "value": f"/v2/models/{name}"}}]
    ]
    return rule


def live_weights(route: dict[str, Any], name: str = NAME) -> dict[str, int]:
    """The main rule's backend weights, by Service."""
    return {ref["name"]: ref["weight"] for ref in main_rule(route, name)["backendRefs"]}


def mirror(route: dict[str, Any]) -> dict[str, Any] | None:
    found = [f for f in main_rule(route).get("filters", []) if f["type"] == "RequestMirror"]
    return found[0]["requestMirror"] if found else None


def cohorts(route: dict[str, Any]) -> dict[str, list[str]]:
    """Cohort header value -> the Services its rule sends to."""
    out: dict[str, list[str]] = {}
    for rule in route["spec"]["rules"]:
        for match in rule["matches"]:
            for header in match.get("headers", []):
                assert header["name"] == COHORT_HEADER
                out[header["value"]] = [ref["name"] for ref in rule["backendRefs"]]
    return out


def missing_from(built: Any, stored: Any, path: str = "") -> list[str]:
    """Where ``stored`` lacks or changed what ``built`` holds (the server may add
    defaults, never drop or alter a built field)."""
    if isinstance(built, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        return [
            gap
            for key, value in built.items()
            for gap in missing_from(value, stored.get(key), f"{path}.{key}")
        ]
    if isinstance(built, list):
        if not isinstance(stored, list) or len(stored) != len(built):
            return [path]
        return [
            gap
            for i, (b, s) in enumerate(zip(built, stored, strict=True))
            for gap in missing_from(b, s, f"{path}[{i}]")
        ]
    return [] if built == stored else [f"{path}: built {built!r}, stored {stored!r}"]


SAME = {Variant.STABLE: Served("minilm_b1", 3), Variant.CANDIDATE: Served("minilm_b1", 4)}
RENAMED = {Variant.STABLE: Served("minilm_b1", 3), Variant.CANDIDATE: Served("minilm_b2", 4)}
ROUTES: list[tuple[str, RouteState, dict[Variant, Served]]] = [
    ("stable alone", RouteState(), SAME),
    ("canary at 5", RouteState(95, 5, "canary"), SAME),
    ("canary at 100", RouteState(0, 100, "canary"), SAME),
    ("shadow, whole percent", RouteState(100, 0, "canary", shadow_share=0.5), SAME),
    ("shadow, a fraction", RouteState(100, 0, "canary", shadow_share=0.0125), SAME),
    ("experiment, cohorts", RouteState(50, 50, "challenger", sticky=True), SAME),
    ("builds named apart", RouteState(70, 30, "canary"), RENAMED),
    ("named apart, cohorts", RouteState(50, 50, "challenger", sticky=True), RENAMED),
    (
        "one version, two names",
        RouteState(60, 40, "canary"),
        {
            Variant.STABLE: Served("minilm_b1", 3),
            Variant.CANDIDATE: Served("minilm_b2", 3),
        },
    ),
]


@pytest.mark.parametrize(("case", "state", "served"), ROUTES, ids=[c for c, _, _ in ROUTES])
def test_every_built_route_is_admitted_and_stored_as_built(
    kube: Kube,
    owner_body: dict[str, Any],
    case: str,
    state: RouteState,
    served: dict[Variant, Served],
) -> None:
    owner = Owner.from_body(owner_body)
    manifest = http_route(owner, parse_spec(owner_body["spec"]), GATEWAY, state, served)
    kube.apply(manifest, dry_run=True)  # the CRD's schema and CEL rules, nothing stored
    assert kube.get(GATEWAY_API_VERSION, ROUTE_KIND, owner.namespace, NAME) is None
    kube.apply(manifest)
    stored = stored_route(kube, owner.namespace)
    assert missing_from(manifest["spec"], stored["spec"]) == []
    assert (
        missing_from(manifest["metadata"]["annotations"], stored["metadata"]["annotations"]) == []
    )
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner.uid


def test_the_crds_rules_do_run_here(kube: Kube, owner_body: dict[str, Any]) -> None:
    """The control for the test above: a route the CRD's CEL rules refuse (a mirror with
    both percent and fraction) is refused by this API server, with the CRD's message."""
    owner = Owner.from_body(owner_body)
    state = RouteState(100, 0, "canary", shadow_share=0.5)
    manifest = http_route(owner, parse_spec(owner_body["spec"]), GATEWAY, state, SAME)
    (filter_,) = [f for f in main_rule(manifest)["filters"] if f["type"] == "RequestMirror"]
    filter_["requestMirror"]["fraction"] = {"numerator": 1, "denominator": 2}
    with pytest.raises(ApiException) as refused:
        kube.apply(manifest, dry_run=True)
    assert refused.value.status == 422
    assert "Only one of percent or fraction" in (refused.value.body or "")


# ---- the adapter -------------------------------------------------------------------------


@pytest.fixture
def router(kube: Kube, kube_namespace: str, owner_body: dict[str, Any]) -> GatewayAPIRouter:
    return GatewayAPIRouter(kube, kube_namespace, default=GATEWAY)


def test_the_router_moves_weights_through_a_canarys_steps(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.refresh(NAME)  # the route exists before any rollout: stable takes everything
    assert live_weights(stored_route(kube, kube_namespace)) == {"minilm-stable": 100}
    router.set_shadow(NAME, "canary", 0.25)
    route = stored_route(kube, kube_namespace)
    assert mirror(route) == {
        "backendRef": {"group": "", "kind": "Service", "name": "minilm-candidate", "port": 8000},
        "percent": 25,
    }
    assert live_weights(route) == {"minilm-stable": 100, "minilm-candidate": 0}
    for weight in (5, 25, 50, 100):  # as Controller.converge calls it at each step
        router.set_shadow(NAME, "canary", 0.0)
        router.set_weights(NAME, {STABLE: 100 - weight, "canary": weight})
        route = stored_route(kube, kube_namespace)
        assert live_weights(route) == {"minilm-stable": 100 - weight, "minilm-candidate": weight}
        assert mirror(route) is None
    router.forget(NAME, "canary")  # the candidate removed: nothing points at its Service
    route = stored_route(kube, kube_namespace)
    assert live_weights(route) == {"minilm-stable": 100}
    assert "minilm-candidate" not in str(route["spec"])


def test_repeating_a_call_changes_nothing(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.set_weights(NAME, {STABLE: 80, "canary": 20})
    router.set_split(NAME, sticky=True)
    before = stored_route(kube, kube_namespace)["metadata"]
    router.set_weights(NAME, {STABLE: 80, "canary": 20})
    router.set_split(NAME, sticky=True)
    router.refresh(NAME)
    after = stored_route(kube, kube_namespace)["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert after["generation"] == before["generation"]
    assert after["managedFields"] == before["managedFields"]
    assert [m["manager"] for m in after["managedFields"]] == [MANAGER]


def test_calls_compose_across_router_instances(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    """The last applied values ride on the route: a restarted operator's new router
    composes with what the old one set."""
    router.set_weights(NAME, {STABLE: 50, "challenger": 50})
    again = GatewayAPIRouter(kube, kube_namespace, default=GATEWAY)
    again.set_split(NAME, sticky=True)
    route = stored_route(kube, kube_namespace)
    assert live_weights(route) == {"minilm-stable": 50, "minilm-candidate": 50}
    assert cohorts(route) == {"stable": ["minilm-stable"], "challenger": ["minilm-candidate"]}
    assert again.state(NAME) == RouteState(50, 50, "challenger", sticky=True)
    again.set_split(NAME, sticky=False)
    assert cohorts(stored_route(kube, kube_namespace)) == {}


def test_the_path_is_rewritten_to_the_triton_model_name(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.set_weights(NAME, {STABLE: 90, "canary": 10})
    (rewrite,) = main_rule(stored_route(kube, kube_namespace))["filters"]
    assert rewrite["urlRewrite"]["path"] == {
        "type": "ReplacePrefixMatch",
        "replacePrefixMatch": "/v2/models/minilm_b1",
    }


def test_refusals_are_clear_and_change_nothing(
    kube: Kube, kube_api: client.ApiClient, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    with pytest.raises(LookupError, match="does not exist"):
        router.set_weights("nobody", {STABLE: 100})
    with pytest.raises(ValueError, match="sum to 100"):
        router.set_weights(NAME, {STABLE: 90, "canary": 20})
    assert kube.get(GATEWAY_API_VERSION, ROUTE_KIND, kube_namespace, NAME) is None
    # a value the builder passes on but the CRD refuses: the API server's message
    bad = GatewayAPIRouter(
        kube,
        kube_namespace,
        default=GatewayAPIRouting(parent_refs=GATEWAY.parent_refs, hostnames=("Not A Host",)),
    )
    with pytest.raises(Unexpressible, match="hostnames"):
        bad.refresh(NAME)
    assert kube.get(GATEWAY_API_VERSION, ROUTE_KIND, kube_namespace, NAME) is None
    # someone else's HTTPRoute of that name is never taken over
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "gateway.networking.k8s.io",
        "v1",
        kube_namespace,
        "httproutes",
        {
            "apiVersion": GATEWAY_API_VERSION,
            "kind": ROUTE_KIND,
            "metadata": {"name": NAME},
            "spec": {"parentRefs": [{"name": "theirs"}]},
        },
    )
    with pytest.raises(RouteNotOwned):
        router.set_weights(NAME, {STABLE: 100})
    assert stored_route(kube, kube_namespace)["spec"]["parentRefs"][0]["name"] == "theirs"


def test_the_route_is_deleted_when_routing_moves_elsewhere(
    kube: Kube, kube_api: client.ApiClient, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.refresh(NAME)
    assert router.delete(NAME)
    assert kube.get(GATEWAY_API_VERSION, ROUTE_KIND, kube_namespace, NAME) is None
    assert not router.delete(NAME)  # none: nothing to do
    theirs = {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": ROUTE_KIND,
        "metadata": {"name": NAME},
        "spec": {"parentRefs": [{"name": "theirs"}]},
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", kube_namespace, "httproutes", theirs
    )
    assert not router.delete(NAME)  # someone else's: left alone
    assert stored_route(kube, kube_namespace)["spec"]["parentRefs"][0]["name"] == "theirs"


# ---- the Router port contract (tests/unit/rollout/test_port_contracts.py), here ----------


def test_contract_weights_are_set_as_asked_and_unknown_variants_ignored(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.set_weights(NAME, {STABLE: 80, "canary": 20})
    assert router.state(NAME) is not None and router.state(NAME).weights() == {  # type: ignore[union-attr]
        STABLE: 80,
        "canary": 20,
    }
    router.set_weights(NAME, {STABLE: 80, "canary": 20})  # idempotent
    assert live_weights(stored_route(kube, kube_namespace)) == {
        "minilm-stable": 80,
        "minilm-candidate": 20,
    }
    router.set_weights(NAME, {STABLE: 0, "canary": 100, "ghost": 0})
    assert live_weights(stored_route(kube, kube_namespace)) == {
        "minilm-stable": 0,
        "minilm-candidate": 100,
    }


def test_contract_a_mirror_share_is_set_and_cleared(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.set_shadow(NAME, "canary", 0.5)
    route = stored_route(kube, kube_namespace)
    assert (mirror(route) or {}).get("percent") == 50
    assert live_weights(route) == {"minilm-stable": 100, "minilm-candidate": 0}  # not live
    router.set_shadow(NAME, "canary", 0.0)
    assert mirror(stored_route(kube, kube_namespace)) is None


def test_contract_the_split_turns_sticky_and_back(
    kube: Kube, router: GatewayAPIRouter, kube_namespace: str
) -> None:
    router.set_weights(NAME, {STABLE: 50, "challenger": 50})
    assert cohorts(stored_route(kube, kube_namespace)) == {}
    router.set_split(NAME, sticky=True)
    router.set_split(NAME, sticky=True)  # idempotent
    assert set(cohorts(stored_route(kube, kube_namespace))) == {"stable", "challenger"}
    router.set_split(NAME, sticky=False)
    assert cohorts(stored_route(kube, kube_namespace)) == {}


# ---- the real rollout controller driving the adapter ------------------------------------


class RoutedPlacement(FakePlacement):
    """The Placement port of the fakes, which on ``remove`` first tells the router (as the
    operator's placement must: the route must not point at a deleted Service)."""

    def __init__(self, world: FakeWorld, router: GatewayAPIRouter) -> None:
        super().__init__(world)
        self.router = router

    def remove(self, deployment: str, variant: str) -> None:
        self.router.forget(deployment, variant)  # first: no request meets a deleted Service
        super().remove(deployment, variant)


class Rollout:
    def __init__(self, router: GatewayAPIRouter, spec: CanarySpec | ExperimentSpec, strategy: str):
        self.world = FakeWorld()
        self.world.create(NAME, "b-1")
        self.metrics = FakeMetrics()
        ports = Ports(router, RoutedPlacement(self.world, router), self.metrics, FakeAliases())
        self.controller = Controller(ports)
        self.spec = spec
        self.status: RolloutStatus = new_status(strategy, "b-2", "b-1", 1000.0)

    def tick(self, now: float) -> None:
        def save(status: RolloutStatus, events: list[Event]) -> None:
            pass

        result = self.controller.reconcile(NAME, self.spec, self.status, now, save)
        assert result.error is None, result.error
        self.status = result.status

    def traffic(self, stable: int, candidate: int) -> None:
        self.metrics.add(NAME, STABLE, stable)
        self.metrics.add(NAME, self.status.variant, candidate)


@pytest.fixture
def rollout_router(router: GatewayAPIRouter) -> Iterator[GatewayAPIRouter]:
    router.refresh(NAME)  # the operator's reconcile made the route before the rollout
    yield router


def test_a_canary_driven_by_the_controller_leaves_its_weights_on_the_route(
    kube: Kube, rollout_router: GatewayAPIRouter, kube_namespace: str
) -> None:
    spec = CanarySpec(
        step_weights=(10, 50, 100), interval_seconds=10.0, thresholds=Thresholds(min_requests=50)
    )
    rollout = Rollout(rollout_router, spec, "canary")
    rollout.tick(1000.0)  # placed, not ready: the candidate takes nothing
    assert live_weights(stored_route(kube, kube_namespace)) == {
        "minilm-stable": 100,
        "minilm-candidate": 0,
    }
    rollout.world.serve(NAME, "canary", "b-2")
    now = 1001.0
    rollout.tick(now)
    seen = []
    while rollout.status.phase is Phase.PROGRESSING:
        weight = rollout.status.weight
        seen.append(weight)
        assert live_weights(stored_route(kube, kube_namespace)) == {
            "minilm-stable": 100 - weight,
            "minilm-candidate": weight,
        }
        rollout.traffic(400, 400)
        now += 11
        rollout.tick(now)
    assert seen == [10, 50, 100]
    assert rollout.status.phase is Phase.SUCCEEDED
    rollout.world.serve(NAME, STABLE, "b-2")  # the new stable's replicas are ready
    rollout.tick(now + 1)
    assert rollout.status.finished
    assert live_weights(stored_route(kube, kube_namespace)) == {"minilm-stable": 100}


def test_an_experiment_driven_by_the_controller_routes_cohorts_until_it_ends(
    kube: Kube, rollout_router: GatewayAPIRouter, kube_namespace: str
) -> None:
    spec = ExperimentSpec(weight=50, interval_seconds=10.0, min_requests=100)
    rollout = Rollout(rollout_router, spec, "experiment")
    rollout.tick(1000.0)
    rollout.world.serve(NAME, "challenger", "b-2")
    rollout.tick(1001.0)
    route = stored_route(kube, kube_namespace)
    assert live_weights(route) == {"minilm-stable": 50, "minilm-candidate": 50}
    assert cohorts(route) == {"stable": ["minilm-stable"], "challenger": ["minilm-candidate"]}
    rollout.controller.operate(
        NAME, rollout.spec, rollout.status, "abort", "t", 1002.0, lambda s, e: None
    )
    route = stored_route(kube, kube_namespace)
    assert live_weights(route) == {"minilm-stable": 100}
    assert cohorts(route) == {}


def test_session_persistence_is_not_in_the_standard_channel(
    kube: Kube, owner_body: dict[str, Any]
) -> None:
    """Why the A/B split is by named cohort: the installed (standard channel) CRD has no
    ``sessionPersistence``; this API server refuses the unknown field in an apply
    (had it been pruned instead, ``missing_from`` above would see it)."""
    owner = Owner.from_body(owner_body)
    state = RouteState(50, 50, "challenger")
    manifest = http_route(owner, parse_spec(owner_body["spec"]), GATEWAY, state, SAME)
    main_rule(manifest)["sessionPersistence"] = {"type": "Header", "sessionName": "x-key"}
    with pytest.raises(ApiException) as refused:
        kube.apply(manifest, dry_run=True)
    # server-side apply answers a field its schema lacks with 500 "failed to create
    # typed patch object"; the message names the field
    assert "sessionPersistence: field not declared in schema" in (refused.value.body or "")


# ---- spec.routing.provider / spec.routing.gatewayAPI in the CRD ---------------------------

GATEWAY_SPEC = {
    "provider": "gateway-api",
    "gatewayAPI": {"parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "http"}]},
}


def test_the_gateway_comes_from_the_resources_spec(
    kube: Kube, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    made = custom.create_namespaced_custom_object(
        GROUP, VERSION, kube_namespace, PLURAL, resource("routed", routing=GATEWAY_SPEC)
    )
    typed = parse_spec(made["spec"])
    assert typed.routing.provider == "gateway-api"
    assert typed.routing.gateway_api is not None
    assert typed.routing.gateway_api.cohort_header == "x-shipway-variant"  # the CRD's default
    assert unsupported(typed) == []
    GatewayAPIRouter(kube, kube_namespace).set_weights("routed", {STABLE: 90, "canary": 10})
    route = stored_route(kube, kube_namespace, "routed")
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "infra",
            "sectionName": "http",
        }
    ]
    assert live_weights(route, "routed") == {"routed-stable": 90, "routed-candidate": 10}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("no gateway", {"routing": {"provider": "gateway-api"}}, "needs routing.gatewayAPI.parentRefs"),
    (
        "no parent",
        {"routing": {"provider": "gateway-api", "gatewayAPI": {"parentRefs": []}}},
        "spec.routing.gatewayAPI.parentRefs in body should have at least 1 items",
    ),
    ("sticky", {"routing": {**GATEWAY_SPEC, "split": "sticky"}}, "cannot hash a request key"),
    (
        "shadow",
        {"routing": GATEWAY_SPEC, "rollout": {"canary": {"shadow": {"share": 0.5}}}},
        "spec.rollout.canary.shadow: Invalid value",
    ),
    (
        "drift score",
        {"routing": GATEWAY_SPEC, "rollout": {"canary": {"thresholds": {"maxDriftScore": 0.2}}}},
        "spec.rollout.canary.thresholds.maxDriftScore: Invalid value",
    ),
    (
        "drift rollback",
        {"routing": GATEWAY_SPEC, "drift": {"actions": ["alert", "rollback"]}},
        "spec.drift.actions: Invalid value",
    ),
    (
        "bad host",
        {
            "routing": {
                **GATEWAY_SPEC,
                "gatewayAPI": {**GATEWAY_SPEC["gatewayAPI"], "hostnames": ["A B"]},
            }
        },
        "spec.routing.gatewayAPI.hostnames[0]",
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_the_api_server_refuses_what_an_httproute_cannot_express(
    kube_api: client.ApiClient, kube_namespace: str, case: str, spec: dict[str, Any], message: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, PLURAL, resource("refused", **spec)
        )
    assert refused.value.status == 422
    assert message in (refused.value.body or "")
    # and the operator's own checks refuse it too (a resource stored before the rule)
    if case != "bad host":  # the API server's alone (the HTTPRoute's schema checks it too)
        assert operator_refuses(resource("refused", **spec)["spec"])


def operator_refuses(spec: dict[str, Any]) -> bool:
    """The typed spec is invalid, or ``unsupported`` names something."""
    try:
        return unsupported(parse_spec(spec)) != []
    except InvalidSpec:
        return True


def test_what_the_shipway_gateway_does_is_still_admitted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    shadowed = resource("shadowed", rollout={"canary": {"shadow": {"share": 0.5}}})
    shadowed["spec"]["routing"] = {"split": "sticky"}
    custom.create_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, shadowed)
    experiment = resource(
        "ab", routing=GATEWAY_SPEC, rollout={"strategy": "experiment", "experiment": {"weight": 50}}
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, experiment)
