"""Bad ModelDeployments are refused by the API server itself (the CRD's schema and CEL
rules), with a message naming the field; nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from .conftest import Cluster, resource

pytestmark = pytest.mark.integration

BUILD = {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"}
CPU = {"metric": "cpu", "averageUtilization": 60}


def _scaling(low: int, high: int) -> dict[str, Any]:
    return {"minReplicas": low, "maxReplicas": high, "target": CPU}


def _resources(requests: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    return {"resources": {"requests": requests, "limits": limits}, "nodeSelector": {"type": "kwok"}}


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "replicas and autoscaling",
        {"autoscaling": _scaling(1, 2)},
        "set either replicas or autoscaling, not both",
    ),
    (
        "min above max",
        {"replicas": None, "autoscaling": _scaling(4, 2)},
        "autoscaling.minReplicas must be at most maxReplicas",
    ),
    ("no build", {"build": None}, "spec.build: Required value"),
    (
        "unknown repository scheme",
        {"build": {"id": "b-1", "modelRepository": "ftp://files.test/b-1.tar.gz"}},
        "spec.build.modelRepository: Invalid value",
    ),
    ("zero replicas", {"replicas": 0}, "spec.replicas: Invalid value: 0"),
    (
        "unknown strategy",
        {"rollout": {"strategy": "blue-green"}},
        'spec.rollout.strategy: Unsupported value: "blue-green"',
    ),
    (
        "steps not ending at 100",
        {"rollout": {"canary": {"stepWeights": [10, 50]}}},
        "stepWeights must rise strictly and end at 100",
    ),
    (
        "steps falling",
        {"rollout": {"canary": {"stepWeights": [50, 10, 100]}}},
        "stepWeights must rise strictly and end at 100",
    ),
    (
        "a step repeated",
        {"rollout": {"canary": {"stepWeights": [50, 50, 100]}}},
        "stepWeights must rise strictly and end at 100",
    ),
    (
        "Gateway API settings without that provider",
        {"routing": {"gatewayAPI": {"parentRefs": [{"name": "edge"}]}}},
        "routing.gatewayAPI applies with routing.provider gateway-api only",
    ),
    (
        "gate past the last step",
        {"rollout": {"canary": {"stepWeights": [50, 100], "gates": [2]}}},
        "gates must name step indices of stepWeights",
    ),
    (
        "experiment settings on a canary",
        {"rollout": {"strategy": "canary", "experiment": {"weight": 20}}},
        "rollout.experiment is set but the strategy is canary",
    ),
    (
        "experiment weight 100",
        {"rollout": {"strategy": "experiment", "experiment": {"weight": 100}}},
        "spec.rollout.experiment.weight: Invalid value: 100",
    ),
    (
        "fractional canary interval",
        {"rollout": {"canary": {"intervalSeconds": 1.5}}},
        "spec.rollout.canary.intervalSeconds: Invalid value",
    ),
    (
        "fractional bake",
        {"rollout": {"canary": {"bakeSeconds": 0.5}}},
        "spec.rollout.canary.bakeSeconds: Invalid value",
    ),
    (
        "fractional experiment duration",
        {"rollout": {"strategy": "experiment", "experiment": {"maxDurationSeconds": 600.5}}},
        "spec.rollout.experiment.maxDurationSeconds: Invalid value",
    ),
    (
        "progress deadline shorter than an interval",
        {"rollout": {"canary": {"intervalSeconds": 60, "progressDeadlineSeconds": 59}}},
        "progressDeadlineSeconds must be at least one analysis interval",
    ),
    (
        "webhook without URL",
        {"drift": {"actions": ["webhook"]}},
        "the webhook drift action needs drift.webhookURL",
    ),
    (
        "GPU request without its limit",
        {"triton": {"resources": {"requests": {"nvidia.com/gpu": 1}}}},
        "extended resources (a GPU...) and hugepages are set in limits",
    ),
    (
        "GPU request above its limit",
        {"triton": _resources({"nvidia.com/gpu": 2}, {"nvidia.com/gpu": "1"})},
        "a request, if given, must equal its limit",
    ),
    (
        "hugepages request without its limit",
        {"triton": _resources({"hugepages-2Mi": "64Mi"}, {})},
        "a request, if given, must equal its limit",
    ),
    (
        "resource name neither standard nor qualified",
        {"triton": _resources({}, {"gpu": 1})},
        "resources name cpu, memory, ephemeral-storage, hugepages-<size> or an extended",
    ),
    (
        "cpu target without a cpu request",
        {"replicas": None, "autoscaling": _scaling(1, 2), "triton": {"image": "t:1"}},
        "a cpu or memory utilization target needs that resource in triton.resources.requests",
    ),
    (
        "negative cpu request",
        {"triton": _resources({"cpu": "-1"}, {})},
        "spec.triton.resources.requests.cpu: Invalid value",
    ),
    (
        "memory request above its limit",
        {"triton": _resources({"memory": "8Gi"}, {"memory": "1Gi"})},
        "a cpu or memory request must be at most its limit",
    ),
    (
        "cpu request above its limit, other spelling",
        {"triton": _resources({"cpu": 2}, {"cpu": "1500m"})},
        "a cpu or memory request must be at most its limit",
    ),
    (
        "nodeSelector key not a label key",
        {"triton": {"nodeSelector": {"bad key!": "x"}}},
        "nodeSelector keys must be label keys",
    ),
    (
        "toleration key not a label key",
        {"triton": {"tolerations": [{"key": "bad key!", "operator": "Exists"}]}},
        "spec.triton.tolerations[0].key: Invalid value",
    ),
    (
        "http repository not an archive",
        {"build": {"id": "b-1", "modelRepository": "https://files.test/minilm/model.zip"}},
        "an http(s) modelRepository must be a .tar.gz or .tgz archive",
    ),
    (
        "archive name only in the query string",
        {"build": {"id": "b-1", "modelRepository": "https://files.test/get?f=model.tar.gz"}},
        "an http(s) modelRepository must be a .tar.gz or .tgz archive",
    ),
    (
        "sticky header not x-",
        {"routing": {"split": "sticky", "stickyHeader": "cookie"}},
        "spec.routing.stickyHeader: Invalid value",
    ),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_resource_is_refused_with_a_clear_message(
    cluster: Cluster, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create(resource("bad", **changes))
    assert refused.value.status == 422
    text = json.loads(refused.value.body)["message"]
    assert message in text, text
    listing = cluster.custom.list_namespaced_custom_object(
        "shipway.io", "v1alpha1", cluster.namespace, "modeldeployments"
    )
    assert listing["items"] == []


def test_name_too_long_for_its_objects_is_refused(cluster: Cluster) -> None:
    body = resource("m" * 51)
    with pytest.raises(ApiException) as refused:
        cluster.create(body)
    assert refused.value.status == 422
    assert (
        "metadata.name must be at most 50 characters" in json.loads(refused.value.body)["message"]
    )


def test_valid_examples_are_accepted(cluster: Cluster) -> None:
    examples = Path(__file__).resolve().parents[3] / "operators" / "examples"
    for path in sorted(examples.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        created = cluster.create(body)
        assert created["spec"]["model"] == body["spec"]["model"], path.name


ACCEPTED_RESOURCES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("MIG slice", {"cpu": "1"}, {"nvidia.com/mig-1g.10gb": 1}),
    ("Intel GPU", {"gpu.intel.com/i915": 1}, {"gpu.intel.com/i915": 1}),
    ("hugepages", {"hugepages-2Mi": "128Mi"}, {"hugepages-2Mi": "128Mi", "memory": "1Gi"}),
    ("GPU request as int, limit as string", {"nvidia.com/gpu": 1}, {"nvidia.com/gpu": "1"}),
    ("same quantity, other spelling", {"hugepages-1Gi": "1Gi"}, {"hugepages-1Gi": "1024Mi"}),
    ("cpu request equal to its limit", {"cpu": "1", "memory": "1Gi"}, {"cpu": "1000m"}),
    ("memory request below its limit", {"memory": "512Mi"}, {"memory": "1Gi"}),
]


ACCEPTED_SPECS: list[tuple[str, dict[str, Any]]] = [
    (
        "signed archive URL",
        {
            "build": {
                "id": "b-1",
                "modelRepository": "https://cp.test/builds/b-1/model-repository.tar.gz?signature=abc",
            }
        },
    ),
    ("tgz archive", {"build": {"id": "b-1", "modelRepository": "http://files.test/m.tgz"}}),
    ("s3 prefix", {"build": {"id": "b-1", "modelRepository": "s3://models/minilm/b-1"}}),
    (
        "prefixed label keys",
        {
            "triton": {
                "nodeSelector": {"kubernetes.io/arch": "amd64", "type": "kwok"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists"},
                    {"operator": "Exists"},
                ],
            }
        },
    ),
]


@pytest.mark.parametrize(
    "changes", [c[1] for c in ACCEPTED_SPECS], ids=[c[0] for c in ACCEPTED_SPECS]
)
def test_specs_the_tightened_rules_still_accept(cluster: Cluster, changes: dict[str, Any]) -> None:
    created = cluster.create(resource("ok", **changes))
    for key, value in changes.items():  # as given (the CRD may add defaults beside)
        assert {k: created["spec"][key][k] for k in value} == value


@pytest.mark.parametrize(
    ("requests", "limits"),
    [c[1:] for c in ACCEPTED_RESOURCES],
    ids=[c[0] for c in ACCEPTED_RESOURCES],
)
def test_container_resource_specs_the_api_server_accepts_are_accepted(
    cluster: Cluster, requests: dict[str, Any], limits: dict[str, Any]
) -> None:
    created = cluster.create(resource("res", triton=_resources(requests, limits)))
    assert created["spec"]["triton"]["resources"] == {"requests": requests, "limits": limits}


def _apply(cluster: Cluster, body: dict[str, Any], manager: str) -> dict[str, Any]:
    """Server-side apply as ``manager``, taking over fields another manager set (as
    ``kubectl apply --server-side --force-conflicts`` or Argo CD's server-side sync)."""
    api = DynamicClient(cluster.custom.api_client).resources.get(
        api_version="shipway.io/v1alpha1", kind="ModelDeployment"
    )
    live = api.server_side_apply(
        body=body,
        name=body["metadata"]["name"],
        namespace=cluster.namespace,
        field_manager=manager,
        force_conflicts=True,
    )
    return live.to_dict()


def test_step_weights_and_gates_of_the_last_applier_replace_the_others(cluster: Cluster) -> None:
    """Ordered stepWeights (and gates, indices into them) are owned whole: two field
    managers applying different ones leave the later one's, not a merge of both."""
    first = resource("steps", rollout={"canary": {"stepWeights": [5, 25, 100], "gates": [2]}})
    _apply(cluster, first, "team-a")
    second = {
        "apiVersion": first["apiVersion"],
        "kind": first["kind"],
        "metadata": {"name": "steps"},
        "spec": {"rollout": {"canary": {"stepWeights": [10, 100], "gates": [0]}}},
    }
    live = _apply(cluster, second, "team-b")
    assert live["spec"]["rollout"]["canary"] == {"stepWeights": [10, 100], "gates": [0]}


def test_repeated_gate_is_refused(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create(resource("bad", rollout={"canary": {"gates": [1, 1]}}))
    assert refused.value.status == 422
    assert "gates must not repeat a step" in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize(
    "changes",
    [{}, {"replicas": None, "autoscaling": _scaling(1, 2)}],
    ids=["fixed replicas", "autoscaled"],
)
def test_there_is_no_scale_subresource_to_fail(cluster: Cluster, changes: dict[str, Any]) -> None:
    """GET .../scale used to answer 500 for a resource without spec.replicas; the
    subresource is gone (404 for every resource), scale is spec.replicas."""
    cluster.create(resource("scaled", **changes))
    with pytest.raises(ApiException) as missing:
        cluster.custom.get_namespaced_custom_object_scale(
            "shipway.io", "v1alpha1", cluster.namespace, "modeldeployments", "scaled"
        )
    assert missing.value.status == 404


def test_empty_step_weights_are_refused_by_their_size_alone(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create(resource("bad", rollout={"canary": {"stepWeights": []}}))
    text = json.loads(refused.value.body)["message"]
    assert "at least 1 item" in text, text
    assert "evaluating rule" not in text, text  # no rule fails on the empty list itself
