"""Build the routing table from Kubernetes objects (the in-cluster gateway's source of truth).

Pure: plain dicts in (as the API server returns them, camelCase), a ``RoutingTable`` out.
Routes come from the ``ModelDeployment`` resources' status (what the rollout loop writes:
weights, split, shadow share, the builds), replicas from the EndpointSlices of each
variant's Service (ready endpoints only), and each replica's Triton model name and
registered version from its pod's annotations. ``kube_source`` keeps the objects current
through a watch; ``store_routes`` is the local twin reading the state store.

Bad or absent values fall back to defaults and never raise: one malformed resource must
not take every route of the namespace down with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from shipway.builds.accuracy import OUTPUT_KINDS, AgreementRule
from shipway.errors import InvalidInput
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.kubernetes.resource import ANNOTATION_TRITON_MODEL, CANDIDATE, STABLE

ANNOTATION_MODEL_VERSION = "shipway.io/model-version"  # pod: the registered version it serves
LABEL_SERVICE_NAME = "kubernetes.io/service-name"  # EndpointSlice: the Service it belongs to
HTTP_PORT_NAME = "http"  # the Service port Triton's HTTP/REST endpoint is published under
DEFAULT_CANDIDATE_VARIANT = "canary"
DEFAULT_STICKY_HEADER = "x-shipway-key"

Object = Mapping[str, Any]


def routing_table(
    model_deployments: Iterable[Object],
    endpoint_slices: Iterable[Object],
    pods: Iterable[Object],
) -> RoutingTable:
    """The routes of one namespace's ModelDeployments (keyed by their names).

    Per deployment: ``stable``, and the candidate under the variant name the rollout
    controller gives it (``status.routing.candidateVariant``, default ``canary``) once
    ``status.candidateBuild`` names one. Weights from ``status.weights`` (absent: stable
    100, candidate 0); sticky when the split (``status.routing.split``, else
    ``spec.routing.split``) is ``sticky``. Replicas are the ready endpoints of the
    variant's Service ``<name>-stable`` / ``<name>-candidate``, ordered by URL. Objects
    being deleted are left out."""
    # a pod being deleted still names what it serves: whether it takes traffic is its
    # endpoint's condition, not the pod's deletion
    pods_by_name = {name: p for p in pods if (name := _name(p))}
    slices: dict[str, list[Object]] = {}
    for item in endpoint_slices:
        service = _dict(_dict(item.get("metadata")).get("labels")).get(LABEL_SERVICE_NAME)
        if isinstance(service, str) and not _deleting(item):
            slices.setdefault(service, []).append(item)
    routes: dict[str, DeploymentRoute] = {}
    for body in model_deployments:
        name = _name(body)
        if not name or _deleting(body) or name in routes:
            continue
        routes[name] = _deployment(name, body, slices, pods_by_name)
    return RoutingTable(dict(sorted(routes.items())))


def _deployment(
    name: str,
    body: Object,
    slices: Mapping[str, list[Object]],
    pods: Mapping[str, Object],
) -> DeploymentRoute:
    spec, status = _dict(body.get("spec")), _dict(body.get("status"))
    spec_routing, routing = _dict(spec.get("routing")), _dict(status.get("routing"))
    weights = _dict(status.get("weights"))
    split = routing.get("split") or spec_routing.get("split")
    header = spec_routing.get("stickyHeader")
    annotation = _dict(_dict(body.get("metadata")).get("annotations")).get(ANNOTATION_TRITON_MODEL)
    fallback_model = annotation if isinstance(annotation, str) and annotation else name

    variants = [
        _variant(
            STABLE,
            _percent(weights.get(STABLE), 100),
            0.0,
            _dict(status.get("stableBuild")),
            slices.get(f"{name}-{STABLE}", []),
            pods,
            fallback_model,
        )
    ]
    candidate_build = status.get("candidateBuild")
    if isinstance(candidate_build, Mapping) and candidate_build:
        variants.append(
            _variant(
                _candidate_name(routing.get("candidateVariant")),
                _percent(weights.get(CANDIDATE), 0),
                _share(routing.get("shadowShare")),
                candidate_build,
                slices.get(f"{name}-{CANDIDATE}", []),
                pods,
                fallback_model,
            )
        )
    return DeploymentRoute(
        name,
        tuple(variants),
        sticky=split == "sticky",
        sticky_header=header if isinstance(header, str) and header else DEFAULT_STICKY_HEADER,
    )


def _variant(
    variant: str,
    weight: int,
    shadow_share: float,
    build: Object,
    slices: list[Object],
    pods: Mapping[str, Object],
    fallback_model: str,
) -> VariantRoute:
    """One variant: its build's shadow rule, output kinds and rank-0 tensors, and its
    ready replicas. A replica's model name and version come from its own pod (during a
    build change old pods serve the old build), else from the variant's build."""
    model = build.get("tritonModelName")
    model = model if isinstance(model, str) and model else fallback_model
    version = _version(build.get("modelVersion"))
    replicas: dict[str, ReplicaRoute] = {}
    for url, pod_name in _ready_endpoints(slices):
        annotations = _dict(_dict(_dict(pods.get(pod_name)).get("metadata")).get("annotations"))
        served = annotations.get(ANNOTATION_TRITON_MODEL)
        pod_version = _version(annotations.get(ANNOTATION_MODEL_VERSION))
        replicas.setdefault(
            url,
            ReplicaRoute(
                url,
                served if isinstance(served, str) and served else model,
                pod_version if pod_version is not None else version,
            ),
        )
    return VariantRoute(
        name=variant,
        weight=weight,
        replicas=tuple(replicas[u] for u in sorted(replicas)),
        shadow_share=shadow_share,
        agreement=_agreement(build.get("agreement")),
        output_kinds=_output_kinds(build.get("outputKinds")),
        scalar_inputs=_names(build.get("scalarInputs")),
        scalar_outputs=_names(build.get("scalarOutputs")),
    )


