"""Routing through the Gateway API: a ModelDeployment's traffic as one ``HTTPRoute``.

The second routing mode behind the rollout ``Router`` port, for clusters that already
run a Gateway API implementation (Envoy Gateway, Istio, Cilium, NGINX Gateway Fabric...);
the default is the Shipway gateway in the cluster, which does everything the local
gateway does. Written against the **standard channel** of Gateway API v1.6.3
(``gateway.networking.k8s.io/v1``); nothing here needs the experimental channel.

What one HTTPRoute can say, and how it is said (``http_route``):

- **Weights** (a canary's steps): ``backendRefs`` to the variant Services
  ``<name>-stable`` / ``<name>-candidate``, port 8000 (Triton's HTTP), with ``weight``s.
- **Shadow**: a ``RequestMirror`` filter to the candidate Service, with ``percent``
  (or ``fraction`` out of 10 000 for a share that is no whole percent; both in the
  standard channel, GEP-3171). The mirror's answers are dropped by the gateway.
- **A/B by a header match** (the sticky split): HTTPRoute has no way to hash a request
  key into buckets. ``sessionPersistence`` is experimental-channel only in v1.6.3 (not
  in the standard CRDs) and pins a client to a *backend endpoint* through a cookie or
  header token the gateway issues, not a key the client already has. So the split is by
  **named cohort**: a request carrying ``<cohortHeader>: stable`` (default header
  ``x-shipway-variant``) goes to stable, ``<cohortHeader>: <candidate variant>``
  (``challenger`` in an experiment) to the candidate, whatever the weights; a request
  without it is drawn per request by the weights (not sticky). Who assigns users to
  cohorts (an edge proxy, a feature-flag service, the client) stays sticky as long as
  it sends the same value.
- **Paths**: clients use the KServe v2 paths under the deployment's name,
  ``/v2/models/<deployment>/...`` (``/infer``, ``/ready``, metadata), as with the
  Shipway gateway. Triton in the pods knows the model by its Triton model name (the
  build's ``tritonModelName``), version ``1``; so a ``URLRewrite`` filter
  (``ReplacePrefixMatch``, core) replaces ``/v2/models/<deployment>`` by
  ``/v2/models/<triton name>`` when the two differ. When stable and candidate carry
  different Triton names the rewrite moves to each ``backendRef``'s own filters, which
  the Gateway API leaves implementation-specific (NGINX Gateway Fabric, for one, does
  not support them; an implementation says so in the route's status); a mirror cannot be
  rewritten apart from the live request, so a shadow between differently named builds
  is refused (``Unexpressible``). ``/v2/models/<deployment>/versions/<v>/...`` with
  ``<v>`` the registered model version a live variant serves (``modelVersion``) goes to
  the variants serving it, rewritten to Triton's unversioned path; another ``<v>``
  reaches Triton as ``/v2/models/<triton name>/versions/<v>``, which Triton answers
  only for its own version numbers (``1``).

What it cannot say is refused (``unsupported``): the canary's shadow *analysis*
(agreement of mirrored answers: a mirror filter cannot report them), sticky-by-key
routing (``spec.routing.split: sticky``), and drift checks and actions (the Shipway
gateway samples inputs per variant for them; an HTTPRoute does not).

No I/O in the builders; ``GatewayAPIRouter`` is the adapter that applies them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from shipway_operator.kube import Kube
from shipway_operator.manifests import (
    HTTP_PORT,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGER,
    Manifest,
    Owner,
    object_name,
)
from shipway_operator.routing_spec import GatewayAPIRouting
from shipway_operator.spec import API_VERSION, KIND, Spec, Variant, parse_spec

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ROUTE_KIND = "HTTPRoute"
# the router's last applied values, on the HTTPRoute itself: a restarted operator (or
# another replica) composes set_weights/set_split/set_shadow from there
STATE_ANNOTATION = "shipway.io/routing"
# the deployment's Triton model name when its build records none (as the Shipway gateway)
TRITON_MODEL_ANNOTATION = "shipway.io/triton-model"
CANDIDATE_NAMES = ("canary", "challenger", Variant.CANDIDATE.value)  # engine's and ours
MIRROR_DENOMINATOR = 10_000  # a fraction's resolution: 0.01 % of requests, as sticky buckets
PROVIDER_HINT = "or use spec.routing.provider: shipway-gateway"


class Unexpressible(ValueError):
    """Routing the HTTPRoute cannot express truthfully; nothing was applied."""


# ---- the spec's routing additions (spec.routing.provider, spec.routing.gatewayAPI) -------


class RoutingMode(BaseModel):
    """The two fields ``spec.routing`` gains (read from the raw spec until ``spec.py``'s
    ``Routing`` carries them)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )
    provider: Literal["shipway-gateway", "gateway-api"] = "shipway-gateway"
    gateway_api: GatewayAPIRouting | None = Field(None, alias="gatewayAPI")


