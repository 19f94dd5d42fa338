"""Pure translations between Shipway's deployments and ModelDeployment resources.

No I/O: a deployment request becomes the resource's body (what ``shipway-api`` applies),
and a resource with its pods becomes the API's view of a deployment (the fields of
``DeploymentOut``). Field names are the CRD's (``operators/shipway_operator/crds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GROUP = "shipway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
FIELD_MANAGER = "shipway-api"
STABLE, CANDIDATE = "stable", "candidate"
# labels the operator puts on every object (and pod) it makes
LABEL_DEPLOYMENT = "shipway.io/deployment"
LABEL_VARIANT = "shipway.io/variant"
LABEL_BUILD = "shipway.io/build"
# the name Triton serves the build under (its repository's folder), for the infer URL
ANNOTATION_TRITON_MODEL = "shipway.io/triton-model"
TRITON_HTTP_PORT = 8000
DEFAULT_SCALE_DOWN_WINDOW = 30.0  # seconds, as in local mode


@dataclass(frozen=True)
class Scaling:
    """Replicas of the stable variant: fixed (``target_inflight`` None) or an HPA between
    ``min_replicas`` and ``max_replicas`` keeping ``target_inflight`` requests in flight
    per pod on ``metric``; ``scale_down_stabilization_window_seconds`` in seconds."""

    min_replicas: int = 1
    max_replicas: int | None = None
    target_inflight: float | None = None
    scale_down_stabilization_window_seconds: float | None = None
    metric: str = "nv_inference_pending_request_count"

    def spec(self) -> dict[str, Any]:
        """``{"replicas": n}`` or ``{"autoscaling": {...}}`` (the CRD allows one)."""
        high = self.max_replicas if self.max_replicas is not None else self.min_replicas
        if self.target_inflight is None or high == self.min_replicas:
            return {"replicas": self.min_replicas}
        window = self.scale_down_stabilization_window_seconds
        return {
            "autoscaling": {
                "minReplicas": self.min_replicas,
                "maxReplicas": high,
                "target": {
                    "metric": "pods",
                    "metricName": self.metric,
                    "averageValue": _quantity(self.target_inflight),
                },
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": round(
                            DEFAULT_SCALE_DOWN_WINDOW if window is None else window
                        )
                    }
                },
            }
        }


@dataclass(frozen=True)
class DeploymentRequest:
    """What ``shipway deploy`` asks for, with where the build's repository is.

    ``scaling`` None keeps the scaling of ``current`` (a redeploy that names no scale
    setting must not switch autoscaling off), or one fixed replica for a new one."""

    name: str
    model: str
    version: int | str
    build_id: str
    archive_url: str
    archive_sha256: str
    triton_model_name: str
    scaling: Scaling | None = None
    triton_image: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    # what the in-cluster gateway must know of the build (it reads resources, not the
    # database): ``spec.build`` fields agreement, outputKinds, scalarInputs, scalarOutputs
    routing: dict[str, Any] = field(default_factory=dict)


def model_deployment(
    request: DeploymentRequest, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The resource body to apply (server-side apply: only the fields Shipway owns)."""
    if request.scaling is not None:
        scaling = request.scaling.spec()
    else:
        spec = (current or {}).get("spec") or {}
        kept = {k: spec[k] for k in ("replicas", "autoscaling") if spec.get(k) is not None}
        scaling = kept or Scaling().spec()
    triton: dict[str, Any] = {}
    if request.triton_image:
        triton["image"] = request.triton_image
    if request.node_selector:
        triton["nodeSelector"] = dict(request.node_selector)
    spec = {
        "model": {"name": request.model, "version": str(request.version)},
        "build": {
            "id": request.build_id,
            "modelRepository": request.archive_url,
            "sha256": request.archive_sha256,
            "tritonModelName": request.triton_model_name,
            **({"modelVersion": int(request.version)} if str(request.version).isdigit() else {}),
            **request.routing,
        },
        **({"triton": triton} if triton else {}),
        **scaling,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": request.name,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            "annotations": {ANNOTATION_TRITON_MODEL: request.triton_model_name},
        },
        "spec": spec,
    }


def _quantity(value: float) -> int | str:
    """A Kubernetes quantity: an integer as such, else milli-units (``2.5`` → ``2500m``)."""
    if float(value).is_integer():
        return int(value)
    return f"{round(value * 1000)}m"


def _from_quantity(value: int | str) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- the resource back to the API's view --


@dataclass(frozen=True)
class Pod:
    """What the view needs of one Triton pod: its variant, build, IP and readiness."""

    variant: str
    build_id: str
    ip: str | None
    ready: bool
    deleting: bool = False


@dataclass(frozen=True)
class VariantView:
    name: str
    build_id: str
    weight: int
    shadow_share: float
    min_replicas: int
    max_replicas: int
    desired_replicas: int


