from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from shipway.api.deps import ContainerDep, Deployer, Viewer
from shipway.api.schemas import DeploymentIn, DeploymentOut, RoutingIn, VariantIn
from shipway.container import Container
from shipway.errors import InvalidInput
from shipway.services import deployments
from shipway.services import drift as drift_service
from shipway.services.deployments import Scale
from shipway.store.models import Deployment

router = APIRouter(prefix="/deployments", tags=["deployments"])

FIELDS = ("name", "build_id", "status", "message", "split", "sticky_header", "autoscale")


def deployment_out(container: Container, deployment: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(
        {
            **{k: getattr(deployment, k) for k in FIELDS},
            "updated_at": deployment.updated_at,
            "variants": deployment.variants,
            "replicas": deployment.replicas,
            "infer_url": f"{container.settings.gateway_url}/v2/models/{deployment.name}/infer",
        }
    )


@router.put("/{name}", response_model=DeploymentOut)
def deploy(
    name: str, body: DeploymentIn, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    """Create the deployment or point its stable variant at another build."""
    deployment = deployments.deploy(
        container,
        name,
        body.build_id,
        caller.actor,
        None
        if body.replicas is None and body.max_replicas is None
        else Scale(body.replicas or 1, body.max_replicas),
        body.target_inflight,
        body.scale_down_window_s,
        body.allow_signature_change,
    )
    return deployment_out(container, deployment)


@router.put("/{name}/variants/{variant}", response_model=DeploymentOut)
def set_variant(
    name: str, variant: str, body: VariantIn, container: ContainerDep, caller: Deployer
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


@router.delete("/{name}/variants/{variant}", response_model=DeploymentOut)
def remove_variant(
    name: str, variant: str, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    return deployment_out(
        container, deployments.remove_variant(container, name, variant, caller.actor)
    )


@router.put("/{name}/routing", response_model=DeploymentOut)
def set_routing(
    name: str, body: RoutingIn, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    """Set all weights at once (summing to 100) and the split: weighted or sticky."""
    deployment = deployments.set_routing(
        container, name, caller.actor, body.weights, body.split, body.sticky_header
    )
    return deployment_out(container, deployment)


@router.get("", response_model=list[DeploymentOut])
def list_deployments(container: ContainerDep, _: Viewer) -> list[DeploymentOut]:
    return [deployment_out(container, d) for d in deployments.list_deployments(container)]


@router.get("/{name}", response_model=DeploymentOut)
def get_deployment(name: str, container: ContainerDep, _: Viewer) -> DeploymentOut:
    return deployment_out(container, deployments.get(container, name))


@router.delete("/{name}", status_code=204)
def delete_deployment(name: str, container: ContainerDep, caller: Deployer) -> Response:
    deployments.delete(container, name, caller.actor)
    return Response(status_code=204)


@router.get("/{name}/drift")
def drift(name: str, container: ContainerDep, _: Viewer, min_rows: int = 100) -> dict[str, Any]:
    """Check each variant's live inputs (the gateway's sampled window) against the
    reference profile of the version it serves; the answer has the history of checks.

    A window with fewer than ``min_rows`` rows is "insufficient-data", never "no-drift".
    """
    if not 10 <= min_rows <= 100_000:
        raise InvalidInput(f"min_rows must be within 10..100000, got {min_rows}")
    checks = drift_service.check(container, name, min_rows)
    return {
        "deployment": name,
        "variants": [{"variant": c.variant, "build_id": c.build_id, **c.report} for c in checks],
        "history": [
            {
                "at": h.at.isoformat(),
                "variant": h.variant,
                "build_id": h.build_id,
                "verdict": h.verdict,
                "rows": h.rows,
                "score": h.score,
                "min_p_adjusted": h.min_p_adjusted,
            }
            for h in drift_service.history(container, name)
        ],
    }


@router.put("/{name}/drift-policy")
def set_drift_policy(
    name: str, body: dict[str, Any], container: ContainerDep, caller: Deployer
) -> dict[str, Any]:
    """What a drift breach does: ``{"actions": ["alert", "webhook", "rollback"],
    "webhook_url": "https://..."}``. Webhooks are signed with the server's
    SHIPWAY_WEBHOOK_SECRET; a rollback puts back the stable build the current one
    replaced."""
    return drift_service.set_policy(container, name, body, caller.actor).to_dict()
