from __future__ import annotations

from fastapi import APIRouter

from shipway.api.deps import ContainerDep, Deployer, Viewer
from shipway.api.schemas import BuildIn, BuildOut
from shipway.services import builds

router = APIRouter(prefix="/builds", tags=["builds"])


@router.post("", status_code=202, response_model=BuildOut)
def create_build(body: BuildIn, container: ContainerDep, caller: Deployer) -> BuildOut:
    """Queue a build; poll ``GET /builds/{id}`` for its stage and progress."""
    build = builds.create(
        container,
        body.model,
        body.version,
        body.recipe,
        body.target,
        caller.actor,
        body.options.model_dump(exclude_none=True),
    )
    return BuildOut.of(build)


@router.get("", response_model=list[BuildOut])
def list_builds(container: ContainerDep, _: Viewer) -> list[BuildOut]:
    return [BuildOut.of(b) for b in builds.list_builds(container)]


@router.get("/{build_id}", response_model=BuildOut)
def get_build(build_id: str, container: ContainerDep, _: Viewer) -> BuildOut:
    return BuildOut.of(builds.get(container, build_id))
