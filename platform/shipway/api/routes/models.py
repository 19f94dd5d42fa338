from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile

from shipway.api.deps import ContainerDep, Deployer, NamePath, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import MAX_INT32, NAME_PATTERN, ModelVersionOut
from shipway.errors import InvalidInput
from shipway.services import models

router = APIRouter(prefix="/models", tags=["models"])


def _tags(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"tags must be a JSON object: {exc}") from None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise InvalidInput('tags must be a JSON object of strings, e.g. {"team": "search"}')
    return tags


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=ModelVersionOut,
    responses=responses(400, 403, 409, 422, 503),
)
def register_version(
    name: NamePath,
    container: ContainerDep,
    caller: Deployer,
    onnx: Annotated[UploadFile, File(description="The model as an ONNX file")],
    sample: Annotated[UploadFile, File(description=".npz with one array per model input")],
    # Optional parts are left out, never null: multipart has no null.
    tags: Annotated[str, Form(description='JSON object of string tags: {"team": "search"}')] = "",
    calibration: Annotated[
        UploadFile, File(description="Optional .npz calibration dataset for INT8 builds")
    ] = None,  # type: ignore[assignment]
) -> ModelVersionOut:
    """Register a new version: validated against its graph before anything is stored.

    422 when the ONNX file, the sample or the tags do not hold what they must (the
    message says what); 409 when MLflow would number the version as one Shipway holds
    (its registered model was deleted); 503 when MLflow is not reachable."""
    request = models.Registration(
        name,
        onnx.file.read(),
        sample.file.read(),
        _tags(tags),
        calibration.file.read() if calibration is not None else None,
    )
    row = models.register(container, request, caller.actor)
    return ModelVersionOut.model_validate(row)


@router.get("", response_model=list[ModelVersionOut], responses=responses(422))
def list_versions(
    container: ContainerDep,
    _: Viewer,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=63)] = None,
) -> list[ModelVersionOut]:
    return [ModelVersionOut.model_validate(v) for v in models.list_versions(container, name)]


@router.get(
    "/{name}/versions/{version}", response_model=ModelVersionOut, responses=responses(404, 422)
)
def get_version(
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=MAX_INT32)],
    container: ContainerDep,
    _: Viewer,
) -> ModelVersionOut:
    return ModelVersionOut.model_validate(models.get_version(container, name, version))
