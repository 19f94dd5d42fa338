"""Request and response bodies of the API: the OpenAPI document is made from these.

Every constraint the services enforce on one field is declared here too (ranges,
choices, patterns), so the document tells a client what will be accepted. Rules that
tie several fields together (``replicas <= max_replicas``, weights summing to 100, a
recipe/target pair with a build path) cannot be said in JSON Schema; the services
refuse those with 422 and the reason. Request bodies forbid unknown fields, so a
misspelt option is refused rather than silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
)

from shipway.builds.recipes import Recipe, Target
from shipway.drift.policy import Action
from shipway.engines.calibration import CalibrationMethod
from shipway.rollout.canary import CanarySpec
from shipway.rollout.experiment import ExperimentSpec
from shipway.services.models import NAME_RE
from shipway.store.models import Split


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC, so say so (RFC 3339
    # needs an offset: "2026-01-02T03:04:05.123456Z").
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
"""A timestamp in UTC, serialized as RFC 3339 with its offset."""

NAME_PATTERN = NAME_RE.pattern
"""Model, deployment and variant names: DNS-label-like (they end up in URLs and
Kubernetes object names)."""
ID_PATTERN = r"^[0-9A-Za-z_-]{1,32}$"
"""Build and rollout ids: the store makes 12 hexadecimal digits
(``shipway.store.models.new_id``) in a 32-character column."""
STICKY_HEADER_PATTERN = r"^[xX]-[A-Za-z0-9-]+$"
URL_PATTERN = r"^https?://[^\s\x00]+$"
MAX_VARIANT_NAME = 32  # the store's column width
MAX_REPLICAS = 16  # per variant, locally (``services.deployments.Scale``)
MAX_INT32 = 2**31 - 1  # version numbers: the store's INTEGER column

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
Id = Annotated[str, Field(pattern=ID_PATTERN)]
# Numbers are strict: JSON's false or "5" is not a number (pydantic's lax mode would
# take them, and the document says otherwise).
Replicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, strict=True)]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]


class ErrorOut(BaseModel):
    """Every error answer: one human-readable sentence."""

    detail: str = Field(description="What went wrong, and what to do about it")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: ['body', 'weight'], ['query', 'min_rows']")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'less_than_equal'")


class ValidationErrorOut(ErrorOut):
    """422: the request does not fit the document (``errors`` names each field), or a
    rule across fields that JSON Schema cannot state refused it (``errors`` empty)."""

    errors: list[FieldError] = Field(default_factory=list)


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: int
    mlflow_run_id: str
    onnx_sha256: str
    signature: dict[str, Any]
    tags: dict[str, Any]
    created_at: UtcDateTime


class BuildOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    calibration: CalibrationMethod | None = Field(
        None, description="INT8 calibration method (default percentile)"
    )
    min_cosine: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        strict=True,
        description="Accuracy gate: least mean cosine per output on held-out rows (0.99)",
    )
    max_fp32_layers: int | None = Field(
        None,
        ge=0,
        le=64,
        strict=True,
        description="Most layers the selective search may keep in FP32 (4)",
    )
    min_top1: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="Accuracy gate for class-score outputs: least share of held-out rows "
        "whose top-1 class matches FP32 (0.99)",
    )
    min_row_cosine: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        strict=True,
        description="Least cosine of every held-out row (and of every mirrored answer in a "
        "shadow phase); default 1 - 2 * (1 - min_cosine), 0.98",
    )
    quantize_embeddings: bool | None = Field(
        None,
        strict=True,
        description="int8-dynamic only: store the embedding tables (Gather weights) as INT8 "
        "too, for size (MiniLM 53 -> 17 MB); gated like the rest (default false)",
    )


class BuildIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: Name = Field(description="Registered model name")
    version: int = Field(ge=1, le=MAX_INT32, strict=True)
    recipe: Recipe = Field(Recipe.FP32, description="Numeric precision of the engine")
    target: Target = Field(
        Target.ONNXRUNTIME_CPU,
        description="Where it runs; not every recipe has a build path on every target "
        "(fp32: onnxruntime-cpu or openvino-cpu; int8-dynamic: onnxruntime-cpu; fp16: "
        "tensorrt; int8: all three; bf16: openvino-cpu, where the CPU has bfloat16)",
    )
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
    created_at: UtcDateTime
    updated_at: UtcDateTime

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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    build_id: Id
    replicas: Replicas | None = Field(
        None,
        description="Replicas of the stable variant (the minimum when autoscaling); 1 on a "
        "new deployment. Leave all scale fields out to keep the current scaling.",
    )
    max_replicas: Replicas | None = Field(
        None, description="Upper bound when autoscaling; at least replicas"
    )
    target_inflight: float | None = Field(
        None,
        gt=0,
        strict=True,
        description="Autoscale to this mean number of requests in flight per replica",
    )
    scale_down_stabilization_window_seconds: float | None = Field(
        None,
        ge=0,
        strict=True,
        # the HPA's behavior.scaleDown.stabilizationWindowSeconds; the former name still read
        validation_alias=AliasChoices(
            "scale_down_stabilization_window_seconds", "scale_down_window_s"
        ),
        description="Scale down only to the highest recommendation of this window, in "
        "seconds (30), as the HPA's behavior.scaleDown.stabilizationWindowSeconds; "
        "`scale_down_window_s` is its former name",
    )
    allow_signature_change: bool = Field(
        False,
        strict=True,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    build_id: Id
    weight: Percent = Field(
        0, description="Percent of live traffic, taken from stable; 0 for a shadow"
    )
    shadow_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        strict=True,
        description="Share of requests mirrored to it; 0 for a live variant",
    )
    replicas: Replicas = 1
    max_replicas: Replicas | None = Field(None, description="At least replicas")
    allow_signature_change: bool = Field(
        False,
        strict=True,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class RoutingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weights: dict[str, Percent] | None = Field(
        None,
        description="Percent per variant (each one the deployment has; 404 otherwise); "
        "with the variants left out, sums to 100",
    )
    split: Split | None = Field(None, description="How a request picks its variant")
    sticky_header: str | None = Field(
        None,
        pattern=STICKY_HEADER_PATTERN,
        max_length=100,
        description="Request header (an x- header) holding the sticky key",
    )


class DriftPolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    actions: list[Action] = Field(
        default_factory=lambda: [Action.ALERT],
        description="alert: an audit event and a warning; webhook: a signed POST to "
        "webhook_url (needs SHIPWAY_WEBHOOK_SECRET on the server); rollback: stable back "
        "to the build it replaced",
    )
    webhook_url: str | None = Field(
        None, pattern=URL_PATTERN, max_length=2000, description="http(s) URL"
    )


class DriftPolicyOut(BaseModel):
    actions: list[str]
    webhook_url: str | None


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
    updated_at: UtcDateTime


class DriftVariantOut(BaseModel):
    """One variant's check now; the drift report's other fields (score, features,
    missing, min_p_adjusted...) follow as they are."""

    model_config = ConfigDict(extra="allow")

    variant: str
    build_id: str
    verdict: str = Field(description="drift, no-drift, insufficient-data or no-profile")


class DriftCheckOut(BaseModel):
    at: UtcDateTime
    variant: str
    build_id: str
    verdict: str
    rows: int
    score: float | None = Field(description="PSI; null where it is not a number")
    min_p_adjusted: float | None


class DriftOut(BaseModel):
    deployment: str
    variants: list[DriftVariantOut]
    history: list[DriftCheckOut] = Field(description="Past checks, newest first")


class StatusOut(BaseModel):
    version: str
    api_url: str
    gateway_url: str
    mlflow_tracking_uri: str
    models: int
    builds: dict[str, int]
    deployments: list[DeploymentOut]


def _settings_schema(spec: type) -> dict[str, Any]:
    """The JSON Schema of a strategy's settings, from the dataclass the rollout codec
    builds (``shipway.rollout.codec``), inlined, unknown keys refused as the codec
    refuses them. The codec validates; this only tells clients what it accepts."""
    schema = TypeAdapter(spec).json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return inline(defs[node["$ref"].rsplit("/", 1)[1]])
        # A set (gates) takes repeats as one: the codec accepts them, so may clients.
        out = {k: inline(v) for k, v in node.items() if k != "uniqueItems"}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
        return out

    return inline(schema)


RolloutSettings = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "anyOf": [_settings_schema(CanarySpec), _settings_schema(ExperimentSpec)],
            "description": "The strategy's settings; those left out take their defaults",
        }
    ),
]


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    build_id: Id = Field(description="The candidate: a succeeded build")
    strategy: Literal["canary", "experiment"] = "canary"
    settings: RolloutSettings = Field(
        default_factory=dict,
        description="canary: step_weights, interval_seconds, checks_per_step, failure_limit, "
        "gates, bake_seconds, consecutive_error_limit, progress_deadline_seconds, "
        "inconclusive_limit, shadow {share, min_compared, min_agreement, max_error_rate, "
        "max_compared}, thresholds {min_requests, max_error_rate, max_client_error_increase, "
        "max_p50_ratio, max_p99_ratio, max_drift_score, confidence}; experiment: weight, "
        "interval_seconds, min_requests, max_duration_seconds, alpha. The names of before "
        "(steps, interval_s, failure_threshold, max_unavailable, max_inconclusive, "
        "progress_deadline_s, bake_s, max_duration_s) are still accepted. Unknown or "
        "ill-typed settings are refused (422) with the reason.",
    )
    allow_signature_change: bool = Field(
        False,
        strict=True,
        description="Serve it even though its signature would break clients of the build "
        "serving now (renamed or removed inputs/outputs, other dtypes, ranks or sizes); "
        "otherwise such a build is refused with 409. Recorded in the audit trail.",
    )


class RolloutEventOut(BaseModel):
    at: UtcDateTime
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
    created_at: UtcDateTime
    updated_at: UtcDateTime
    finished_at: UtcDateTime | None
    timeline: list[RolloutEventOut] = Field(default_factory=list)
