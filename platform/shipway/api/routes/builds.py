from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials

from shipway.api.deps import ContainerDep, Deployer, IdPath, Viewer, _bearer, get_caller
from shipway.api.errors import responses
from shipway.api.schemas import MAX_REPLICAS, NAME_PATTERN, BuildIn, BuildOut
from shipway.kubernetes import archives
from shipway.services import builds, deployments
from shipway.services.deployments import Scale

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


SHA256_HEADER = "X-Checksum-SHA256"


def archive_reader(
    request: Request,
    build_id: IdPath,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    signature: Annotated[
        str | None,
        Query(
            max_length=64,
            description="HMAC-SHA256 of the build id under SHIPWAY_ARCHIVE_KEY, as in the "
            "URL deploy writes into a ModelDeployment; without it, a bearer token",
        ),
    ] = None,
) -> None:
    """Pods fetch with the signed URL (no token); anyone else needs a token (any role)."""
    container = request.app.state.container
    if not archives.signed(container.settings, build_id, signature):
        get_caller(request, credentials)


ARCHIVE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The repository as a reproducible .tar.gz",
        "headers": {
            SHA256_HEADER: {
                "description": "Hex SHA-256 of the archive",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            }
        },
    }
}


@router.get(
    "/{build_id}/model-repository.tar.gz",
    response_class=FileResponse,
    responses={**ARCHIVE_OK, **responses(404, 409, 410, 422, 503)},
    dependencies=[Depends(archive_reader)],
)
def model_repository(build_id: IdPath, container: ContainerDep) -> FileResponse:
    """A succeeded build's Triton model repository as a .tar.gz (``<model>/config.pbtxt``,
    ``<model>/1/...`` at its root), the archive Triton pods fetch on Kubernetes; its hex
    SHA-256 in ``X-Checksum-SHA256``. Made from the build's MLflow artifact on first use
    and reproducible, so its digest is the one deploy wrote into the ModelDeployment.

    404 for an unknown build, 409 for one not succeeded, 410 when MLflow no longer has
    its files, 503 when MLflow is not reachable."""
    archive = archives.build_archive(container, build_id)
    return FileResponse(
        archive.path,
        media_type="application/gzip",
        filename=f"{build_id}-model-repository.tar.gz",
        headers={SHA256_HEADER: archive.sha256},
    )


@router.get(
    "/{build_id}/model-deployment",
    responses=responses(403, 404, 409, 410, 422, 503),
)
def model_deployment_manifest(
    build_id: IdPath,
    container: ContainerDep,
    _: Deployer,
    name: Annotated[
        str, Query(pattern=NAME_PATTERN, max_length=63, description="The deployment's name")
    ],
    replicas: Annotated[int, Query(ge=1, le=MAX_REPLICAS)] = 1,
    max_replicas: Annotated[int | None, Query(ge=1, le=MAX_REPLICAS)] = None,
    target_inflight: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    """The ModelDeployment (``shipway.io/v1alpha1``) that serves this build as ``name``,
    to keep in Git for Argo CD: ``spec.build`` holds the signed archive URL pods fetch
    without a token and its SHA-256. Admitted by the API server with a server-side dry
    run first; nothing is stored or applied. A Deployer's call, as the URL is a
    capability to fetch the build.

    The URL's signature does not expire (it is revoked only by a new
    SHIPWAY_ARCHIVE_KEY, which breaks every resource holding one): keep such manifests in
    a private repository.

    404 for an unknown build; 409 for one not succeeded, or without
    SHIPWAY_RUNTIME=kubernetes; 410 when MLflow no longer has its files; 422 for what the
    CRD refuses (the API server's message) or a replica range without target_inflight;
    503 when the Kubernetes API server is not reachable."""
    scale = Scale(replicas, max_replicas)
    return deployments.manifest(container, name, build_id, scale, target_inflight)
