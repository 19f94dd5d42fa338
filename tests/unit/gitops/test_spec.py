"""shipway.yaml parsing: valid specs load with their defaults; every kind of error names
the field path and the line it is on, and nothing else is accepted silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipway.errors import InvalidInput
from shipway.gitops.spec import parse, where

EXAMPLE = Path(__file__).resolve().parents[3] / "pipelines" / "examples" / "shipway.yaml"

VALID = """\
apiVersion: shipway.io/v1alpha1
kind: ModelRelease
model:
  name: gemm
  onnx: model/gemm.onnx
  sample: model/sample.npz
builds:
  - name: fast
    recipe: int8-dynamic
  - name: exact
    options: {minCosine: 0.995}
deployment:
  name: gemm
  build: fast
  replicas: 1
  maxReplicas: 3
  targetInflight: 2
  rollout:
    strategy: canary
    settings:
      stepWeights: [20, 100]
      intervalSeconds: 2
      thresholds: {minRequests: 10, maxP99Ratio: 2.5}
  drift:
    actions: [alert, rollback]
"""


def error(text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse(text)
    return str(caught.value)


def test_a_valid_spec_loads_with_defaults_filled_in() -> None:
    spec = parse(VALID)
    assert spec.model.name == "gemm" and spec.model.calibration is None
    assert [b.name for b in spec.builds] == ["fast", "exact"]
    assert spec.build("exact").recipe.value == "fp32"
    assert spec.build("exact").target.value == "onnxruntime-cpu"
    # options as the store keeps them: every option, defaults filled in
    assert spec.build("exact").options_dict()["min_cosine"] == 0.995
    assert spec.build("exact").options_dict()["max_fp32_layers"] == 4
    assert spec.deployment is not None and spec.deployment.rollout is not None
    assert spec.deployment.rollout.engine_settings() == {
        "step_weights": [20, 100],
        "interval_seconds": 2,
        "thresholds": {"min_requests": 10, "max_p99_ratio": 2.5},
    }
    assert spec.deployment.drift is not None
    assert spec.deployment.drift.policy() == {"actions": ["alert", "rollback"], "webhook_url": None}
    assert spec.files() == {"model.onnx": "model/gemm.onnx", "model.sample": "model/sample.npz"}
    assert spec.triggers is None


def test_the_smallest_spec_registers_only() -> None:
    spec = parse(
        "apiVersion: shipway.io/v1alpha1\nkind: ModelRelease\n"
        "model: {name: m, onnx: m.onnx, sample: s.npz}\n"
    )
    assert spec.builds == [] and spec.deployment is None


def test_the_example_in_pipelines_parses() -> None:
    spec = parse(EXAMPLE.read_text())
    assert spec.deployment is not None and spec.deployment.build == "int8"
    assert spec.model.calibration == "model/calibration.npz"
    assert spec.triggers is not None and spec.triggers.mlflow is not None
    assert spec.triggers.mlflow.aliases == ["champion"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    recipe: int8-dynamic",
            "    recipe: int9",
            "shipway.yaml line 9: builds[0].recipe: 'int9' is not one of fp32, fp16, int8, "
            "int8-dynamic",
        ),
        ("kind: ModelRelease", "kind: ModelDeployment", "line 2: kind: 'ModelDeployment' is not"),
        ("apiVersion: shipway.io/v1alpha1", "apiVersion: v1", "line 1: apiVersion: 'v1' is not"),
        (
            "  - name: exact",
            "  - name: fast",
            "line 10: builds[1].name: duplicate build name 'fast'",
        ),
        ("  build: fast", "  build: slow", "line 14: deployment.build: 'slow' names no build"),
        ("model/sample.npz", "../sample.npz", "line 6: model.sample: '../sample.npz' leaves"),
        ("model/sample.npz", "/etc/passwd", "line 6: model.sample: '/etc/passwd' is absolute"),
        ("model/gemm.onnx", "model/../../gemm.onnx", "line 5: model.onnx: 'model/../../gemm.onnx'"),
        (
            "  sample: model/sample.npz",
            "  sample: model/sample.npz\n  name: other",
            "line 7: model.name: duplicate key (first on line 4)",
        ),
        (
            "{minCosine: 0.995}",
            "{minCosin: 0.995}",
            "line 11: builds[1].options.minCosin: unknown field; known: calibration, minCosine",
        ),
        ("{minCosine: 0.995}", "{minCosine: 1.5}", "line 11: builds[1].options.minCosine:"),
        ("{minCosine: 0.995}", "{minCosine: '0.9'}", "line 11: builds[1].options.minCosine:"),
        (
            "    recipe: int8-dynamic",
            "    recipe: fp16",
            "line 9: builds[0].recipe: recipe 'fp16' for target 'onnxruntime-cpu'",
        ),
        (
            "  maxReplicas: 3",
            "  maxReplicas: 17",
            "line 16: deployment.maxReplicas: must be less than or equal to 16",
        ),
        ("  replicas: 1", "  replicas: 4", "line 16: deployment.maxReplicas: must be at least"),
        (
            "  replicas: 1",
            "  replicas: '1'",
            "line 15: deployment.replicas: must be a valid integer",
        ),
        ("  targetInflight: 2", "  targetInflight: -1", "line 17: deployment.targetInflight:"),
        (
            "stepWeights: [20, 100]",
            "stepWeights: [20, 50]",
            "line 21: deployment.rollout.settings.stepWeights: stepWeights must be within 1..100",
        ),
        (
            "intervalSeconds: 2",
            "intervalSecond: 2",
            "line 22: deployment.rollout.settings.intervalSecond: unknown canary settings",
        ),
        (
            "strategy: canary",
            "strategy: blue-green",
            "line 19: deployment.rollout.strategy: 'blue-green' is not one of canary, experiment",
        ),
        (
            "actions: [alert, rollback]",
            "actions: [webhook]",
            "line 24: deployment.drift: a webhook action needs webhookUrl",
        ),
        (
            "actions: [alert, rollback]",
            "actions: [page]",
            "line 25: deployment.drift.actions[0]: 'page' is not one of alert, webhook, rollback",
        ),
        (
            "  name: gemm\n  build",
            "  name: Gemm_1\n  build",
            "line 13: deployment.name: 'Gemm_1': must be lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters",
        ),
        (
            "  drift:\n    actions: [alert, rollback]",
            "  drift:\n    actions: [webhook]\n    webhookUrl: ftp://example.com/x",
            "line 26: deployment.drift.webhookUrl: 'ftp://example.com/x': must be an http:// "
            "or https:// URL",
        ),
        (
            "builds:\n  - name: fast",
            "builds:\n  fast:\n  - name: fast",
            "line 7: builds: must be a list (- item, or [a, b]), not a mapping",
        ),
        (
            "model:\n  name: gemm",
            "model: [gemm]\nmodelx:\n  name: gemm",
            "line 3: model: must be a mapping (key: value), not a list",
        ),
    ],
)
def test_errors_name_the_field_and_its_line(old: str, new: str, expected: str) -> None:
    assert old in VALID
    message = error(VALID.replace(old, new, 1))
    assert expected in message, message
    assert message.startswith("shipway.yaml line ")


def test_where_names_a_field_and_its_line_for_later_messages() -> None:
    assert where(VALID, "int8.yaml", ("model", "sample")) == "int8.yaml line 6: model.sample"
    assert where(VALID, "shipway.yaml", ("deployment", "drift", "actions")) == (
        "shipway.yaml line 25: deployment.drift.actions"
    )


def test_unknown_and_missing_fields_name_what_is_known() -> None:
    message = error(VALID + "deploy: {}\n")
    assert "line 26: deploy: unknown field; known: apiVersion, kind, model, builds" in message
    message = error(VALID.replace("  sample: model/sample.npz\n", ""))
    assert "line 3: model.sample: required, missing" in message


def test_several_errors_are_reported_together_by_line() -> None:
    message = error(
        VALID.replace("int8-dynamic", "int9").replace("maxReplicas: 3", "maxReplicas: 0")
    )
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("shipway.yaml line 9: builds[0].recipe")
    assert lines[1].startswith("shipway.yaml line 16: deployment.maxReplicas")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "shipway.yaml: the file is empty"),
        ("# only a comment\n", "shipway.yaml: the file is empty"),
        ("- a\n- b\n", "shipway.yaml line 1: the top level must be a mapping"),
        ("just words\n", "shipway.yaml line 1: the top level must be a mapping"),
        ("model: [1, 2\n", "shipway.yaml line 2: not valid YAML"),
        ("a: 1\n---\nb: 2\n", "line 2: not valid YAML: expected a single document"),
        ("a: !!python/object:os.system x\n", "line 1: not valid here: could not determine"),
        ("a: &x [*x]\n", "line 1: a[0]: YAML aliases (*x) are not supported"),
        ("a: [*x]\n", "line 1: a[0]: YAML aliases (*x) are not supported"),
        ("a: &k b\n*k : 1\n", "line 2: (top level): YAML aliases (*k) are not supported"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "[0][0]: nested too deeply"),
        ("<<: {a: 1}\n", "line 1: (top level): merge keys (<<) are not supported"),
        ("? [a]\n: 1\n", "line 1: (top level): a key must be a name"),
    ],
)
def test_what_is_not_a_spec_at_all(text: str, expected: str) -> None:
    assert expected in error(text)


def nested_aliases(levels: int, width: int) -> str:
    """A "billion laughs": each level lists the one before ``width`` times, so the
    spec stands for ``width ** levels`` values in a few hundred bytes."""
    lines = ["l0: &l0 [x]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_at_the_first_alias() -> None:
    bomb = nested_aliases(7, 10)  # 10**7 values: minutes of CPU if walked
    assert len(bomb) < 450
    assert "shipway.yaml line 2: l1[0]: YAML aliases (*l0) are not supported" in error(bomb)
    # an alias inside an otherwise valid spec is refused where it is written
    text = VALID.replace("  name: gemm\n  build", "  name: *model\n  build").replace(
        "  name: gemm\n", "  name: &model gemm\n", 1
    )
    assert "line 13: deployment.name: YAML aliases (*model) are not supported" in error(text)


def test_a_duplicate_key_deep_in_the_spec_is_refused() -> None:
    text = VALID.replace(
        "      intervalSeconds: 2\n", "      intervalSeconds: 2\n      intervalSeconds: 3\n"
    )
    assert (
        "line 23: deployment.rollout.settings.intervalSeconds: duplicate key (first on line 22)"
        in error(text)
    )


def test_the_mlflow_trigger_names_known_events_only() -> None:
    text = VALID + "triggers:\n  mlflow:\n    events: [model_version.deleted]\n"
    assert (
        "line 28: triggers.mlflow.events[0]: 'model_version.deleted' is not one of "
        "model_version.created, model_version_alias.created"
    ) in error(text)
    assert "triggers.mlflow.events: List should have at least 1 item" in error(
        VALID + "triggers:\n  mlflow:\n    events: []\n"
    )


def test_the_reference_example_in_the_pipelines_readme_parses() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    reference = readme.split("## shipway.yaml reference", 1)[1]
    block = reference.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse(block)
    assert spec.deployment is not None and spec.deployment.replicas == 2
