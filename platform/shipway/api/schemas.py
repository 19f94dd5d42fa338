"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: int
    mlflow_run_id: str
    onnx_sha256: str
    signature: dict[str, Any]
    tags: dict[str, Any]
    created_at: datetime


class BuildIn(BaseModel):
    model: str = Field(description="Registered model name")
    version: int = Field(ge=1)
    recipe: str = "fp32"
    target: str = "onnxruntime-cpu"


class BuildOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    version: int
    recipe: str
    target: str
    status: str
    stage: str
    progress: float
    error: str | None
    artifact_path: str | None
    triton_model_name: str | None
    report: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, build: Any) -> BuildOut:
        return cls.model_validate(
            {
                **{k: getattr(build, k) for k in cls.model_fields if hasattr(build, k)},
                "model": build.model_version.name,
                "version": build.model_version.version,
            }
        )


class DeploymentIn(BaseModel):
    build_id: str


class ReplicaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    variant: str
    build_id: str
    url: str
    state: str


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    build_id: str
    status: str
    message: str | None
    replicas: list[ReplicaOut]
    infer_url: str
    updated_at: datetime


class StatusOut(BaseModel):
    version: str
    api_url: str
    gateway_url: str
    mlflow_tracking_uri: str
    models: int
    builds: dict[str, int]
    deployments: list[DeploymentOut]
