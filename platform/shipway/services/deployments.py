"""Deployments and their variants: which builds serve, with what weights and replicas.

The runtime manager and the gateway follow what is written here; every change is
validated whole first and committed in one transaction, with its audit event.

With ``SHIPWAY_RUNTIME=kubernetes`` the deployment is a ModelDeployment resource instead:
deploy, get, list and delete go to ``shipway.kubernetes.deployments`` (which answers with
views of the resource, the same fields); variants and routing answer 409 there for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipway import audit
from shipway.container import Container
from shipway.errors import Conflict, InvalidInput, NotFound
from shipway.registry.compatibility import breaking_changes
from shipway.registry.signature import Signature
from shipway.services.models import check_name
from shipway.store.models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    Rollout,
    Split,
    Variant,
)

if TYPE_CHECKING:
    from shipway.kubernetes.resource import DeploymentView

STABLE = "stable"


@dataclass(frozen=True)
class Scale:
    min_replicas: int = 1
    max_replicas: int | None = None  # None: same as min (no autoscaling)

    def bounds(self) -> tuple[int, int]:
        high = self.max_replicas if self.max_replicas is not None else self.min_replicas
        if not 1 <= self.min_replicas <= high:
            raise InvalidInput(f"replicas need 1 <= min ({self.min_replicas}) <= max ({high})")
        if high > 16:
            raise InvalidInput(f"at most 16 replicas per variant locally, asked for {high}")
        return self.min_replicas, high


def manifest(
    container: Container,
    name: str,
    build_id: str,
    scale: Scale | None = None,
    target_inflight: float | None = None,
) -> dict[str, Any]:
    """The ModelDeployment serving ``build_id`` as ``name``, for keeping in Git (Argo CD):
    see ``shipway.kubernetes.deployments.manifest``. Only with SHIPWAY_RUNTIME=kubernetes
    (the signed archive URL is the in-cluster API's); 409 otherwise, naming the mode."""
    if not container.kubernetes_mode:
        raise Conflict(
            "a ModelDeployment manifest needs SHIPWAY_RUNTIME=kubernetes (its model "
            "repository URL is the in-cluster API's, signed with SHIPWAY_ARCHIVE_KEY); "
            "locally, deploy with `shipway deploy`"
        )
    from shipway.kubernetes import deployments as kube

    return kube.manifest(container, name, build_id, scale, target_inflight)


def succeeded_build(session: Session, build_id: str) -> Build:
    build = session.get(Build, build_id)
    if build is None:
        raise NotFound(f"build {build_id!r} does not exist")
    if build.status != BuildStatus.SUCCEEDED:
        raise Conflict(f"build {build_id} is {build.status}; only a succeeded build deploys")
    return build


def signature_changes(
    session: Session, serving_id: str, candidate: Build, allow: bool
) -> list[str]:
    """The candidate's changes that would break clients of the build serving now
    (``shipway.registry.compatibility``); refused with 409 unless ``allow``."""
    serving = session.get(Build, serving_id)
    if serving is None or serving.model_version_id == candidate.model_version_id:
        return []
    changes = breaking_changes(
        Signature.from_dict(serving.model_version.signature),
        Signature.from_dict(candidate.model_version.signature),
    )
    if changes and not allow:
        raise Conflict(
            f"build {candidate.id} would break clients of build {serving.id}: "
            + "; ".join(changes)
            + ". If the change is intended, pass allow_signature_change "
            "(CLI: --allow-signature-change)"
        )
    return changes


def _deployment(session: Session, name: str) -> Deployment:
    deployment = session.scalar(select(Deployment).where(Deployment.name == name))
    if deployment is None:
        raise NotFound(f"deployment {name!r} does not exist")
    return deployment


def _variant(deployment: Deployment, name: str) -> Variant:
    for variant in deployment.variants:
        if variant.name == name:
            return variant
    known = ", ".join(v.name for v in deployment.variants)
    raise NotFound(f"deployment {deployment.name!r} has no variant {name!r}; variants: {known}")


def _apply_scale(variant: Variant, scale: Scale) -> None:
    low, high = scale.bounds()
    variant.min_replicas, variant.max_replicas = low, high
    current = variant.desired_replicas if variant.desired_replicas is not None else low
    variant.desired_replicas = max(low, min(high, current))


def deploy(
    container: Container,
    name: str,
    build_id: str,
    actor: str,
    scale: Scale | None = None,
    target_inflight: float | None = None,
    scale_down_stabilization_window_seconds: float | None = None,
    allow_signature_change: bool = False,
) -> Deployment | DeploymentView:
    """Create the deployment, or point its stable variant at another build.

    A build whose signature would break the clients of the one serving is refused
    (409) unless ``allow_signature_change``; an allowed change is in the audit event.

    With ``target_inflight`` and ``scale.max_replicas`` above the minimum, the runtime
    scales the stable variant on the gateway's measured load. A redeploy that passes
    none of the scale settings keeps the current ones: shipping a new build must not
    quietly switch off autoscaling.
    """
    check_name(name)
    if container.kubernetes_mode:
        from shipway.kubernetes import deployments as kube

        return kube.deploy(
            container,
            name,
            build_id,
            actor,
            scale,
            target_inflight,
            scale_down_stabilization_window_seconds,
            allow_signature_change,
        )
    keep_scaling = (
        scale is None
        and target_inflight is None
        and scale_down_stabilization_window_seconds is None
    )
    scale = scale or Scale()
    scale.bounds()
    if target_inflight is not None and target_inflight <= 0:
        raise InvalidInput("target_inflight must be positive")
    window = (
        30.0
        if scale_down_stabilization_window_seconds is None
        else scale_down_stabilization_window_seconds
    )
    if window < 0:
        raise InvalidInput("scale_down_stabilization_window_seconds cannot be negative")
    with container.db.session() as session:
        build = succeeded_build(session, build_id)
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        previous = deployment.build_id if deployment else None
        changes = []
        if previous not in (None, build_id):
            changes = signature_changes(session, previous, build, allow_signature_change)
        if deployment is None:
            deployment = Deployment(name=name, build_id=build_id)
            deployment.variants.append(Variant(name=STABLE, build_id=build_id, weight=100))
            session.add(deployment)
        stable = _variant(deployment, STABLE)
        if previous not in (None, build_id):
            deployment.status, deployment.message = DeploymentStatus.PENDING, None
        deployment.build_id = stable.build_id = build_id
        if not (keep_scaling and previous is not None):
            _apply_scale(stable, scale)
            deployment.autoscale = (
                {
                    "target_inflight": target_inflight,
                    "scale_down_stabilization_window_seconds": window,
                }
                if target_inflight
                else {}
            )
        audit.record(
            session,
            actor,
            "deployment.set",
            f"deployment/{name}",
            build=build_id,
            previous_build=previous,
            replicas=stable.min_replicas,
            max_replicas=stable.max_replicas,
            target_inflight=target_inflight,
            **({"signature_changes": changes} if changes else {}),
        )
    return get(container, name)


def set_variant(
    container: Container,
    name: str,
    variant_name: str,
    build_id: str,
    actor: str,
    weight: int = 0,
    shadow_share: float = 0.0,
    scale: Scale | None = None,
    allow_signature_change: bool = False,
) -> Deployment:
    """Add or change a non-stable variant (a canary, an experiment arm, a shadow).

    The weight taken by the variant comes off stable, so the weights keep summing to 100.
    A build whose signature would break stable's clients is refused (409) unless
    ``allow_signature_change`` (a shadow's answers reach no client, but it becomes a
    canary next).
    """
    local_only(container, "setting a variant")
    check_name(variant_name)
    if variant_name == STABLE:
        raise InvalidInput("the stable variant changes through deploy, not set_variant")
    if not 0 <= weight <= 100:
        raise InvalidInput(f"weight must be within 0..100, got {weight}")
    if not 0.0 <= shadow_share <= 1.0:
        raise InvalidInput(f"shadow_share must be within 0..1, got {shadow_share}")
    if weight and shadow_share:
        raise InvalidInput("a variant is either live (weight) or a shadow, not both")
    with container.db.session() as session:
        build = succeeded_build(session, build_id)
        deployment = _deployment(session, name)
        stable = _variant(deployment, STABLE)
        changes = signature_changes(session, stable.build_id, build, allow_signature_change)
        variant = next((v for v in deployment.variants if v.name == variant_name), None)
        if variant is None:
            variant = Variant(name=variant_name, build_id=build_id, weight=0)
            deployment.variants.append(variant)
        others = sum(v.weight for v in deployment.variants if v not in (stable, variant))
        if others + weight > 100:
            raise Conflict(
                f"weights would exceed 100: other variants hold {others}, asked {weight}"
            )
        variant.build_id, variant.weight, variant.shadow_share = build_id, weight, shadow_share
        stable.weight = 100 - others - weight
        _apply_scale(variant, scale or Scale())
        audit.record(
            session,
            actor,
            "variant.set",
            f"deployment/{name}/{variant_name}",
            build=build_id,
            weight=weight,
            shadow_share=shadow_share,
            stable_weight=stable.weight,
            **({"signature_changes": changes} if changes else {}),
        )
    return get(container, name)


def remove_variant(container: Container, name: str, variant_name: str, actor: str) -> Deployment:
    """Take a variant out; its weight returns to stable."""
    local_only(container, "removing a variant")
    if variant_name == STABLE:
        raise InvalidInput("the stable variant cannot be removed; delete the deployment")
    with container.db.session() as session:
        deployment = _deployment(session, name)
        variant = _variant(deployment, variant_name)
        _variant(deployment, STABLE).weight += variant.weight
        deployment.variants.remove(variant)
        session.delete(variant)
        audit.record(session, actor, "variant.remove", f"deployment/{name}/{variant_name}")
    return get(container, name)


def set_routing(
    container: Container,
    name: str,
    actor: str,
    weights: dict[str, int] | None = None,
    split: str | None = None,
    sticky_header: str | None = None,
) -> Deployment:
    """Change weights (all at once: they must sum to 100) and the split mode."""
    local_only(container, "changing the routing")
    with container.db.session() as session:
        deployment = _deployment(session, name)
        if weights is not None:
            for variant_name in weights:
                _variant(deployment, variant_name)
            if any(w < 0 for w in weights.values()):
                raise InvalidInput("weights cannot be negative")
            merged = {v.name: weights.get(v.name, v.weight) for v in deployment.variants}
            if sum(merged.values()) != 100:
                raise InvalidInput(f"weights must sum to 100, got {merged}")
            shadows = [v.name for v in deployment.variants if v.shadow_share and merged[v.name]]
            if shadows:
                raise InvalidInput(f"shadow variants cannot take live weight: {shadows}")
            for variant in deployment.variants:
                variant.weight = merged[variant.name]
        if split is not None:
            try:
                deployment.split = Split(split)
            except ValueError:
                raise InvalidInput(f"split must be 'weighted' or 'sticky', got {split!r}") from None
        if sticky_header is not None:
            if not sticky_header.lower().startswith("x-"):
                raise InvalidInput("the sticky key header must be an x- header")
            deployment.sticky_header = sticky_header.lower()
        audit.record(
            session,
            actor,
            "routing.set",
            f"deployment/{name}",
            weights={v.name: v.weight for v in deployment.variants},
            split=deployment.split,
        )
    return get(container, name)


def local_only(container: Container, operation: str, instead: str | None = None) -> None:
    """Refuse (409, naming the mode) what Kubernetes mode does not carry out here;
    ``instead``: what to do there (default: change the resource's build)."""
    if container.kubernetes_mode:
        from shipway.kubernetes.deployments import NotInKubernetesMode, unsupported

        raise unsupported(operation) if instead is None else NotInKubernetesMode(operation, instead)


def get(container: Container, name: str) -> Deployment | DeploymentView:
    if container.kubernetes_mode:
        from shipway.kubernetes import deployments as kube

        return kube.get(container, name)
    with container.db.session() as session:
        return _deployment(session, name)


def list_deployments(container: Container) -> list[Deployment] | list[DeploymentView]:
    if container.kubernetes_mode:
        from shipway.kubernetes import deployments as kube

        return kube.list_deployments(container)
    with container.db.session() as session:
        return list(session.scalars(select(Deployment).order_by(Deployment.name)))


def delete(container: Container, name: str, actor: str) -> None:
    if container.kubernetes_mode:
        from shipway.kubernetes import deployments as kube

        kube.delete(container, name, actor)
        return
    with container.db.session() as session:
        deployment = _deployment(session, name)
        running = session.scalar(select(Rollout.id).where(Rollout.active_key == name))
        if running is not None:
            raise Conflict(f"deployment {name!r} has a running rollout {running}; abort it first")
        session.delete(deployment)
        audit.record(session, actor, "deployment.delete", f"deployment/{name}")
