"""Builds whose served model misbehaves on purpose, for rollout tests.

A tiny ONNX model (y = 2x) is registered through the real registration path; its
"builds" are Triton repositories of the flaky Python-backend model, published the way
the build pipeline publishes (an MLflow artifact under the version's run, a succeeded
build row). The fault, when there is one, is in the served model: a share of requests
answered with an error, or a sleep on a share of requests.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from shipway.builds.packaging import triton_model_name
from shipway.builds.pipeline import build_artifact_path
from shipway.container import Container
from shipway.services import models
from shipway.store.models import Build, BuildStatus, ModelVersion, new_id

FLAKY = Path(__file__).parent / "models" / "flaky" / "1" / "model.py"
WIDTH = 2

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1, {width} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, {width} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters [
  {{ key: "fail_share" value: {{ string_value: "{fail_share}" }} }},
  {{ key: "sleep_ms" value: {{ string_value: "{sleep_ms}" }} }},
  {{ key: "sleep_share" value: {{ string_value: "{sleep_share}" }} }}
]
"""


def doubler_onnx(input_name: str = "x") -> bytes:
    """y = 2x; ``input_name`` renames the input (a version that breaks its clients)."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", [input_name, "two"], ["y"])
    graph = helper.make_graph([node], "doubler", [x], [y])
    graph.initializer.append(two)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def register_doubler(container: Container, name: str, input_name: str = "x") -> ModelVersion:
    buffer = io.BytesIO()
    rows = np.random.default_rng(0).normal(size=(32, WIDTH)).astype(np.float32)
    np.savez(buffer, **{input_name: rows})
    registration = models.Registration(name, doubler_onnx(input_name), buffer.getvalue(), {})
    return models.register(container, registration, "test")


def publish_flaky_build(
    container: Container,
    version: ModelVersion,
    fail_share: float = 0.0,
    sleep_ms: float = 0.0,
    sleep_share: float = 1.0,
) -> str:
    build_id = new_id()
    name = triton_model_name(version.name, build_id)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(FLAKY, repo / name / "1" / "model.py")
        (repo / name / "config.pbtxt").write_text(
            CONFIG.format(
                name=name,
                width=WIDTH,
                fail_share=fail_share,
                sleep_ms=sleep_ms,
                sleep_share=sleep_share,
            )
        )
        container.registry.log_dir(version.mlflow_run_id, repo, build_artifact_path(build_id))
    report = {"test_model": "flaky", "fail_share": fail_share, "sleep_ms": sleep_ms}
    return record_build(container, version, build_id, name, report)


def record_build(
    container: Container,
    version: ModelVersion,
    build_id: str,
    triton_name: str,
    report: dict[str, object] | None = None,
) -> str:
    """The succeeded build row of a repository published under ``build_id``'s artifact
    path, as the pipeline writes it."""
    with container.db.session() as session:
        session.add(
            Build(
                id=build_id,
                model_version_id=version.id,
                recipe="fp32",
                target="onnxruntime-cpu",
                status=BuildStatus.SUCCEEDED,
                stage="done",
                progress=1.0,
                artifact_path=build_artifact_path(build_id),
                triton_model_name=triton_name,
                report=report or {},
            )
        )
    return build_id


def succeeded_builds(container: Container, version: ModelVersion, count: int) -> list[str]:
    """Build rows marked succeeded without artifacts, for tests whose replicas are
    written by hand."""
    with container.db.session() as session:
        rows = [
            Build(
                model_version_id=version.id,
                recipe="fp32",
                target="onnxruntime-cpu",
                status=BuildStatus.SUCCEEDED,
            )
            for _ in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def real_build(container: Container, version: ModelVersion, recipe: str = "fp32") -> str:
    """A build through the real pipeline, run in this process as a worker would run it:
    the registered ONNX served by ONNX Runtime in Triton's Python backend."""
    from shipway.builds.pipeline import BuildPipeline
    from shipway.builds.recipes import parse

    parsed_recipe, target = parse(recipe, "onnxruntime-cpu")
    with container.db.session() as session:
        row = Build(model_version_id=version.id, recipe=parsed_recipe, target=target)
        session.add(row)
        session.flush()
        build_id = row.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    return build_id


def infer_body(row: list[float]) -> dict[str, object]:
    """One request of one row (the registered sample's rows are standard normal)."""
    return {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": row}]}
