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


class BuildOptionsIn(BaseModel):
    calibration: str | None = Field(
        None, description="INT8 calibration method: minmax, entropy or percentile (default)"
    )
    min_cosine: float | None = Field(
        None, description="Accuracy gate: least mean cosine per output on held-out rows (0.99)"
    )
    max_fp32_layers: int | None = Field(
        None, description="Most layers the selective search may keep in FP32 (4)"
    )
    min_top1: float | None = Field(
        None,
        description="Accuracy gate for class-score outputs: least share of held-out rows "
        "whose top-1 class matches FP32 (0.99)",
    )


class BuildIn(BaseModel):
    model: str = Field(description="Registered model name")
    version: int = Field(ge=1)
    recipe: str = Field("fp32", description="fp32, fp16, int8 or int8-dynamic")
    target: str = Field("onnxruntime-cpu", description="onnxruntime-cpu or tensorrt")
    options: BuildOptionsIn = Field(default_factory=BuildOptionsIn)


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
    options: dict[str, Any]
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
    replicas: int | None = Field(
        None,
        description="Replicas of the stable variant (the minimum when autoscaling); 1 on a "
        "new deployment. Leave all scale fields out to keep the current scaling.",
    )
    max_replicas: int | None = Field(None, description="Upper bound when autoscaling")
    target_inflight: float | None = Field(
        None, description="Autoscale to this mean number of requests in flight per replica"
    )
    scale_down_window_s: float | None = Field(
        None, description="Scale down only to the highest recommendation of this window (30)"
    )
    allow_signature_change: bool = Field(
        False,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class VariantIn(BaseModel):
    build_id: str
    weight: int = Field(0, description="Percent of live traffic; taken from stable")
    shadow_share: float = Field(0.0, description="Share of requests mirrored to it (0..1)")
    replicas: int = 1
    max_replicas: int | None = None
    allow_signature_change: bool = Field(
        False,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class RoutingIn(BaseModel):
    weights: dict[str, int] | None = Field(None, description="Percent per variant; sums to 100")
    split: str | None = Field(None, description="weighted | sticky")
    sticky_header: str | None = Field(None, description="Request header holding the sticky key")


class VariantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    build_id: str
    weight: int
    shadow_share: float
    min_replicas: int
    max_replicas: int
    desired_replicas: int


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
    split: str
    sticky_header: str
    autoscale: dict[str, Any]
    variants: list[VariantOut]
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


class RolloutIn(BaseModel):
    build_id: str = Field(description="The candidate: a succeeded build")
    strategy: str = Field("canary", description="canary or experiment")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="canary: steps, interval_s, checks_per_step, failure_threshold, gates, "
        "bake_s, max_unavailable, progress_deadline_s, max_inconclusive, shadow {share, "
        "min_compared, min_agreement, max_error_rate}, thresholds {min_requests, "
        "max_error_rate, max_client_error_increase, max_p50_ratio, max_p99_ratio, "
        "max_drift_score, confidence}; experiment: weight, interval_s, min_requests, "
        "max_duration_s, alpha",
    )
    allow_signature_change: bool = Field(
        False,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class RolloutEventOut(BaseModel):
    at: datetime
    event: str
    actor: str
    reason: str
    details: dict[str, Any]


class RolloutOut(BaseModel):
    id: str
    deployment: str
    strategy: str
    variant: str
    candidate_build_id: str
    stable_build_id: str
    model: str
    candidate_version: int
    phase: str
    running: bool
    weight: int
    step: int
    reason: str
    winner: str | None
    spec: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    timeline: list[RolloutEventOut] = Field(default_factory=list)
