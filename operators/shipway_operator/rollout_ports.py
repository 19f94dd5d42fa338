"""The rollout controller's ports on Kubernetes, over one namespace's ModelDeployments.

The resource is the only memory: the Router writes how traffic is split into its
status (``weights``, ``routing``), which the Shipway gateway follows through a watch;
Placement's changes are decided by the rollout record the controller saved just before
(``status.plan`` reads it: a succeeded record moves stable to the candidate's build, an
ended one takes the candidate out), so placing, removing and promoting all come down to
applying the resource's desired state again (``apply``, the operator's reconcile). Every
call is idempotent and safe to repeat after a crash, as the port contract asks.

The candidate variant is named in the resource's objects ``candidate`` (``<name>-candidate``),
and in the controller, the gateway and the metrics by its strategy (``canary``,
``challenger``); ``status.routing.candidateVariant`` records which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipway.rollout.ports import MetricsProvider, Ports
from shipway.rollout.status import STABLE
from shipway_operator.capacity import variant_range
from shipway_operator.httproute import GatewayAPIRouter
from shipway_operator.kube import Kube
from shipway_operator.manifests import LABEL_BUILD, object_name
from shipway_operator.spec import API_VERSION, KIND, Variant, parse_spec
from shipway_operator.status import availability

Apply = Callable[[str], None]  # reconcile one resource of the namespace by name
SHIPWAY_GATEWAY, GATEWAY_API = "shipway-gateway", "gateway-api"  # spec.routing.provider


class CapacityPending(RuntimeError):
    """The candidate's replicas for its next share are not available yet: the weight
    waits (the controller retries after its poll)."""


class StatusRouter:
    """The Router port as ``status.weights`` / ``status.routing`` of the resource."""

    def __init__(self, kube: Kube, namespace: str, attempts: int, apply: Apply) -> None:
        self.kube, self.namespace, self.attempts, self.apply = kube, namespace, attempts, apply

    def _write(self, deployment: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
        written: list[bool] = []

        def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
            written.clear()
            status = fresh.get("status") or {}
            new = change(status)
            if all(status.get(key) == value for key, value in new.items()):
                return None  # already so: no write, no event
            written.append(True)
            return new

        self.kube.update_status(self.namespace, deployment, compute, self.attempts)
        return bool(written)

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        """Stable's weight and the candidate's (the one variant besides stable that has
        weight, or is already recorded); then the variants' replica ranges follow.

        Capacity before traffic: a candidate about to take more is first sized for its
        new share (``status.capacity``), and the weights move only once that many of its
        replicas are available; until then ``CapacityPending`` (the controller calls
        again after its poll: converging is level-triggered)."""
        candidate = _candidate(weights)
        self._capacity_first(deployment, int(weights.get(candidate, 0)) if candidate else 0)

        def change(status: dict[str, Any]) -> dict[str, Any]:
            routing = dict(status.get("routing") or {})
            name = candidate or routing.get("candidateVariant")
            new = {
                "stable": int(weights.get(STABLE, 0)),
                "candidate": int(weights.get(name, 0)) if name else 0,
            }
            if name:
                routing["candidateVariant"] = name
            return {"weights": new, "routing": routing}

        if self._write(deployment, change):
            self.apply(deployment)

    def _capacity_first(self, deployment: str, share: int) -> None:
        body = self.kube.get(API_VERSION, KIND, self.namespace, deployment)
        if body is None:
            return
        status = body.get("status") or {}
        if share <= int((status.get("weights") or {}).get("candidate") or 0):
            return  # not growing: nothing to wait for (a shrinking share sheds later)
        ahead = int((status.get("capacity") or {}).get("candidate") or 0)
        if ahead < share:

            def raise_capacity(fresh: dict[str, Any]) -> dict[str, Any] | None:
                return {"capacity": {"candidate": share}}

            self.kube.update_status(self.namespace, deployment, raise_capacity, self.attempts)
            self.apply(deployment)
        spec = parse_spec(body.get("spec") or {})
        needed = variant_range(spec, False, share, status.get("baselineReplicas"))[0]
        live = self.kube.get(
            "apps/v1", "Deployment", self.namespace, object_name(deployment, Variant.CANDIDATE)
        )
        state = availability(live, needed)
        if not state.ready:
            raise CapacityPending(
                f"the candidate of {deployment} is scaling for {share} % of the traffic: "
                f"{state.message} of {needed} needed; the weight moves once they are"
            )

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        """Sticky (by ``spec.routing.stickyHeader``) or weighted draws."""

        def change(status: dict[str, Any]) -> dict[str, Any]:
            routing = dict(status.get("routing") or {})
            routing["split"] = "sticky" if sticky else "weighted"
            return {"routing": routing}

        self._write(deployment, change)

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        def change(status: dict[str, Any]) -> dict[str, Any]:
            routing = dict(status.get("routing") or {})
            routing["candidateVariant"] = variant
            routing["shadowShare"] = float(share)
            return {"routing": routing}

        self._write(deployment, change)


def _candidate(weights: dict[str, int]) -> str | None:
    others = [name for name in weights if name != STABLE]
    weighted = [name for name in others if weights[name] > 0]
    return (weighted or others or [None])[0]


def _provider(kube: Kube, namespace: str, deployment: str) -> str | None:
    body = kube.get(API_VERSION, KIND, namespace, deployment)
    if body is None:
        return None
    return ((body.get("spec") or {}).get("routing") or {}).get("provider") or SHIPWAY_GATEWAY


class ProviderRouter:
    """The status router always (the gateway follows it, and replica ranges follow the
    weights it records); an HTTPRoute too for a resource routed by the cluster's Gateway
    API implementation (``spec.routing.provider: gateway-api``)."""

    def __init__(self, status: StatusRouter, routes: GatewayAPIRouter) -> None:
        self.status, self.routes = status, routes

    def _gateway_api(self, deployment: str) -> bool:
        return _provider(self.status.kube, self.status.namespace, deployment) == GATEWAY_API

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        if self._gateway_api(deployment):
            self.routes.set_weights(deployment, weights)
        self.status.set_weights(deployment, weights)

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        if self._gateway_api(deployment):
            self.routes.set_split(deployment, sticky, header)
        self.status.set_split(deployment, sticky, header)

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        if self._gateway_api(deployment):
            self.routes.set_shadow(deployment, variant, share)
        self.status.set_shadow(deployment, variant, share)


class ResourcePlacement:
    """The Placement port as the resource's variant Deployments. ``place``, ``remove``
    and ``make_stable`` apply the resource again: what they change, the saved rollout
    record has already decided (see the module's docstring)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        apply: Apply,
        routes: GatewayAPIRouter | None = None,
        attempts: int = 5,
    ) -> None:
        self.kube, self.namespace, self.apply, self.routes = kube, namespace, apply, routes
        self.attempts = attempts

    def _resource(self, deployment: str) -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, KIND, self.namespace, deployment)

    def place(self, deployment: str, variant: str, build_id: str) -> None:
        body = self._resource(deployment)
        if body is None:
            raise LookupError(f"{KIND} {self.namespace}/{deployment} does not exist")
        wanted = ((body.get("spec") or {}).get("build") or {}).get("id")
        if wanted != build_id:
            raise LookupError(
                f"{KIND} {self.namespace}/{deployment} names build {wanted!r}, not {build_id!r}"
            )
        self.apply(deployment)

    def ready(self, deployment: str, variant: str, build_id: str) -> bool:
        """The variant's Deployment runs ``build_id`` only, every replica it wants
        updated and available (as ``kubectl rollout status``)."""
        kind = Variant.STABLE if variant == STABLE else Variant.CANDIDATE
        live = self.kube.get("apps/v1", "Deployment", self.namespace, object_name(deployment, kind))
        if live is None:
            return False
        labels = live.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_BUILD) != build_id:
            return False
        return availability(live, 1).ready

    def remove(self, deployment: str, variant: str) -> None:
        """Traffic off the candidate first (its weight back to stable, no mirror, in the
        status the gateway follows, and in the HTTPRoute), then its objects go: a route
        must never point at pods that are going."""
        if self._resource(deployment) is None:
            return
        if self.routes is not None and _provider(self.kube, self.namespace, deployment) == (
            GATEWAY_API
        ):
            self.routes.forget(deployment, variant)

        def give_back(fresh: dict[str, Any]) -> dict[str, Any] | None:
            status = fresh.get("status") or {}
            routing = dict(status.get("routing") or {})
            weights = {"stable": 100, "candidate": 0}
            if status.get("weights") == weights and not routing.get("shadowShare"):
                return None
            routing["shadowShare"] = 0.0
            return {"weights": weights, "routing": routing}

        self.kube.update_status(self.namespace, deployment, give_back, self.attempts)
        self.apply(deployment)

    def make_stable(self, deployment: str, build_id: str) -> None:
        self.place(deployment, STABLE, build_id)


class NoReleaseAliases:
    """Release aliases are the model registry's (MLflow), which the operator does not
    reach: on Kubernetes the resource's ``status.stableBuild`` / ``candidateBuild`` say
    what serves. Calls are accepted and do nothing."""

    def set_alias(self, build_id: str, alias: str) -> None:
        return None

    def delete_alias(self, build_id: str, alias: str) -> None:
        return None


def kubernetes_ports(
    kube: Kube, namespace: str, metrics: MetricsProvider, apply: Apply, attempts: int
) -> Ports:
    """The rollout controller's ports over ``namespace``'s resources: the operator's
    composition (``handlers``), and the tests'."""
    routes = GatewayAPIRouter(kube, namespace)
    return Ports(
        router=ProviderRouter(StatusRouter(kube, namespace, attempts, apply), routes),
        placement=ResourcePlacement(kube, namespace, apply, routes, attempts),
        metrics=metrics,
        aliases=NoReleaseAliases(),
    )
