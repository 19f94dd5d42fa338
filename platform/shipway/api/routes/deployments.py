from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from shipway.api.deps import ContainerDep, Deployer, NamePath, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import (
    MAX_VARIANT_NAME,
    NAME_PATTERN,
    DeploymentIn,
    DeploymentOut,
    DriftCheckOut,
    DriftOut,
    DriftPolicyIn,
    DriftPolicyOut,
    DriftVariantOut,
    RoutingIn,
    VariantIn,
)
from shipway.container import Container
from shipway.kubernetes.resource import DeploymentView
from shipway.services import deployments
from shipway.services import drift as drift_service
from shipway.services.deployments import STABLE, Scale
from shipway.store.models import Deployment

router = APIRouter(prefix="/deployments", tags=["deployments"])

# The stable variant changes through PUT /deployments/{name}, and goes with the
# deployment: the services refuse it here (422); the document says so.
OtherVariant = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        max_length=MAX_VARIANT_NAME,
        json_schema_extra={"not": {"const": STABLE}},
        description="A variant other than stable: a canary, an experiment arm, a shadow",
    ),
]

FIELDS = ("name", "build_id", "status", "message", "split", "sticky_header", "autoscale")


def deployment_out(container: Container, deployment: Deployment | DeploymentView) -> DeploymentOut:
    """One document for both modes: a local deployment is served by the gateway; in
    Kubernetes mode the view names the stable Service's Triton endpoint in the cluster."""
    infer_url = getattr(deployment, "infer_url", None) or (
        f"{container.settings.gateway_url}/v2/models/{deployment.name}/infer"
    )
    return DeploymentOut.model_validate(
        {
            **{k: getattr(deployment, k) for k in FIELDS},
            "updated_at": deployment.updated_at,
            "variants": deployment.variants,
            "replicas": deployment.replicas,
            "infer_url": infer_url,
        }
    )


@router.put(
    "/{name}", response_model=DeploymentOut, responses=responses(400, 403, 404, 409, 422, 503)
)
def deploy(
    name: NamePath, body: DeploymentIn, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    """Create the deployment or point its stable variant at another build.

    In Kubernetes mode: apply its ModelDeployment (a new build on an existing one becomes
    the operator's candidate); a name or spec the API server refuses is 422 with its
    message, an unreachable API server 503."""
    deployment = deployments.deploy(
        container,
        name,
        body.build_id,
        caller.actor,
        None
        if body.replicas is None and body.max_replicas is None
        else Scale(body.replicas or 1, body.max_replicas),
        body.target_inflight,
        body.scale_down_stabilization_window_seconds,
        body.allow_signature_change,
    )
    return deployment_out(container, deployment)


@router.put(
    "/{name}/variants/{variant}",
    response_model=DeploymentOut,
    responses=responses(400, 403, 404, 409, 422),
)
def set_variant(
    name: NamePath,
    variant: OtherVariant,
    body: VariantIn,
    container: ContainerDep,
    caller: Deployer,
) -> DeploymentOut:
    """Add or change a canary, experiment arm or shadow; its weight comes off stable."""
    deployment = deployments.set_variant(
        container,
        name,
        variant,
        body.build_id,
        caller.actor,
        body.weight,
        body.shadow_share,
        Scale(body.replicas, body.max_replicas),
        body.allow_signature_change,
    )
    return deployment_out(container, deployment)


@router.delete(
    "/{name}/variants/{variant}",
    response_model=DeploymentOut,
    responses=responses(403, 404, 409, 422),
)
def remove_variant(
    name: NamePath, variant: OtherVariant, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    return deployment_out(
        container, deployments.remove_variant(container, name, variant, caller.actor)
    )


@router.put(
    "/{name}/routing",
    response_model=DeploymentOut,
    responses=responses(400, 403, 404, 409, 422),
)
def set_routing(
    name: NamePath, body: RoutingIn, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    """Set all weights at once (summing to 100) and the split: weighted or sticky."""
    deployment = deployments.set_routing(
        container,
        name,
        caller.actor,
        body.weights,
        body.split.value if body.split else None,
        body.sticky_header,
    )
    return deployment_out(container, deployment)


@router.get("", response_model=list[DeploymentOut], responses=responses(503))
def list_deployments(container: ContainerDep, _: Viewer) -> list[DeploymentOut]:
    return [deployment_out(container, d) for d in deployments.list_deployments(container)]


@router.get("/{name}", response_model=DeploymentOut, responses=responses(404, 422, 503))
def get_deployment(name: NamePath, container: ContainerDep, _: Viewer) -> DeploymentOut:
    return deployment_out(container, deployments.get(container, name))


@router.delete("/{name}", status_code=204, responses=responses(403, 404, 409, 422, 503))
def delete_deployment(name: NamePath, container: ContainerDep, caller: Deployer) -> Response:
    deployments.delete(container, name, caller.actor)
    return Response(status_code=204)


@router.get("/{name}/drift", response_model=DriftOut, responses=responses(404, 409, 422, 503))
def drift(
    name: NamePath,
    container: ContainerDep,
    _: Viewer,
    min_rows: Annotated[
        int, Query(ge=10, le=100_000, description="Fewer rows: insufficient-data")
    ] = 100,
) -> DriftOut:
    """Check each variant's live inputs (the gateway's sampled window) against the
    reference profile of the version it serves; the answer has the history of checks.

    A window with fewer than ``min_rows`` rows is "insufficient-data", never "no-drift".
    503 when the gateway's samples are not reachable.
    """
    deployments.local_only(container, "checking drift")
    checks = drift_service.check(container, name, min_rows)
    return DriftOut(
        deployment=name,
        variants=[
            DriftVariantOut.model_validate(
                {**c.report, "variant": c.variant, "build_id": c.build_id}
            )
            for c in checks
        ],
        history=[
            DriftCheckOut.model_validate(h, from_attributes=True)
            for h in drift_service.history(container, name)
        ],
    )


@router.put(
    "/{name}/drift-policy",
    response_model=DriftPolicyOut,
    responses=responses(400, 403, 404, 409, 422),
)
def set_drift_policy(
    name: NamePath, body: DriftPolicyIn, container: ContainerDep, caller: Deployer
) -> DriftPolicyOut:
    """What a drift breach does. Webhooks are signed with the server's
    SHIPWAY_WEBHOOK_SECRET (a webhook policy without it is refused); a rollback puts
    back the stable build the current one replaced."""
    deployments.local_only(container, "setting a drift policy")
    policy = drift_service.set_policy(container, name, body.model_dump(mode="json"), caller.actor)
    return DriftPolicyOut.model_validate(policy.to_dict())
