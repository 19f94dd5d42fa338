"""Deployments in Kubernetes mode: ``services.deployments`` hands its operations here
when ``SHIPWAY_RUNTIME=kubernetes``.

The ModelDeployment resource is the deployment: deploy applies its spec (validated as
in local mode first — the build succeeded, its signature keeps the serving build's
clients — then by the API server against the CRD), get and list read its status and
pods, delete deletes it (the garbage collector takes what the operator made). The
audit event is written in the same transaction as the checks and only once the API
server has accepted the change, so a refused deploy leaves neither a resource nor an
event. Operations the operator cannot carry out yet answer :class:`NotInKubernetesMode`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipway import audit
from shipway.container import Container
from shipway.errors import Conflict, InvalidInput
from shipway.gateway.store_routes import agreement, scalar_tensors
from shipway.kubernetes import archives
from shipway.kubernetes.resource import (
    DeploymentRequest,
    DeploymentView,
    Scaling,
    deployment_view,
    model_deployment,
)

if TYPE_CHECKING:
    from shipway.services.deployments import Scale
    from shipway.store.models import Build


class NotInKubernetesMode(Conflict):
    """An operation Kubernetes mode does not carry out yet (409, naming the mode)."""

    def __init__(self, operation: str, instead: str) -> None:
        super().__init__(
            f"{operation} is not available with SHIPWAY_RUNTIME=kubernetes yet; {instead}"
        )


def unsupported(operation: str) -> NotInKubernetesMode:
    return NotInKubernetesMode(
        operation,
        "change the ModelDeployment's spec.build to start a rollout (the operator makes "
        "the candidate), or run Shipway with SHIPWAY_RUNTIME=local",
    )


def deploy(
    container: Container,
    name: str,
    build_id: str,
    actor: str,
    scale: Scale | None,
    target_inflight: float | None,
    scale_down_stabilization_window_seconds: float | None,
    allow_signature_change: bool,
) -> DeploymentView:
    """Apply the ModelDeployment of ``name`` serving ``build_id``.

    On an existing resource a new build becomes the operator's candidate (its rollout
    strategy decides the rest); leaving out every scale setting keeps the current
    scaling, as in local mode."""
    from shipway.services.deployments import signature_changes, succeeded_build

    scaling = _scaling(container, scale, target_inflight, scale_down_stabilization_window_seconds)
    resources = container.model_deployments
    with container.db.session() as session:
        build = succeeded_build(session, build_id)
        current = resources.find(name)
        previous = ((current or {}).get("spec") or {}).get("build", {}).get("id")
        changes: list[str] = []
        if previous not in (None, build_id):
            changes = signature_changes(session, previous, build, allow_signature_change)
        request = _request(container, name, build, scaling)
        live = resources.apply(model_deployment(request, current))
        spec = live.get("spec") or {}
        audit.record(
            session,
            actor,
            "deployment.set",
            f"deployment/{name}",
            build=build_id,
            previous_build=previous,
            runtime="kubernetes",
            namespace=resources.namespace,
            replicas=spec.get("replicas"),
            autoscaling=spec.get("autoscaling"),
            **({"signature_changes": changes} if changes else {}),
        )
    return get(container, name)


def _scaling(
    container: Container,
    scale: Scale | None,
    target_inflight: float | None,
    scale_down_stabilization_window_seconds: float | None,
) -> Scaling | None:
    """The spec's scaling; None when every scale setting is left out (keep the current)."""
    if target_inflight is not None and target_inflight <= 0:
        raise InvalidInput("target_inflight must be positive")
    if (
        scale_down_stabilization_window_seconds is not None
        and scale_down_stabilization_window_seconds < 0
    ):
        raise InvalidInput("scale_down_stabilization_window_seconds cannot be negative")
    settings = (scale, target_inflight, scale_down_stabilization_window_seconds)
    if all(setting is None for setting in settings):
        return None
    low, high = scale.bounds() if scale is not None else (1, 1)
    return Scaling(
        low,
        high,
        target_inflight,
        scale_down_stabilization_window_seconds,
        container.settings.kubernetes_inflight_metric,
    )


