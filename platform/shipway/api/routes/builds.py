from __future__ import annotations

from fastapi import APIRouter

from shipway.api.deps import ContainerDep, Deployer, IdPath, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import BuildIn, BuildOut
from shipway.services import builds

router = APIRouter(prefix="/builds", tags=["builds"])


@router.post(
    "",
    status_code=202,
    response_model=BuildOut,
    responses=responses(400, 403, 404, 409, 410, 422, 503),
)
def create_build(body: BuildIn, container: ContainerDep, caller: Deployer) -> BuildOut:
    """Queue a build; poll ``GET /builds/{id}`` for its stage and progress.

    404 for an unknown model or version; 409 when MLflow holds the version's run only
    as deleted (restore it there), 410 when the registered version or its run is gone
    for good; 503 when MLflow or the build queue is not reachable."""
    build = builds.create(
        container,
        body.model,
        body.version,
        body.recipe.value,
        body.target.value,
        caller.actor,
        body.options.model_dump(mode="json", exclude_none=True),
    )
    return BuildOut.of(build)


@router.get("", response_model=list[BuildOut], responses=responses())
def list_builds(container: ContainerDep, _: Viewer) -> list[BuildOut]:
    return [BuildOut.of(b) for b in builds.list_builds(container)]


@router.get("/{build_id}", response_model=BuildOut, responses=responses(404, 422))
def get_build(build_id: IdPath, container: ContainerDep, _: Viewer) -> BuildOut:
    return BuildOut.of(builds.get(container, build_id))