def routing_mode(spec: Mapping[str, Any]) -> RoutingMode:
    """``spec.routing``'s provider and Gateway API settings from a ModelDeployment's raw
    ``spec``; ``Unexpressible`` naming the field when they are malformed."""
    try:
        return RoutingMode.model_validate(spec.get("routing") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.routing.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise Unexpressible(problems) from None


class RoutingChoice(Protocol):
    """What ``unsupported`` reads of ``spec.routing``: ``RoutingMode`` now, ``spec.py``'s
    ``Routing`` once it has these fields."""

    @property
    def provider(self) -> str: ...

    @property
    def gateway_api(self) -> GatewayAPIRouting | None: ...


def unsupported(spec: Spec, routing: RoutingChoice | None = None) -> list[str]:
    """Why ``spec`` cannot be routed by an HTTPRoute, one message per field (empty: it
    can, or another provider routes it). For the operator's status (condition reason
    ``RoutingUnsupported``); nothing is applied while a message stands. ``routing``
    defaults to ``spec.routing`` (once it has ``provider``/``gateway_api``)."""
    choice: Any = routing if routing is not None else spec.routing
    if getattr(choice, "provider", "shipway-gateway") != "gateway-api":
        return []
    problems: list[str] = []
    if choice.gateway_api is None or not choice.gateway_api.parent_refs:
        problems.append(
            "spec.routing.gatewayAPI.parentRefs: required with spec.routing.provider "
            "gateway-api (the Gateway the HTTPRoute attaches to)"
        )
    if spec.routing.split == "sticky":
        problems.append(
            "spec.routing.split: sticky routes by a hash of the request key "
            f"({spec.routing.sticky_header}); an HTTPRoute cannot hash a header into "
            "buckets (it can only match named cohorts, see spec.routing.gatewayAPI."
            f"cohortHeader); use split: weighted, {PROVIDER_HINT}"
        )
    canary = spec.rollout.canary
    if spec.rollout.strategy == "canary" and canary is not None and canary.shadow is not None:
        problems.append(
            "spec.rollout.canary.shadow: a shadow phase is judged by the agreement of the "
            "candidate's mirrored answers with stable's; a Gateway API RequestMirror "
            f"filter discards the mirror's answers, so nothing can judge them; remove it, "
            f"{PROVIDER_HINT}"
        )
    thresholds = canary.thresholds if canary is not None else None
    if (
        spec.rollout.strategy == "canary"
        and thresholds is not None
        and thresholds.max_drift_score is not None
    ):
        problems.append(
            "spec.rollout.canary.thresholds.maxDriftScore: drift scores come from the "
            "inputs the Shipway gateway samples per variant; an HTTPRoute samples nothing, "
            f"so the check could never pass; remove it, {PROVIDER_HINT}"
        )
    if set(spec.drift.actions) - {"alert"}:
        problems.append(
            "spec.drift.actions: drift actions (webhook, rollback) act on scores from the "
            "inputs the Shipway gateway samples; an HTTPRoute samples nothing, so they "
            f"would never fire; leave the default (alert), {PROVIDER_HINT}"
        )
    return problems


# ---- the pure builder --------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What a variant's pods serve, as a route needs it: the model's name inside their
    Triton, and the registered model version (None: unknown; no pinned-version rule)."""

    triton_model: str
    version: int | None = None


@dataclass(frozen=True)
class RouteState:
    """The Router port's values for one deployment, as last applied: live weights by
    *our* variant (``stable``, ``candidate``: the Services), the split, the mirrored
    share, and the candidate's name as the rollout controller calls it (``canary``,
    ``challenger``; the cohort header's value). ``candidate`` None: no candidate
    (``stable`` takes 100)."""

    stable: int = 100
    candidate_weight: int = 0
    candidate: str | None = None
    sticky: bool = False
    shadow_share: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.stable <= 100 and 0 <= self.candidate_weight <= 100):
            raise ValueError("weights are percents within [0, 100]")
        if self.stable + self.candidate_weight != 100:
            raise ValueError(
                f"weights must sum to 100, got stable {self.stable} + candidate "
                f"{self.candidate_weight}"
            )
        if not 0.0 <= self.shadow_share <= 1.0 or math.isnan(self.shadow_share):
            raise ValueError(f"a shadow share is within [0, 1], got {self.shadow_share}")
        if self.candidate is None and (self.candidate_weight or self.shadow_share):
            raise ValueError("a candidate weight or shadow share needs a candidate variant")

    def weights(self) -> dict[str, int]:
        """By the controller's variant names (what ``set_weights`` was given)."""
        out = {"stable": self.stable}
        if self.candidate is not None:
            out[self.candidate] = self.candidate_weight
        return out

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "weights": {"stable": self.stable, "candidate": self.candidate_weight},
                "candidate": self.candidate,
                "split": "sticky" if self.sticky else "weighted",
                "shadowShare": self.shadow_share,
            },
            sort_keys=True,
        )

    @classmethod
    def from_annotation(cls, text: str | None) -> RouteState:
        """The state an applied route records; a missing or unreadable one (someone
        edited it) is the initial state: stable at 100, nothing mirrored."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            weights = data["weights"]
            return cls(
                stable=int(weights["stable"]),
                candidate_weight=int(weights["candidate"]),
                candidate=data.get("candidate"),
                sticky=data.get("split") == "sticky",
                shadow_share=float(data.get("shadowShare", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            return cls()


def _backend(owner: Owner, variant: Variant, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "group": "",
        "kind": "Service",
        "name": object_name(owner.name, variant),
        "port": HTTP_PORT,
    }
    if weight is not None:
        ref["weight"] = weight
    return ref


def _rewrite(prefix: str) -> dict[str, Any]:
    return {
        "type": "URLRewrite",
        "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": prefix}},
    }


def _mirror(owner: Owner, share: float) -> dict[str, Any]:
    """Mirror ``share`` of the rule's requests to the candidate Service: a whole percent
    as ``percent``, else a ``fraction`` of 10 000 (rounded, at least 1)."""
    mirror: dict[str, Any] = {"backendRef": _backend(owner, Variant.CANDIDATE)}
    percent = share * 100
    if abs(percent - round(percent)) < 1e-9:
        mirror["percent"] = round(percent)
    else:
        numerator = max(1, round(share * MIRROR_DENOMINATOR))
        mirror["fraction"] = {"numerator": numerator, "denominator": MIRROR_DENOMINATOR}
    return {"type": "RequestMirror", "requestMirror": mirror}


def _prefix_match(path: str, header: tuple[str, str] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": path}}
    if header is not None:
        match["headers"] = [{"type": "Exact", "name": header[0], "value": header[1]}]
    return match


def http_route(
    owner: Owner,
    spec: Spec,
    gateway: GatewayAPIRouting,
    state: RouteState,
    served: Mapping[Variant, Served],
) -> Manifest:
    """The HTTPRoute ``<name>`` (owned by the ModelDeployment, labelled as its other
    objects) that routes ``/v2/models/<name>`` as ``state`` says: weighted backendRefs,
    a mirror, cohort header matches while sticky, pinned-version rules, and the rewrite
    to each variant's Triton model name (``served``; missing: the deployment's name).
    Raises ``Unexpressible`` for a shadow between builds Triton names differently."""
    name = owner.name
    base = f"/v2/models/{name}"
    has_candidate = state.candidate is not None
    variants = [Variant.STABLE, Variant.CANDIDATE] if has_candidate else [Variant.STABLE]
    weight = {Variant.STABLE: state.stable, Variant.CANDIDATE: state.candidate_weight}
    triton = {v: served[v].triton_model if v in served else name for v in variants}
    same_name = len(set(triton.values())) == 1

    def rewrite_to(variant: Variant) -> list[dict[str, Any]]:
        return [] if triton[variant] == name else [_rewrite(f"/v2/models/{triton[variant]}")]

    # the main rule: every request to the deployment, drawn by the weights
    filters: list[dict[str, Any]] = []
    backends = [_backend(owner, v, weight[v]) for v in variants]
    if same_name:
        filters += rewrite_to(Variant.STABLE)
    else:
        for ref, variant in zip(backends, variants, strict=True):
            if own := rewrite_to(variant):
                ref["filters"] = own
    if state.shadow_share > 0:
        if not same_name:
            raise Unexpressible(
                f"a shadow of {name!r} needs stable and candidate to share a Triton model "
                f"name (they are {triton[Variant.STABLE]!r} and "
                f"{triton[Variant.CANDIDATE]!r}): a mirrored request cannot be rewritten "
                "apart from the live one"
            )
        filters.append(_mirror(owner, state.shadow_share))  # after the rewrite: in order
    main: dict[str, Any] = {"matches": [_prefix_match(base)], "backendRefs": backends}
    if filters:
        main["filters"] = filters
    rules = [main]

    # a registered version a live variant serves: to those variants, Triton's path
    versions: dict[int, list[Variant]] = {}
    for variant in variants:
        version = served[variant].version if variant in served else None
        if version is not None and weight[variant] > 0:
            versions.setdefault(version, []).append(variant)
    for version, serving in sorted(versions.items()):
        pinned = {"matches": [_prefix_match(f"{base}/versions/{version}")]}
        if len({triton[v] for v in serving}) == 1:
            pinned["filters"] = [_rewrite(f"/v2/models/{triton[serving[0]]}")]
            pinned["backendRefs"] = [_backend(owner, v, weight[v]) for v in serving]
        else:
            pinned["backendRefs"] = [
                _backend(owner, v, weight[v]) | {"filters": [_rewrite(f"/v2/models/{triton[v]}")]}
                for v in serving
            ]
        rules.append(pinned)

    # the A/B split by named cohort: a header match wins over the weighted rule
    if state.sticky and state.candidate is not None:
        for variant, value in ((Variant.STABLE, "stable"), (Variant.CANDIDATE, state.candidate)):
            cohort: dict[str, Any] = {
                "matches": [_prefix_match(base, (gateway.cohort_header, value))],
                "backendRefs": [_backend(owner, variant)],
            }
            if own := rewrite_to(variant):
                cohort["filters"] = own
            rules.append(cohort)

    route_spec: dict[str, Any] = {
        "parentRefs": [ref.as_manifest() for ref in gateway.parent_refs],
        "rules": rules,
    }
    if gateway.hostnames:
        route_spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": ROUTE_KIND,
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "shipway",
                "app.kubernetes.io/component": "route",
                LABEL_MANAGED_BY: MANAGER,
                "shipway.io/model": spec.model.name,
                LABEL_DEPLOYMENT: name,
            },
            "annotations": {STATE_ANNOTATION: state.to_annotation()},
            "ownerReferences": [owner.reference()],
        },
        "spec": route_spec,
    }


def served_models(body: Mapping[str, Any]) -> dict[Variant, Served]:
    """Each variant's Triton model name and registered version from a ModelDeployment
    (``status.stableBuild`` / ``status.candidateBuild``; a name missing there is the
    resource's ``shipway.io/triton-model`` annotation, else its own name, as the
    Shipway gateway falls back)."""
    meta = body.get("metadata") or {}
    fallback = (meta.get("annotations") or {}).get(TRITON_MODEL_ANNOTATION) or meta["name"]
    status = body.get("status") or {}
    out: dict[Variant, Served] = {}
    for variant, key in ((Variant.STABLE, "stableBuild"), (Variant.CANDIDATE, "candidateBuild")):
        build = status.get(key)
        if not isinstance(build, dict):
            out[variant] = Served(fallback)
            continue
        model = build.get("tritonModelName")
        version = build.get("modelVersion")
        try:
            number = int(version) if version is not None else None
        except (TypeError, ValueError):
            number = None
        out[variant] = Served(model if isinstance(model, str) and model else fallback, number)
    return out


# ---- the adapter -------------------------------------------------------------------------


class RouteNotOwned(RuntimeError):
    """An HTTPRoute of the deployment's name exists that the ModelDeployment does not
    control: someone else's, never taken over."""