def _request(
    container: Container, name: str, build: Build, scaling: Scaling | None
) -> DeploymentRequest:
    """What a ModelDeployment serving ``build`` as ``name`` holds: the build's signed
    archive URL and its SHA-256 (the archive made now if need be), routing facts."""
    settings = container.settings
    archive = archives.build_archive(container, build.id)
    return DeploymentRequest(
        name=name,
        model=build.model_version.name,
        version=build.model_version.version,
        build_id=build.id,
        archive_url=archives.archive_url(settings, build.id),
        archive_sha256=archive.sha256,
        triton_model_name=build.triton_model_name or name,
        scaling=scaling,
        triton_image=settings.kubernetes_triton_image,
        node_selector=settings.kubernetes_node_selector,
        routing=build_routing(build),
    )


def manifest(
    container: Container,
    name: str,
    build_id: str,
    scale: Scale | None = None,
    target_inflight: float | None = None,
) -> dict[str, Any]:
    """The ModelDeployment serving ``build_id`` as ``name``, to keep in Git (Argo CD
    applies it): what ``deploy`` would apply to a new resource — the signed archive URL
    pods fetch without a token, its SHA-256, the routing facts the in-cluster gateway
    reads — with the namespace and without Shipway's managed-by label (Git manages it).

    The API server admits it first by a server-side dry run (CRD schema and CEL rules,
    the name), so a manifest that would be refused is an error here, naming why; nothing
    is stored. ``NotFound`` for an unknown build, ``Conflict`` for one not succeeded."""
    from shipway.services.deployments import succeeded_build
    from shipway.services.models import check_name

    check_name(name)
    ranged = scale is not None and scale.max_replicas not in (None, scale.min_replicas)
    if ranged != (target_inflight is not None):
        raise InvalidInput(
            "max_replicas above replicas autoscales, and needs target_inflight (requests "
            "in flight a replica), and target_inflight needs max_replicas above replicas"
        )
    scaling = _scaling(container, scale, target_inflight, None) or Scaling()
    resources = container.model_deployments
    with container.db.session() as session:
        build = succeeded_build(session, build_id)
        body = model_deployment(_request(container, name, build, scaling))
    resources.apply(body, dry_run=True)
    body["metadata"]["namespace"] = resources.namespace
    body["metadata"].pop("labels", None)
    return body


def build_routing(build: Build) -> dict[str, Any]:
    """The build's facts the gateway routes by, as ``spec.build`` fields: how a shadow of
    it is judged (its accuracy gate's rule), its declared output kinds, its rank-0
    tensors; the same the local gateway reads from the store (``store_routes``)."""
    rule, kinds = agreement(build)
    scalars = scalar_tensors(build.model_version.signature or {})
    out: dict[str, Any] = {"agreement": rule.to_dict()}
    if kinds:
        out["outputKinds"] = dict(kinds)
    for key, names in (
        ("scalarInputs", scalars["scalar_inputs"]),
        ("scalarOutputs", scalars["scalar_outputs"]),
    ):
        if names:
            out[key] = sorted(names)
    return out


def get(container: Container, name: str) -> DeploymentView:
    resources = container.model_deployments
    body = resources.get(name)
    return deployment_view(body, resources.pods(name).get(name, []))


def list_deployments(container: Container) -> list[DeploymentView]:
    resources = container.model_deployments
    items = resources.list()
    pods = resources.pods() if items else {}
    return [deployment_view(body, pods.get(body["metadata"]["name"], [])) for body in items]


def delete(container: Container, name: str, actor: str) -> None:
    resources = container.model_deployments
    with container.db.session() as session:
        resources.get(name)  # NotFound names the deployment and the namespace
        resources.delete(name)
        audit.record(
            session,
            actor,
            "deployment.delete",
            f"deployment/{name}",
            runtime="kubernetes",
            namespace=resources.namespace,
        )
