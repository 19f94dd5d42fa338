from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from shipway.api.deps import ContainerDep, Deployer, Viewer
from shipway.api.schemas import ModelVersionOut
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


@router.post("/{name}/versions", status_code=201, response_model=ModelVersionOut)
def register_version(
    name: str,
    container: ContainerDep,
    caller: Deployer,
    onnx: Annotated[UploadFile, File(description="The model as an ONNX file")],
    sample: Annotated[UploadFile, File(description=".npz with one array per model input")],
    tags: Annotated[str | None, Form(description="JSON object of string tags")] = None,
    calibration: Annotated[
        UploadFile | None,
        File(description="Optional .npz calibration dataset for INT8 builds"),
    ] = None,
) -> ModelVersionOut:
    """Register a new version: validated against its graph before anything is stored."""
    request = models.Registration(
        name,
        onnx.file.read(),
        sample.file.read(),
        _tags(tags),
        calibration.file.read() if calibration is not None else None,
    )
    row = models.register(container, request, caller.actor)
    return ModelVersionOut.model_validate(row)


@router.get("", response_model=list[ModelVersionOut])
def list_versions(
    container: ContainerDep, _: Viewer, name: str | None = None
) -> list[ModelVersionOut]:
    return [ModelVersionOut.model_validate(v) for v in models.list_versions(container, name)]


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut)
def get_version(name: str, version: int, container: ContainerDep, _: Viewer) -> ModelVersionOut:
    return ModelVersionOut.model_validate(models.get_version(container, name, version))
