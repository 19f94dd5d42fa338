"""The per-variant objects, built without a cluster: what Triton runs, how it is probed,
how it scales, and that everything is owned by the ModelDeployment."""

from __future__ import annotations

import dataclasses

import pytest

from shipway_operator import manifests
from shipway_operator.manifests import Context, replica_range
from shipway_operator.spec import InvalidSpec, Variant, parse_spec

from .conftest import FETCH_IMAGE, OWNER, base_spec, context

STABLE, CANDIDATE = Variant.STABLE, Variant.CANDIDATE
CPU_SCALING = {
    "minReplicas": 2,
    "maxReplicas": 8,
    "target": {"metric": "cpu", "averageUtilization": 70},
}
CPU_REQUEST = {"image": "triton:test", "resources": {"requests": {"cpu": "2"}}}


def _container(deployment: dict, name: str) -> dict:
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name)


def test_every_object_is_owned_named_and_labelled(ctx: Context) -> None:
    build = ctx.spec.build
    objects = manifests.variant_objects(ctx, STABLE, build, 100)
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "PodDisruptionBudget"]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["name"] == "minilm-stable" and meta["namespace"] == "models"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "shipway.io/v1alpha1",
                "kind": "ModelDeployment",
                "name": "minilm",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["shipway.io/deployment"] == "minilm"
        assert labels["shipway.io/variant"] == "stable"
        assert labels["shipway.io/build"] == "b-1"
        assert labels["app.kubernetes.io/managed-by"] == "shipway-operator"
        assert labels["app.kubernetes.io/instance"] == "minilm-stable"


def test_deployment_fetches_an_http_archive_before_triton(ctx: Context) -> None:
    deployment = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    # the selector leaves the build out (immutable; promotion changes the build in place)
    assert spec["selector"] == {
        "matchLabels": {"shipway.io/deployment": "minilm", "shipway.io/variant": "stable"}
    }
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"]["shipway.io/build"] == "b-1"
    fetch = _container(deployment, "fetch-model")
    assert fetch["image"] == FETCH_IMAGE
    assert fetch["command"] == [
        "python",
        "-m",
        "shipway_operator.fetch",
        "--max-bytes",
        str(20 * 2**30),
        "https://files.test/minilm/b-1.tar.gz",
        "/models",
    ]
    assert {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    triton = _container(deployment, "triton")
    assert triton["args"][:4] == [
        "--model-repository=/models",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in triton["volumeMounts"]
    assert {(p["name"], p["containerPort"]) for p in triton["ports"]} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_sha256_is_passed_to_the_fetch() -> None:
    digest = "ab" * 32
    build = {"id": "b-1", "modelRepository": "https://files.test/b.tar.gz", "sha256": digest}
    ctx = context(build=build)
    fetch = _container(manifests.deployment(ctx, STABLE, ctx.spec.build, 100), "fetch-model")
    assert fetch["command"][-2:] == ["--sha256", digest]


@pytest.mark.parametrize(
    ("limit", "size_limit"), [(5 * 2**30, "5Gi"), (1536 * 2**20, "1536Mi"), (1000, "1000")]
)
def test_models_volume_and_fetch_share_one_size_limit(limit: int, size_limit: str) -> None:
    """The fetch fails with a message before the emptyDir's limit evicts the pod."""
    ctx = dataclasses.replace(context(), models_size_limit=limit)
    deployment = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "emptyDir": {"sizeLimit": size_limit}} in volumes
    command = _container(deployment, "fetch-model")["command"]
    assert command[command.index("--max-bytes") + 1] == str(limit)


def test_object_store_repository_is_read_by_triton_itself() -> None:
    ctx = context(build={"id": "b-2", "modelRepository": "s3://bucket/minilm/b-2"})
    deployment = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert all(v["name"] != "models" for v in pod["volumes"])
    assert (
        _container(deployment, "triton")["args"][0] == "--model-repository=s3://bucket/minilm/b-2"
    )


def test_triton_image_resources_placement_and_args_are_the_specs() -> None:
    triton = {
        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "args": ["--log-verbose=1"],
        "resources": {
            "requests": {"cpu": "4", "memory": "8Gi"},
            "limits": {"memory": "8Gi", "nvidia.com/gpu": 1},
        },
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    ctx = context(triton=triton)
    deployment = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment, "triton")
    assert container["image"] == triton["image"]
    assert container["resources"] == triton["resources"]
    assert container["args"][-1] == "--log-verbose=1"
    assert pod["nodeSelector"] == triton["nodeSelector"]
    assert pod["tolerations"] == triton["tolerations"]


def test_autoscaled_deployment_leaves_replicas_to_its_hpa() -> None:
    ctx = context(replicas=None, autoscaling=CPU_SCALING, triton=CPU_REQUEST)
    assert "replicas" not in manifests.deployment(ctx, STABLE, ctx.spec.build, 100)["spec"]
    hpa = manifests.autoscaler(ctx, STABLE, ctx.spec.build, 100)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "minilm-stable",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert "behavior" not in hpa["spec"]


def test_hpa_behavior_and_pods_metric_pass_through() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 300}}
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "target": {"metric": "pods", "metricName": "inflight_requests", "averageValue": "4"},
        "behavior": behavior,
    }
    ctx = context(replicas=None, autoscaling=scaling)
    hpa = manifests.autoscaler(ctx, STABLE, ctx.spec.build, 100)
    assert hpa is not None
    assert hpa["spec"]["behavior"] == behavior
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "4"},
            },
        }
    ]


