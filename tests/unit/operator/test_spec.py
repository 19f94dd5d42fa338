"""The typed spec against the CRD: the same field names, the examples parse, and a spec
the API server would refuse is refused here too, naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.alias_generators import to_camel, to_snake

from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.codec import canary_spec, experiment_spec, spec_to_dict
from shipway.rollout.experiment import ExperimentSpec
from shipway_operator.spec import InvalidSpec, Spec, parse_spec

from .conftest import base_spec

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "operators" / "shipway_operator" / "crds" / "modeldeployments.shipway.io.yaml"
EXAMPLES = sorted((ROOT / "operators" / "examples").glob("*.yaml"))


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _differences(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    if schema.get("type") == "array":
        schema = schema["items"]
    properties = schema.get("properties", {})
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    problems = [f"{path}.{k}: in the CRD only" for k in properties.keys() - fields.keys()]
    problems += [f"{path}.{k}: in the model only" for k in fields.keys() - properties.keys()]
    for key in fields.keys() & properties.keys():
        nested = _model_of(fields[key].annotation)
        if nested is not None:
            problems += _differences(nested, properties[key], f"{path}.{key}")
    return problems


def test_typed_spec_and_crd_schema_name_the_same_fields() -> None:
    assert _differences(Spec, _schema()["properties"]["spec"], "spec") == []


def test_crd_is_namespaced_with_status_and_printer_columns() -> None:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced"
    assert (crd["spec"]["group"], version["name"]) == ("shipway.io", "v1alpha1")
    assert "md" in crd["spec"]["names"]["shortNames"]
    assert version["subresources"]["status"] == {}
    # no scale subresource: it answers 500 for a resource without spec.replicas
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Model", "Version", "Phase", "Ready", "Weight", "Age"} <= columns


def _crd_names(cls: type) -> set[str]:
    """The rollout engine's field names of ``cls``, as the CRD spells them (camelCase)."""
    return {to_camel(f.name) for f in dataclasses.fields(cls)}


def test_crd_names_the_rollout_engines_fields() -> None:
    """Derived from the engine's dataclasses: renaming a Python field without the CRD
    (or the other way round) fails here."""
    rollout = _schema()["properties"]["spec"]["properties"]["rollout"]["properties"]
    canary = rollout["canary"]["properties"]
    assert set(canary) == _crd_names(CanarySpec)
    assert set(canary["shadow"]["properties"]) == _crd_names(ShadowSpec)
    assert set(canary["thresholds"]["properties"]) == _crd_names(Thresholds)
    assert set(rollout["experiment"]["properties"]) == _crd_names(ExperimentSpec)


EXAMPLE_ROLLOUTS = [p for p in EXAMPLES if yaml.safe_load(p.read_text())["spec"].get("rollout")]


@pytest.mark.parametrize("path", EXAMPLE_ROLLOUTS, ids=lambda p: p.name)
def test_example_rollout_settings_round_trip_through_the_engine(path: Path) -> None:
    """Each example's rollout.<strategy>, as the operator hands it to the engine, builds
    the engine's spec, and every setting the example gives arrives with its value."""
    rollout = yaml.safe_load(path.read_text())["spec"]["rollout"]
    strategy = rollout.get("strategy", "canary")
    given = rollout[strategy]
    settings = parse_spec(yaml.safe_load(path.read_text())["spec"]).rollout.engine_settings()
    engine = canary_spec(settings) if strategy == "canary" else experiment_spec(settings)
    assert isinstance(engine, CanarySpec if strategy == "canary" else ExperimentSpec)
    built = spec_to_dict(engine)
    for key, value in given.items():
        name = to_snake(key)
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                assert built[name][to_snake(inner)] == inner_value, f"{key}.{inner}"
        else:
            assert built[name] == value, key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    resource = yaml.safe_load(path.read_text())
    assert resource["apiVersion"] == "shipway.io/v1alpha1"
    assert parse_spec(resource["spec"]).model.name


