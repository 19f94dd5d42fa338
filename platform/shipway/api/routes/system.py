from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from shipway import __version__
from shipway.api.deps import ContainerDep, Viewer
from shipway.api.errors import responses
from shipway.api.routes.deployments import deployment_out
from shipway.api.schemas import StatusOut
from shipway.services import builds, deployments, models

router = APIRouter(tags=["system"])


@router.get("/status", response_model=StatusOut, responses=responses())
def status(container: ContainerDep, _: Viewer) -> StatusOut:
    s = container.settings
    return StatusOut(
        version=__version__,
        api_url=s.resolved_api_url,
        gateway_url=s.gateway_url,
        mlflow_tracking_uri=s.resolved_mlflow_tracking_uri,
        models=len(models.list_versions(container)),
        builds=dict(Counter(b.status for b in builds.list_builds(container))),
        deployments=[deployment_out(container, d) for d in deployments.list_deployments(container)],
    )
