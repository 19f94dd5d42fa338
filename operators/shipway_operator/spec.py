"""The ``ModelDeployment`` spec as typed data, read from the resource's dict.

The API server already validates against the CRD's schema (crds/*.yaml); these models
give the builders typed fields and turn what slipped past (a resource stored under an
older schema, a hand-made dict in a test) into one ``InvalidSpec`` with a clear message.
Field names are the CRD's camelCase ones (aliases); unknown fields are ignored, so an
operator one version behind a newer CRD still reconciles what it knows.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from shipway_operator.routing_spec import GatewayAPIRouting

GROUP = "shipway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# schemes Triton reads a model repository from itself; http(s) archives are fetched first
NATIVE_SCHEMES = ("s3://", "gs://", "as://")
ARCHIVE_SCHEMES = ("http://", "https://")


class InvalidSpec(ValueError):
    """A spec the operator cannot build from; permanent until the resource changes."""


class Variant(StrEnum):
    STABLE = "stable"
    CANDIDATE = "candidate"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


Quantity = int | str


class ModelRef(_Model):
    name: str = Field(min_length=1, max_length=63)
    version: str = Field(min_length=1, max_length=63)


class Build(_Model):
    """A build as the resource names it. Besides where it is, what routing needs to know
    of it, so that the gateway (which reads resources, not Shipway's database) can serve
    it: the model's name inside its Triton, the registered version it was made from, how
    a shadow of it is judged (``agreement``: ``AgreementRule.to_dict()``), its declared
    output kinds and rank-0 tensors. Builds never change: the status keeps a copy of the
    stable one, so these stay known after the spec moves on to another build."""

    id: str = Field(min_length=1, max_length=63)
    model_repository: str
    sha256: str | None = None
    triton_model_name: str | None = None
    model_version: int | None = Field(None, ge=1)
    agreement: dict[str, Any] | None = None
    output_kinds: dict[str, str] | None = None
    scalar_inputs: tuple[str, ...] | None = None
    scalar_outputs: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _known_scheme(self) -> Build:
        if not self.model_repository.startswith(NATIVE_SCHEMES + ARCHIVE_SCHEMES):
            raise ValueError(
                f"build.modelRepository must be an http(s), s3, gs or as URI, "
                f"got {self.model_repository!r}"
            )
        return self

    @property
    def fetched(self) -> bool:
        """True when an init container fetches the repository (Triton cannot read it)."""
        return self.model_repository.startswith(ARCHIVE_SCHEMES)

    def as_status(self) -> dict[str, Any]:
        data = self.model_dump(by_alias=True, exclude_none=True)
        for key in ("scalarInputs", "scalarOutputs"):
            if key in data:
                data[key] = list(data[key])
        return data


# a container's resource names (as the CRD's rule): the standard ones, hugepages-<size>,
# or an extended resource's qualified name, e.g. nvidia.com/mig-1g.10gb
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_HUGEPAGES = re.compile(r"^hugepages-[0-9]+[KMGTPE]i$")
_EXTENDED = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _quantity(name: str, value: Quantity) -> Decimal:
    """A Kubernetes quantity's value (``1``, ``"1"`` and ``"1000m"`` are equal)."""
    try:
        return parse_quantity(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a Kubernetes quantity") from None


class Resources(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _container_rules(self) -> Resources:
        """As the API server's Pod validation: known names, and extended resources and
        hugepages (never overcommitted) requested only at their limit."""
        for kind, values in (("requests", self.requests), ("limits", self.limits)):
            for name, value in values.items():
                if not (
                    name in STANDARD_RESOURCES or _HUGEPAGES.match(name) or _EXTENDED.match(name)
                ):
                    raise ValueError(
                        f"triton.resources.{kind}: {name!r} is not cpu, memory, "
                        "ephemeral-storage, hugepages-<size> or an extended resource "
                        "<domain>/<name>"
                    )
                _quantity(f"triton.resources.{kind}.{name}", value)
        for name, value in self.requests.items():
            if "/" not in name and not name.startswith("hugepages-"):
                continue
            limit = self.limits.get(name)
            if limit is None or _quantity(name, limit) != _quantity(name, value):
                raise ValueError(
                    f"triton.resources: {name} is set in limits; a request, if given, "
                    f"must equal its limit (request {value!r}, limit {limit!r})"
                )
        return self


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Triton(_Model):
    image: str = Field(DEFAULT_TRITON_IMAGE, min_length=1)
    args: tuple[str, ...] = ()
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class Target(_Model):
    metric: Literal["cpu", "memory", "pods"]
    average_utilization: int | None = Field(None, ge=1)
    metric_name: str | None = None
    average_value: Quantity | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Target:
        if self.metric == "pods":
            if self.metric_name is None or self.average_value is None:
                raise ValueError("a pods target takes metricName and averageValue")
        elif self.average_utilization is None:
            raise ValueError(f"a {self.metric} target takes averageUtilization")
        return self


class Autoscaling(_Model):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    target: Target
    # the HPA's own `behavior`, passed through as written (HPA field names)
    behavior: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must be at most maxReplicas")
        return self


class Routing(_Model):
    split: Literal["weighted", "sticky"] = "weighted"
    sticky_header: str = "x-shipway-key"
    # who routes: the Shipway gateway in the cluster (every feature), or an HTTPRoute of
    # the cluster's Gateway API implementation (shipway_operator.httproute.unsupported
    # says what that cannot express)
    provider: Literal["shipway-gateway", "gateway-api"] = "shipway-gateway"
    gateway_api: GatewayAPIRouting | None = Field(None, alias="gatewayAPI")


# The analysis settings: the rollout engine's (shipway.rollout) fields in the CRD's
# camelCase, typed as the CRD types them; unset ones take the engine's defaults, and the
# engine checks what spans fields. Seconds are whole (int32, as every Kubernetes *Seconds).
Seconds = Annotated[int, Field(ge=0, le=2**31 - 1)]


class ShadowSettings(_Model):
    share: float | None = None
    min_compared: int | None = None
    min_agreement: float | None = None
    max_error_rate: float | None = None
    max_compared: int | None = None


class ThresholdSettings(_Model):
    min_requests: int | None = None
    max_error_rate: float | None = None
    max_client_error_increase: float | None = None
    max_p50_ratio: float | None = None
    max_p99_ratio: float | None = None
    max_drift_score: float | None = None
    confidence: float | None = None


class CanarySettings(_Model):
    step_weights: tuple[int, ...] | None = None
    interval_seconds: Seconds | None = None
    checks_per_step: int | None = None
    failure_limit: int | None = None
    consecutive_error_limit: int | None = None
    inconclusive_limit: int | None = None
    progress_deadline_seconds: Seconds | None = None
    bake_seconds: Seconds | None = None
    gates: tuple[int, ...] | None = None
    shadow: ShadowSettings | None = None
    thresholds: ThresholdSettings | None = None


class ExperimentSettings(_Model):
    weight: int | None = None
    interval_seconds: Seconds | None = None
    min_requests: int | None = None
    max_duration_seconds: Seconds | None = None
    alpha: float | None = None


class Rollout(_Model):
    strategy: Literal["canary", "experiment"] = "canary"
    canary: CanarySettings | None = None
    experiment: ExperimentSettings | None = None

    def engine_settings(self) -> dict[str, Any]:
        """The strategy's settings as the rollout engine takes them
        (``shipway.rollout.codec.canary_spec`` / ``experiment_spec``): its snake_case
        names, seconds as floats, lists as lists; unset settings left out (the engine's
        defaults)."""
        settings = self.canary if self.strategy == "canary" else self.experiment
        if settings is None:
            return {}
        return _engine_values(settings.model_dump(exclude_none=True))


def _engine_values(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _engine_values(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif key.endswith("_seconds"):
            value = float(value)
        out[key] = value
    return out


class Drift(_Model):
    actions: tuple[Literal["alert", "webhook", "rollback"], ...] = ("alert",)
    webhook_url: str | None = Field(None, alias="webhookURL")


class Spec(_Model):
    model: ModelRef
    build: Build
    triton: Triton = Field(default_factory=Triton)
    replicas: int | None = Field(None, ge=1)
    autoscaling: Autoscaling | None = None
    routing: Routing = Field(default_factory=Routing)
    rollout: Rollout = Field(default_factory=Rollout)
    drift: Drift = Field(default_factory=Drift)

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> Spec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either replicas or autoscaling, not both")
        return self


def parse_spec(spec: dict[str, Any]) -> Spec:
    """The typed spec; ``InvalidSpec`` names every bad field (CRD paths, camelCase)."""
    try:
        return Spec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidSpec(problems) from None