def test_defaults_fill_what_the_spec_leaves_out() -> None:
    spec = parse_spec(base_spec(replicas=None))
    assert spec.replicas is None and spec.autoscaling is None
    assert spec.triton.image.startswith("nvcr.io/nvidia/tritonserver:")
    assert (spec.routing.split, spec.routing.sticky_header) == ("weighted", "x-shipway-key")
    assert spec.rollout.strategy == "canary"
    assert spec.drift.actions == ("alert",)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"build": None}, r"spec\.build: Field required"),
        (
            {"build": {"id": "b", "modelRepository": "ftp://host/x.tar.gz"}},
            r"spec\.build: .*http\(s\), s3, gs or as URI, got 'ftp://host/x\.tar\.gz'",
        ),
        ({"model": {"name": "m"}}, r"spec\.model\.version: Field required"),
        (
            {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "target": {"metric": "pods"}}},
            r"either replicas or autoscaling|metricName and averageValue",
        ),
        (
            {
                "replicas": None,
                "autoscaling": {
                    "minReplicas": 5,
                    "maxReplicas": 2,
                    "target": {"metric": "cpu", "averageUtilization": 50},
                },
            },
            r"minReplicas must be at most maxReplicas",
        ),
        ({"replicas": 0}, r"spec\.replicas: Input should be greater than or equal to 1"),
        ({"rollout": {"strategy": "blue-green"}}, r"spec\.rollout\.strategy: Input should be"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(base_spec(**changes))


def test_replicas_and_autoscaling_together_are_refused() -> None:
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "target": {"metric": "cpu", "averageUtilization": 5},
    }
    with pytest.raises(InvalidSpec, match="set either replicas or autoscaling, not both"):
        parse_spec(base_spec(replicas=2, autoscaling=scaling))


@pytest.mark.parametrize(
    ("requests", "limits"),
    [
        ({"cpu": "1"}, {"nvidia.com/mig-1g.10gb": 1}),
        ({"gpu.intel.com/i915": 1}, {"gpu.intel.com/i915": 1}),
        ({"hugepages-2Mi": "128Mi"}, {"hugepages-2Mi": "128Mi", "memory": "1Gi"}),
        ({"nvidia.com/gpu": 1}, {"nvidia.com/gpu": "1"}),
        ({"hugepages-1Gi": "1Gi"}, {"hugepages-1Gi": "1024Mi"}),
    ],
)
def test_container_resources_the_api_server_accepts_parse(
    requests: dict[str, Any], limits: dict[str, Any]
) -> None:
    triton = {"resources": {"requests": requests, "limits": limits}}
    spec = parse_spec(base_spec(triton=triton))
    assert (spec.triton.resources.requests, spec.triton.resources.limits) == (requests, limits)


@pytest.mark.parametrize(
    ("requests", "limits", "message"),
    [
        ({"nvidia.com/gpu": 1}, {}, r"nvidia.com/gpu is set in limits; a request.*must equal"),
        ({"nvidia.com/gpu": 2}, {"nvidia.com/gpu": "1"}, r"must equal its limit"),
        ({"hugepages-2Mi": "64Mi"}, {}, r"hugepages-2Mi is set in limits"),
        ({}, {"gpu": 1}, r"'gpu' is not cpu, memory, ephemeral-storage, hugepages"),
        ({"cpu": "lots"}, {}, r"cpu: 'lots' is not a Kubernetes quantity"),
    ],
)
def test_container_resources_the_api_server_refuses_are_refused(
    requests: dict[str, Any], limits: dict[str, Any], message: str
) -> None:
    triton = {"resources": {"requests": requests, "limits": limits}}
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(base_spec(triton=triton))


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        ({"canary": {"intervalSeconds": 1.5}}, "canary.intervalSeconds"),
        ({"canary": {"progressDeadlineSeconds": 90.5}}, "canary.progressDeadlineSeconds"),
        ({"canary": {"bakeSeconds": 0.25}}, "canary.bakeSeconds"),
        (
            {"strategy": "experiment", "experiment": {"intervalSeconds": 2.5}},
            "experiment.intervalSeconds",
        ),
        (
            {"strategy": "experiment", "experiment": {"maxDurationSeconds": 1.5}},
            "experiment.maxDurationSeconds",
        ),
    ],
)
def test_seconds_are_whole(rollout: dict[str, Any], field: str) -> None:
    with pytest.raises(
        InvalidSpec, match=rf"spec\.rollout\.{field}: Input should be a valid integer"
    ):
        parse_spec(base_spec(rollout=rollout))


def test_engine_settings_are_snake_case_with_float_seconds() -> None:
    canary = {
        "stepWeights": [10, 100],
        "intervalSeconds": 60,
        "bakeSeconds": 0,
        "gates": [1],
        "thresholds": {"maxP99Ratio": 1.5},
    }
    settings = parse_spec(base_spec(rollout={"canary": canary})).rollout.engine_settings()
    assert settings == {
        "step_weights": [10, 100],
        "interval_seconds": 60.0,
        "bake_seconds": 0.0,
        "gates": [1],
        "thresholds": {"max_p99_ratio": 1.5},
    }
    assert isinstance(settings["interval_seconds"], float)
    experiment = {"weight": 20, "maxDurationSeconds": 600}
    spec = parse_spec(base_spec(rollout={"strategy": "experiment", "experiment": experiment}))
    assert spec.rollout.engine_settings() == {"weight": 20, "max_duration_seconds": 600.0}
    assert parse_spec(base_spec()).rollout.engine_settings() == {}