def test_no_hpa_without_autoscaling(ctx: Context) -> None:
    assert manifests.autoscaler(ctx, STABLE, ctx.spec.build, 100) is None


def test_utilization_target_without_its_request_is_refused() -> None:
    ctx = context(replicas=None, autoscaling=CPU_SCALING)
    with pytest.raises(InvalidSpec, match=r"cpu utilization target needs triton\.resources"):
        manifests.variant_objects(ctx, STABLE, ctx.spec.build, 100)


@pytest.mark.parametrize(
    ("weight", "fixed", "scaled"),
    [(100, (4, 4), (2, 10)), (0, (1, 1), (1, 1)), (25, (1, 1), (1, 3)), (50, (2, 2), (1, 5))],
)
def test_replicas_follow_the_variants_weight(weight: int, fixed: tuple, scaled: tuple) -> None:
    assert replica_range(parse_spec(base_spec(replicas=4)), weight) == fixed
    scaling = {"minReplicas": 2, "maxReplicas": 10, "target": CPU_SCALING["target"]}
    spec = parse_spec(base_spec(replicas=None, autoscaling=scaling, triton=CPU_REQUEST))
    assert replica_range(spec, weight) == scaled


def test_weight_outside_a_percent_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="percent"):
        replica_range(parse_spec(base_spec()), 101)


def test_candidate_runs_one_warm_replica_of_its_own_build(ctx: Context) -> None:
    other = parse_spec(
        base_spec(build={"id": "b-2", "modelRepository": "https://files.test/b-2.tar.gz"})
    ).build
    deployment = manifests.deployment(ctx, CANDIDATE, other, 0)
    assert deployment["metadata"]["name"] == "minilm-candidate"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["metadata"]["labels"]["shipway.io/build"] == "b-2"
    assert deployment["spec"]["selector"]["matchLabels"]["shipway.io/variant"] == "candidate"


def test_service_exposes_triton_ports_of_its_variant(ctx: Context) -> None:
    service = manifests.service(ctx, CANDIDATE, ctx.spec.build)
    assert service["spec"]["selector"] == {
        "shipway.io/deployment": "minilm",
        "shipway.io/variant": "candidate",
    }
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8000, "http"),
        ("grpc", 8001, "grpc"),
        ("metrics", 8002, "metrics"),
    }


def test_disruption_budget_allows_one_eviction_at_a_time(ctx: Context) -> None:
    pdb = manifests.disruption_budget(ctx, STABLE, ctx.spec.build)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {"shipway.io/deployment": "minilm", "shipway.io/variant": "stable"}
        },
    }


@pytest.mark.parametrize(
    ("repository", "containers"),
    [
        ("https://files.test/minilm/b-1.tar.gz", {"triton", "fetch-model"}),
        ("s3://bucket/minilm/b-1", {"triton"}),
    ],
)
def test_pods_meet_the_restricted_pod_security_standard(
    repository: str, containers: set[str]
) -> None:
    ctx = context(build={"id": "b-1", "modelRepository": repository})
    pod = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,  # the Triton image's triton-server user
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    everything = pod["containers"] + pod.get("initContainers", [])
    assert {c["name"] for c in everything} == containers
    for container in everything:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        }, container["name"]
    # every volume is an emptyDir (allowed by restricted); Triton writes to /tmp and /dev/shm
    assert all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    assert mounts["/tmp"] == "scratch" and mounts["/dev/shm"] == "dshm"


def test_triton_scratch_holds_a_cloud_repository_it_copies_there() -> None:
    ctx = dataclasses.replace(
        context(build={"id": "b-1", "modelRepository": "s3://bucket/minilm/b-1"}),
        models_size_limit=8 * 2**30,
    )
    volumes = manifests.deployment(ctx, STABLE, ctx.spec.build, 100)["spec"]["template"]["spec"][
        "volumes"
    ]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "8Gi"}} in volumes


def test_an_autoscaled_variant_applies_its_hpa_before_its_deployment() -> None:
    ctx = context(replicas=None, autoscaling=CPU_SCALING, triton=CPU_REQUEST)
    objects = manifests.variant_objects(ctx, STABLE, ctx.spec.build, 100)
    assert [o["kind"] for o in objects] == [
        "HorizontalPodAutoscaler",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