def _ready_endpoints(slices: list[Object]) -> list[tuple[str, str | None]]:
    """(URL, pod name) of each ready endpoint of these slices. Ready as the EndpointSlice
    API defines it: ``conditions.ready`` not false (unset means ready), and never a
    terminating endpoint, even one still serving (its pod is going away)."""
    found: list[tuple[str, str | None]] = []
    for item in slices:
        port = next(
            (
                p.get("port")
                for p in _list(item.get("ports"))
                if isinstance(p, Mapping) and p.get("name") == HTTP_PORT_NAME
            ),
            None,
        )
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            continue
        ipv6 = item.get("addressType") == "IPv6"
        for endpoint in _list(item.get("endpoints")):
            if not isinstance(endpoint, Mapping):
                continue
            conditions = _dict(endpoint.get("conditions"))
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            addresses = [a for a in _list(endpoint.get("addresses")) if isinstance(a, str) and a]
            if not addresses:
                continue
            host = f"[{addresses[0]}]" if ipv6 else addresses[0]  # the API: use the first
            target = _dict(endpoint.get("targetRef"))
            pod = target.get("name") if target.get("kind", "Pod") == "Pod" else None
            found.append((f"http://{host}:{port}", pod if isinstance(pod, str) else None))
    return found


def _agreement(data: object) -> AgreementRule:
    if not isinstance(data, Mapping):
        return AgreementRule()
    try:
        return AgreementRule.from_dict(data)
    except (InvalidInput, TypeError, ValueError, AttributeError):
        return AgreementRule()  # judged by the default rule rather than not routed


def _output_kinds(data: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(data, Mapping):
        return ()
    return tuple(
        sorted((k, v) for k, v in data.items() if isinstance(k, str) and v in OUTPUT_KINDS)
    )


def _names(data: object) -> frozenset[str]:
    return frozenset(n for n in _list(data) if isinstance(n, str) and n)


def _candidate_name(value: object) -> str:
    if isinstance(value, str) and value and value != STABLE:
        return value
    return DEFAULT_CANDIDATE_VARIANT


def _percent(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    if isinstance(value, float) and not math.isfinite(value):
        return default
    return min(100, max(0, int(value)))


def _share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    share = float(value)
    return min(1.0, share) if share > 0 else 0.0  # NaN and negatives: no shadow


def _version(value: object) -> int | None:
    """A registered model version: a positive integer, or its decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _name(body: Object) -> str | None:
    name = _dict(body.get("metadata")).get("name")
    return name if isinstance(name, str) and name else None


def _deleting(body: Object) -> bool:
    return bool(_dict(body.get("metadata")).get("deletionTimestamp"))


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# -- what the builder reads: the watch keeps only this, and notices only its changes --


def model_deployment_fields(body: Object) -> dict[str, Any]:
    """The parts of a ModelDeployment the table depends on (status churn such as
    conditions or the latest analysis is dropped, so it does not rebuild the table)."""
    meta, spec = _dict(body.get("metadata")), _dict(body.get("spec"))
    status = _dict(body.get("status"))
    return {
        "metadata": _pick(meta, "name", "namespace", "annotations", "deletionTimestamp"),
        "spec": _pick(spec, "routing"),
        "status": _pick(status, "weights", "routing", "stableBuild", "candidateBuild"),
    }


def endpoint_slice_fields(body: Object) -> dict[str, Any]:
    meta = _dict(body.get("metadata"))
    endpoints = [
        _pick(e, "addresses", "conditions", "targetRef")
        for e in _list(body.get("endpoints"))
        if isinstance(e, Mapping)
    ]
    return {
        "metadata": _pick(meta, "name", "namespace", "labels", "deletionTimestamp"),
        "addressType": body.get("addressType"),
        "ports": body.get("ports"),
        "endpoints": endpoints,
    }


def pod_fields(body: Object) -> dict[str, Any]:
    meta = _dict(body.get("metadata"))
    annotations = _dict(meta.get("annotations"))
    return {
        "metadata": {
            **_pick(meta, "name", "namespace", "deletionTimestamp"),
            "annotations": _pick(annotations, ANNOTATION_TRITON_MODEL, ANNOTATION_MODEL_VERSION),
        }
    }


def _pick(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data}
