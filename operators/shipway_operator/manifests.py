"""Pure builders of the Kubernetes objects that serve one variant of a ModelDeployment.

Per variant (``stable``, and ``candidate`` while a rollout runs), named
``<deployment>-<variant>``: a Deployment of Triton, a Service, a HorizontalPodAutoscaler
(``autoscaling/v2``, only with ``spec.autoscaling``) and a PodDisruptionBudget. Every
object carries a controller owner reference to the ModelDeployment, so the API server's
garbage collector removes them with it, and the labels by which the operator finds them.
No I/O: the handlers apply what these return with server-side apply.

Model repository: Triton reads ``s3://``, ``gs://`` and ``as://`` repositories itself
(credentials from the pod's environment or workload identity), so those need nothing
else. An ``http(s)://`` ``.tar.gz`` is fetched before Triton starts by an init container
(``python -m shipway_operator.fetch URI /models``, in the operator's own image) into an
``emptyDir`` that Triton then serves from; a ``build.sha256`` is checked by the fetch.
That volume's ``sizeLimit`` is the context's ``models_size_limit``, and the fetch is told
the same cap (``--max-bytes``), so an oversized archive fails the fetch with a message
rather than the node's disk (or the pod's eviction).

Pods meet the ``restricted`` Pod Security Standard: non-root (uid/gid 1000, the Triton
image's ``triton-server`` user; the ``models`` volume group-owned by it), no privilege
escalation, every capability dropped, the runtime's default seccomp profile, and a
read-only root file system; Triton writes only to ``/dev/shm`` and an ``emptyDir`` at
``/tmp`` (where it also copies ``s3://``/``gs://``/``as://`` repositories before loading
them, hence that volume's ``sizeLimit`` is the models limit then).

Replicas follow traffic: a variant's replica count (or HPA range) is the spec's scaled by
its share of the traffic (``capacity.replica_range``), at least 1, so a candidate at 0 %
runs one warm replica and stable at 100 % the spec's full count.

Pods carry the build's Triton model name and registered version as annotations
(``shipway.io/triton-model``, ``shipway.io/model-version``): the gateway reads them per
endpoint, because while stable rolls from one build to the next its pods serve both.
Triton's container sleeps ``PRE_STOP_SECONDS`` before it is stopped, so the endpoint is
out of every router's table before the server stops taking requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipway_operator.capacity import replica_range, variant_range
from shipway_operator.fetch import DEFAULT_MAX_BYTES
from shipway_operator.spec import API_VERSION, KIND, Build, InvalidSpec, Spec, Variant

__all__ = ["replica_range"]  # re-exported: the builders' sizing, as callers knew it

MANAGER = "shipway-operator"  # field manager of every apply, and the managed-by label
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODELS_DIR = "/models"
# The Triton image's own non-root user (NVIDIA's Dockerfile creates `triton-server` with
# uid 1000 "to run triton as non-root"); the image's default user is root.
TRITON_UID = 1000
SCRATCH_DIR = "/tmp"  # an emptyDir: the root file system is read-only
LABEL_DEPLOYMENT = "shipway.io/deployment"
LABEL_VARIANT = "shipway.io/variant"
LABEL_BUILD = "shipway.io/build"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_TRITON_MODEL = "shipway.io/triton-model"
ANNOTATION_MODEL_VERSION = "shipway.io/model-version"
# seconds Triton keeps serving after its pod is deleted: endpoint removal reaches the
# routers (EndpointSlice, watch, routing table) meanwhile (Kubernetes' preStop sleep)
PRE_STOP_SECONDS = 5

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment the objects belong to (its uid makes the owner reference)."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(meta["name"], meta["namespace"], meta["uid"])

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Context:
    """What every builder needs besides the variant: the owner, its spec, the image
    whose ``python -m shipway_operator.fetch`` fetches http(s) repositories, and the most
    bytes a fetched repository may take (archive and unpacked tree, the ``models``
    volume's ``sizeLimit``)."""

    owner: Owner
    spec: Spec
    fetch_image: str
    models_size_limit: int = DEFAULT_MAX_BYTES
    triton_model: str | None = None  # the resource's shipway.io/triton-model annotation


def object_name(deployment: str, variant: Variant) -> str:
    return f"{deployment}-{variant.value}"


def selector(deployment: str, variant: Variant) -> dict[str, str]:
    """The pods of one variant. Never includes the build: a Deployment's selector is
    immutable, and promotion moves stable to another build in place."""
    return {LABEL_DEPLOYMENT: deployment, LABEL_VARIANT: variant.value}


def selector_string(deployment: str, variant: Variant) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(deployment, variant).items())


def labels(ctx: Context, variant: Variant, build: Build) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": object_name(ctx.owner.name, variant),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "shipway",
        LABEL_MANAGED_BY: MANAGER,
        "shipway.io/model": ctx.spec.model.name,
        **selector(ctx.owner.name, variant),
        LABEL_BUILD: build.id,
    }


def triton_model_name(ctx: Context, build: Build) -> str:
    """The model's name inside the build's Triton: the build's own, else the resource's
    ``shipway.io/triton-model`` annotation (resources made before builds carried it),
    else the resource's name."""
    return build.triton_model_name or ctx.triton_model or ctx.owner.name


def pod_annotations(ctx: Context, build: Build) -> dict[str, str]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        ANNOTATION_TRITON_MODEL: triton_model_name(ctx, build),
    }
    if build.model_version is not None:
        annotations[ANNOTATION_MODEL_VERSION] = str(build.model_version)
    return annotations


def _metadata(ctx: Context, variant: Variant, build: Build) -> dict[str, Any]:
    return {
        "name": object_name(ctx.owner.name, variant),
        "namespace": ctx.owner.namespace,
        "labels": labels(ctx, variant, build),
        "ownerReferences": [ctx.owner.reference()],
    }


def quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest binary unit that divides them."""
    for unit, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _container_security() -> dict[str, Any]:
    """A container's part of the restricted Pod Security Standard, and a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRITON_UID,
        "runAsGroup": TRITON_UID,
        "fsGroup": TRITON_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _fetch_container(ctx: Context, build: Build) -> dict[str, Any]:
    command = ["python", "-m", "shipway_operator.fetch"]
    command += ["--max-bytes", str(ctx.models_size_limit), build.model_repository, MODELS_DIR]
    if build.sha256:
        command += ["--sha256", build.sha256]
    return {
        "name": "fetch-model",
        "image": ctx.fetch_image,
        "command": command,
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": _container_security(),
    }


def _triton_container(ctx: Context, build: Build) -> dict[str, Any]:
    triton = ctx.spec.triton
    repository = MODELS_DIR if build.fetched else build.model_repository
    resources: dict[str, Any] = {}
    if triton.resources.requests:
        resources["requests"] = dict(triton.resources.requests)
    if triton.resources.limits:
        resources["limits"] = dict(triton.resources.limits)

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        }

    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    if build.fetched:
        mounts.insert(0, {"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    return {
        "name": "triton",
        "image": triton.image,
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={repository}",
            f"--http-port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}",
            *triton.args,
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # loading a large model takes minutes: the startup probe allows 10 before liveness
        "startupProbe": probe("/v2/health/ready", 5, 120),
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": _container_security(),
    }


def deployment(
    ctx: Context, variant: Variant, build: Build, weight: int, baseline: int | None = None
) -> Manifest:
    """The variant's Triton Deployment. With autoscaling ``spec.replicas`` is left out, so
    the HPA owns it and an apply never fights the HPA's count."""
    triton = ctx.spec.triton
    template_labels = labels(ctx, variant, build)
    # Triton copies a cloud repository into /tmp before loading it: room for the models
    scratch = "1Gi" if build.fetched else quantity(ctx.models_size_limit)
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": scratch}},
    ]
    pod: dict[str, Any] = {
        "securityContext": _pod_security(),
        "containers": [_triton_container(ctx, build)],
    }
    if build.fetched:
        volumes.insert(
            0, {"name": "models", "emptyDir": {"sizeLimit": quantity(ctx.models_size_limit)}}
        )
        pod["initContainers"] = [_fetch_container(ctx, build)]
    pod["volumes"] = volumes
    if triton.node_selector:
        pod["nodeSelector"] = dict(triton.node_selector)
    if triton.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in triton.tolerations
        ]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(ctx.owner.name, variant)},
        # no old ReplicaSets kept: going back is a rollout of the old build, not a
        # `rollout undo` behind the operator's back
        "revisionHistoryLimit": 0,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": template_labels,
                "annotations": pod_annotations(ctx, build),
            },
            "spec": pod,
        },
    }
    if ctx.spec.autoscaling is None:
        spec["replicas"] = variant_range(ctx.spec, variant is Variant.STABLE, weight, baseline)[0]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ctx, variant, build),
        "spec": spec,
    }


def service(ctx: Context, variant: Variant, build: Build) -> Manifest:
    """The variant's ClusterIP Service; its EndpointSlices list the ready replicas the
    gateway routes to."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ctx, variant, build),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ctx.owner.name, variant),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def autoscaler(
    ctx: Context, variant: Variant, build: Build, weight: int, baseline: int | None = None
) -> Manifest | None:
    """The variant's HPA, or None without ``spec.autoscaling``."""
    scaling = ctx.spec.autoscaling
    if scaling is None:
        return None
    target = scaling.target
    if target.metric == "pods":
        metric: dict[str, Any] = {
            "type": "Pods",
            "pods": {
                "metric": {"name": target.metric_name},
                "target": {"type": "AverageValue", "averageValue": str(target.average_value)},
            },
        }
    else:
        if target.metric not in ctx.spec.triton.resources.requests:
            raise InvalidSpec(
                f"a {target.metric} utilization target needs "
                f"triton.resources.requests.{target.metric}"
            )
        metric = {
            "type": "Resource",
            "resource": {
                "name": target.metric,
                "target": {
                    "type": "Utilization",
                    "averageUtilization": target.average_utilization,
                },
            },
        }
    low, high = variant_range(ctx.spec, variant is Variant.STABLE, weight, baseline)
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": object_name(ctx.owner.name, variant),
        },
        "minReplicas": low,
        "maxReplicas": high,
        "metrics": [metric],
    }
    if scaling.behavior:
        spec["behavior"] = scaling.behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(ctx, variant, build),
        "spec": spec,
    }


def disruption_budget(ctx: Context, variant: Variant, build: Build) -> Manifest:
    """At most one replica of the variant evicted at a time: drains proceed (even at one
    replica) but never empty a variant at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ctx, variant, build),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(ctx.owner.name, variant)},
        },
    }


def variant_objects(
    ctx: Context, variant: Variant, build: Build, weight: int, baseline: int | None = None
) -> list[Manifest]:
    """Everything one variant needs, in apply order: the HPA (if any) first, so that by
    the time a Deployment stops setting ``replicas`` its autoscaler is there to own them;
    then the Deployment, its Service and PodDisruptionBudget."""
    objects = [
        autoscaler(ctx, variant, build, weight, baseline),
        deployment(ctx, variant, build, weight, baseline),
        service(ctx, variant, build),
        disruption_budget(ctx, variant, build),
    ]
    return [o for o in objects if o is not None]


# the kinds the operator creates, for finding what a variant no longer needs
MANAGED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)
