from __future__ import annotations

from fastapi import APIRouter, Response

from shipway.api.deps import ContainerDep, Deployer, Viewer
from shipway.api.schemas import DeploymentIn, DeploymentOut
from shipway.container import Container
from shipway.services import deployments
from shipway.store.models import Deployment

router = APIRouter(prefix="/deployments", tags=["deployments"])


def deployment_out(container: Container, deployment: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(
        {
            **{k: getattr(deployment, k) for k in ("name", "build_id", "status", "message")},
            "updated_at": deployment.updated_at,
            "replicas": deployment.replicas,
            "infer_url": f"{container.settings.gateway_url}/v2/models/{deployment.name}/infer",
        }
    )


@router.put("/{name}", response_model=DeploymentOut)
def deploy(
    name: str, body: DeploymentIn, container: ContainerDep, caller: Deployer
) -> DeploymentOut:
    """Create the deployment or point it at another build; the runtime follows."""
    return deployment_out(
        container, deployments.deploy(container, name, body.build_id, caller.actor)
    )


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