@dataclass
class GatewayAPIRouter:
    """The rollout ``Router`` port over HTTPRoutes, for one namespace.

    Every call reads the ModelDeployment (owner, spec, builds) and the route's last
    applied values (``STATE_ANNOTATION``), changes what it was asked, and server-side
    applies the whole route (field manager ``shipway-operator``, ``Kube.apply``),
    conditioned on the resourceVersion read (two writers: the loser gets 409 and the
    controller's retry recomputes). So calls compose (``set_weights`` then
    ``set_shadow``), survive a restart, and repeating one changes nothing.

    ``default`` is the Gateway to attach to when the resource names none
    (``spec.routing.gatewayAPI``); without either, a call raises ``Unexpressible``.
    Raises ``LookupError`` for a ModelDeployment that does not exist, ``RouteNotOwned``
    for someone else's route, ``ValueError`` for bad weights or shares, ``ApiException``
    for the API server's refusals."""

    kube: Kube
    namespace: str
    default: GatewayAPIRouting | None = None

    # -- the Router port --

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        """Live shares by variant, summing to 100; variants other than ``stable`` and a
        candidate (``canary``, ``challenger``, ``candidate``) are ignored."""

        def change(state: RouteState) -> RouteState:
            named = [n for n in weights if n in CANDIDATE_NAMES]
            if len(named) > 1:
                raise ValueError(f"one candidate variant at a time, got {sorted(named)}")
            stable = weights.get("stable", state.stable)
            if not named:
                return replace(state, stable=stable, candidate_weight=100 - stable)
            return replace(
                state, stable=stable, candidate_weight=weights[named[0]], candidate=named[0]
            )

        self._update(deployment, change)

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        """Sticky: the cohort header matches route named cohorts (``header``, the sticky
        key's, cannot be hashed by an HTTPRoute and is not used); weighted: none."""
        self._update(deployment, lambda state: replace(state, sticky=sticky))

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        """Mirror ``share`` of requests to the candidate; 0 removes the mirror. A variant
        that is not a candidate is ignored."""
        if variant not in CANDIDATE_NAMES:
            return
        self._update(
            deployment,
            lambda state: replace(
                state,
                shadow_share=share,
                candidate=variant if share > 0 else state.candidate,
            ),
        )

    # -- beside the port --

    def forget(self, deployment: str, variant: str) -> None:
        """The candidate is gone (Placement.remove): its weight back to stable, its mirror
        and cohort off, so the route never points at a deleted Service."""
        if variant not in CANDIDATE_NAMES:
            return
        self._update(deployment, lambda state: replace(RouteState(), sticky=state.sticky))

    def refresh(self, deployment: str) -> None:
        """Apply the last values again with the resource as it is now (new parentRefs,
        a promoted build's Triton name); makes the route (stable at 100) if none exists.
        For the operator's reconcile of a ModelDeployment routed by the Gateway API."""
        self._update(deployment, lambda state: state)

    def delete(self, deployment: str) -> bool:
        """Delete the deployment's route (routing moved to the Shipway gateway); only a
        route this ModelDeployment controls. True when one was deleted."""
        live = self.kube.get(GATEWAY_API_VERSION, ROUTE_KIND, self.namespace, deployment)
        body = self.kube.get(API_VERSION, KIND, self.namespace, deployment)
        if live is None or body is None or not _controlled_by(live, body["metadata"]["uid"]):
            return False
        try:
            self.kube.resource(GATEWAY_API_VERSION, ROUTE_KIND).delete(
                name=deployment,
                namespace=self.namespace,
                body={"preconditions": {"uid": live["metadata"]["uid"]}},
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone meanwhile, or another object of the name
                return False
            raise
        return True

    def state(self, deployment: str) -> RouteState | None:
        """The values the route was last applied with; None: no route."""
        live = self.kube.get(GATEWAY_API_VERSION, ROUTE_KIND, self.namespace, deployment)
        if live is None:
            return None
        return RouteState.from_annotation(_annotation(live))

    # -- inside --

    def _update(self, deployment: str, change: Any) -> None:
        body = self.kube.get(API_VERSION, KIND, self.namespace, deployment)
        if body is None:
            raise LookupError(f"ModelDeployment {self.namespace}/{deployment} does not exist")
        owner = Owner.from_body(body)
        spec = parse_spec(body.get("spec") or {})
        gateway = routing_mode(body.get("spec") or {}).gateway_api or self.default
        if gateway is None:
            raise Unexpressible(
                f"ModelDeployment {self.namespace}/{deployment}: no Gateway to attach to "
                "(spec.routing.gatewayAPI.parentRefs)"
            )
        live = self.kube.get(GATEWAY_API_VERSION, ROUTE_KIND, self.namespace, deployment)
        if live is not None and not _controlled_by(live, owner.uid):
            raise RouteNotOwned(
                f"HTTPRoute {self.namespace}/{deployment} exists and is not this "
                "ModelDeployment's; delete or rename it"
            )
        current = RouteState.from_annotation(_annotation(live)) if live else RouteState()
        manifest = http_route(owner, spec, gateway, change(current), served_models(body))
        if live is not None:  # conditioned on what was read
            manifest["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        try:
            self.kube.apply(manifest)
        except ApiException as exc:
            if exc.status in (400, 422):
                raise Unexpressible(
                    f"the API server refused HTTPRoute {self.namespace}/{deployment}: "
                    f"{_message(exc)}"
                ) from None
            raise


def _annotation(live: Mapping[str, Any] | None) -> str | None:
    if live is None:
        return None
    return ((live.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION)


def _controlled_by(live: Mapping[str, Any], uid: str) -> bool:
    refs = (live.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