@dataclass(frozen=True)
class ReplicaView:
    variant: str
    build_id: str
    url: str
    state: str  # starting | ready | draining, as in local mode


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as ``DeploymentOut`` shows it, read from a ModelDeployment."""

    name: str
    build_id: str
    status: str
    message: str | None
    split: str
    sticky_header: str
    autoscale: dict[str, Any]
    variants: list[VariantView]
    replicas: list[ReplicaView]
    infer_url: str
    updated_at: datetime
    namespace: str
    rollout: dict[str, Any] | None = None


def deployment_view(body: dict[str, Any], pods: list[Pod]) -> DeploymentView:
    """The view of a ModelDeployment and its pods.

    ``status`` is the operator's phase in lower case (``pending`` until the operator has
    seen the current generation); ``message`` the reason of a condition that is not
    well (Degraded, or Ready=False); the build is the stable one the status records
    (the spec's until the operator has recorded one); ``infer_url`` the stable
    Service's Triton endpoint inside the cluster."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    name, namespace = meta["name"], meta.get("namespace", "default")
    spec_build = (spec.get("build") or {}).get("id", "")
    stable_build = (status.get("stableBuild") or {}).get("id") or spec_build
    candidate_build = (status.get("candidateBuild") or {}).get("id")
    weights = status.get("weights") or {}
    current = status.get("observedGeneration") == meta.get("generation")
    phase = status.get("phase") if current else None

    low, high, desired = _replica_range(spec, status)
    variants = [
        VariantView(STABLE, stable_build, int(weights.get(STABLE, 100)), 0.0, low, high, desired)
    ]
    if candidate_build:
        variants.append(
            VariantView(CANDIDATE, candidate_build, int(weights.get(CANDIDATE, 0)), 0.0, 1, 1, 1)
        )
    routing = spec.get("routing") or {}
    model = (meta.get("annotations") or {}).get(ANNOTATION_TRITON_MODEL) or name
    return DeploymentView(
        name=name,
        build_id=stable_build,
        status=(phase or "Pending").lower(),
        message=_message(status.get("conditions") or []) if current else None,
        split=routing.get("split", "weighted"),
        sticky_header=routing.get("stickyHeader", "x-shipway-key"),
        autoscale=_autoscale(spec),
        variants=variants,
        replicas=sorted(
            (
                ReplicaView(
                    p.variant,
                    p.build_id,
                    f"http://{p.ip}:{TRITON_HTTP_PORT}" if p.ip else "",
                    "draining" if p.deleting else "ready" if p.ready else "starting",
                )
                for p in pods
            ),
            key=lambda r: (r.variant, r.url),
        ),
        infer_url=(
            f"http://{name}-{STABLE}.{namespace}.svc:{TRITON_HTTP_PORT}/v2/models/{model}/infer"
        ),
        updated_at=last_written(meta),
        namespace=namespace,
        rollout=status.get("rollout"),
    )


def _replica_range(spec: dict[str, Any], status: dict[str, Any]) -> tuple[int, int, int]:
    """Stable's (min, max, desired): the HPA's range, or the fixed count; desired is the
    count the operator reports (the HPA's choice), else the minimum."""
    autoscaling = spec.get("autoscaling")
    if autoscaling:
        low, high = int(autoscaling["minReplicas"]), int(autoscaling["maxReplicas"])
    else:
        low = high = int(spec.get("replicas") or 1)
    desired = status.get("replicas")
    return low, high, int(desired) if desired is not None else low


def _autoscale(spec: dict[str, Any]) -> dict[str, Any]:
    """Local mode's autoscale settings, when the HPA keeps a per-pod metric."""
    autoscaling = spec.get("autoscaling") or {}
    target = autoscaling.get("target") or {}
    if target.get("metric") != "pods" or "averageValue" not in target:
        return {}
    down = ((autoscaling.get("behavior") or {}).get("scaleDown") or {}).get(
        "stabilizationWindowSeconds", DEFAULT_SCALE_DOWN_WINDOW
    )
    return {
        "target_inflight": _from_quantity(target["averageValue"]),
        "scale_down_stabilization_window_seconds": float(down),
    }


def _message(conditions: list[dict[str, Any]]) -> str | None:
    by_type = {c.get("type"): c for c in conditions}
    degraded, ready = by_type.get("Degraded"), by_type.get("Ready")
    for condition, unwell in ((degraded, "True"), (ready, "False")):
        if condition and condition.get("status") == unwell:
            return f"{condition.get('reason')}: {condition.get('message')}"
    return None


def last_written(meta: dict[str, Any]) -> datetime:
    """The latest write of any field manager (the creation time when none is recorded)."""
    times = [m["time"] for m in meta.get("managedFields") or [] if m.get("time")]
    times.append(meta.get("creationTimestamp"))
    parsed = [_time(t) for t in times if t]
    return max(parsed) if parsed else datetime.fromtimestamp(0, UTC)


def _time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
