"""INT8 against named baselines, through the real build pipeline (``BuildPipeline``, as
a worker runs it) on small models built with ``onnx.helper``:

- the tiny encoder (``tests/support/graphs.tiny_encoder``: MatMul + Softmax
  attention-like, an ``attention_mask`` input): ONNX Runtime's transformer optimizer
  does not recognise its attention, so ``int8-dynamic`` falls back to the ``matmul``
  arm (the ``qattention`` arm says why it was not tried) and never fails for it; the
  report names both baselines and measures real lengths from the calibration mask;
- ``quantize_embeddings``: the token table stored INT8, the model smaller, gated;
- a Gemm classifier (no mask input): no real lengths, with the reason;
- bad input: ``quantize_embeddings`` on another recipe is refused before anything is
  queued.

MiniLM, which the optimizer does fuse, is in ``test_optimized_builds.py``
(``test_int8_dynamic_build``): both arms through the gate, the faster one ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from shipway.builds.pipeline import BuildPipeline
from shipway.builds.recipes import BuildOptions, parse
from shipway.builds.triton_models.padding import real_lengths
from shipway.container import Container
from shipway.engines.evaluate import run, session
from shipway.errors import InvalidInput
from shipway.registry.signature import load_sample
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus, ModelVersion
from tests.support import graphs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    home = tmp_path_factory.mktemp("int8-arms")
    # Short benchmark rounds: speeds are reported, never asserted on.
    container = Container(Settings(home=home, build_bench_seconds=0.2, build_bench_rounds=1))
    container.registry.initialize()
    yield container
    container.close()


def build(container: Container, version: ModelVersion, recipe: str, **options: Any) -> Build:
    """A build row made as the API makes it, run in this process as a worker runs it."""
    parsed_recipe, parsed_target = parse(recipe, "onnxruntime-cpu")
    parsed = BuildOptions.from_dict(options)
    parsed.check(parsed_recipe)
    with container.db.session() as s:
        row = Build(
            model_version_id=version.id,
            recipe=parsed_recipe,
            target=parsed_target,
            options=parsed.to_dict(),
        )
        s.add(row)
        s.flush()
        build_id = row.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    return builds.get(container, build_id)


def engine_of(container: Container, version: ModelVersion, row: Build, dst: Path) -> Path:
    assert row.artifact_path and row.triton_model_name
    repo = container.registry.download(version.mlflow_run_id, row.artifact_path, dst)
    return repo / row.triton_model_name / "1" / "model.onnx"


# Real lengths 2..16, padded to 32: the calibration dataset's mask gives the lengths.
LENGTHS = [3, 9, 14, 5, 11, 2, 16, 7, 4, 12, 6, 8]


@pytest.fixture(scope="module")
def encoder(container: Container) -> ModelVersion:
    sample = graphs.token_rows(LENGTHS, 32, seed=2)
    calibration = graphs.token_rows(LENGTHS[::-1] * 2, 32, seed=3)
    return models.register(
        container,
        models.Registration(
            "arms-encoder",
            graphs.tiny_encoder(),
            graphs.npz(**sample),
            {},
            graphs.npz(**calibration),
        ),
        actor="test",
    )


def assert_baselines_named(bench: dict[str, Any]) -> None:
    """Both baselines, by name, at every shape measured; a speedup for each."""
    assert set(bench["baselines"]) == {"raw_fp32", "fused_fp32"}
    assert bench["baselines"]["raw_fp32"]["description"] == "the registered FP32 export"
    for baseline in ("raw_fp32", "fused_fp32"):
        ratios = bench[f"speedup_vs_{baseline}"]
        assert set(ratios) == {"padded", "real_lengths"}
        assert ratios["padded"] is not None and ratios["padded"] > 0
    # The legacy figure is the raw one at the padded length.
    assert bench["speedup_vs_fp32"] == bench["speedup_vs_raw_fp32"]["padded"]


def test_an_unfused_encoder_falls_back_to_the_matmul_arm_with_both_baselines(
    container: Container, encoder: ModelVersion, tmp_path: Path
) -> None:
    row = build(container, encoder, "int8-dynamic")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    report = row.report
    arms = report["arms"]
    # The optimizer does not recognise this attention: that arm is not tried, the
    # build does not fail for it, and the report says why.
    assert arms["qattention"]["tried"] is False and arms["qattention"]["passed"] is False
    assert "fused no attention" in arms["qattention"]["reason"]
    bench = report["benchmark"]
    assert bench["arm"] == "matmul"
    assert arms["matmul"]["passed"] is True  # the shipped arm passed the gate
    assert report["accuracy"]["passed"] and report["accuracy"]["mean_cosine"] >= 0.99
    assert report["accuracy"]["mean_cosine"] == arms["matmul"]["mean_cosine"]
    assert set(bench["arm_decision"]["rows_per_second"]) == {"matmul"}
    assert bench["arm_decision"]["by"] == "real_lengths"

    assert_baselines_named(bench)
    fused = bench["baselines"]["fused_fp32"]
    assert fused["fused"] is False and fused["same_as"] == "raw_fp32"
    assert "fused nothing in this graph" in fused["reason"]
    assert bench["speedup_vs_fused_fp32"] == bench["speedup_vs_raw_fp32"]

    # Real lengths: the calibration rows, batches of 8 cut to their longest row.
    calibration = graphs.token_rows(LENGTHS[::-1] * 2, 32, seed=3)
    lengths = real_lengths(calibration["attention_mask"])
    real = bench["shapes"]["real_lengths"]
    assert real["rows"] == len(lengths) and real["batches"] == 3
    assert real["mean_length"] == round(float(lengths.mean()), 2)
    assert real["max_length"] == 16 and real["padded_length"] == 32
    assert bench["speedup_vs_raw_fp32"]["real_lengths"] > 0
    assert bench["baselines"]["raw_fp32"]["real_lengths"]["rows_per_second"] > 0
    assert bench["candidate_real_lengths"]["batch"] == 8

    # The engine shipped is the matmul arm's: MatMulInteger, no QAttention, and it
    # answers as the gate judged it (same outputs as ONNX Runtime on the engine).
    engine = engine_of(container, encoder, row, tmp_path / "repo")
    ops = {n.op_type for n in onnx.load(str(engine)).graph.node}
    assert "MatMulInteger" in ops and "QAttention" not in ops
    assert "embeddings" not in report["quantization"]  # not asked for: tables in float
    metrics = container.registry._client.get_run(encoder.mlflow_run_id).data.metrics
    assert metrics[f"build.{row.id}.speedup_vs_fused_fp32_real_lengths"] == pytest.approx(
        bench["speedup_vs_fused_fp32"]["real_lengths"]
    )


def test_quantized_embeddings_shrink_the_model_and_pass_the_gate(
    container: Container, encoder: ModelVersion, tmp_path: Path
) -> None:
    plain = build(container, encoder, "int8-dynamic")
    small = build(container, encoder, "int8-dynamic", quantize_embeddings=True)
    assert plain.status == small.status == BuildStatus.SUCCEEDED, small.error
    report = small.report
    assert report["options"]["quantize_embeddings"] is True
    embeddings = report["quantization"]["embeddings"]
    assert embeddings["quantized"] is True and len(embeddings["tables"]) == 1  # the token table
    assert report["accuracy"]["passed"]
    assert report["size_mb"]["candidate"] < plain.report["size_mb"]["candidate"]
    assert report["size_mb"]["fp32"] == plain.report["size_mb"]["fp32"]
    engine = engine_of(container, encoder, small, tmp_path / "repo")
    model = onnx.load(str(engine))
    table = next(i for i in model.graph.initializer if i.name == embeddings["tables"][0])
    # 8-bit (the quantizer stores a Gather table as its activations: uint8)
    assert table.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    assert list(table.dims) == [50, 8]
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert any(n.input[0] == table.name for n in gathers)
    # The stored engine runs and answers close to the FP32 model.
    rows = graphs.token_rows([5, 9, 2], 16, seed=9)
    fp32 = onnx.load_from_string(graphs.tiny_encoder()).SerializeToString()
    want = run(session(fp32), rows)["pooled"]
    got = run(session(engine), rows)["pooled"]
    cosine = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.98


def test_a_classifier_without_a_mask_says_why_real_lengths_are_not_measured(
    container: Container,
) -> None:
    model, sample = graphs.gemm_classifier()
    version = models.register(
        container, models.Registration("arms-classifier", model, sample, {}), actor="test"
    )
    asked = build(container, version, "int8-dynamic", quantize_embeddings=True)
    assert asked.status == BuildStatus.SUCCEEDED, asked.error
    assert asked.report["quantization"]["embeddings"] == {
        "quantized": False,
        "tables": [],
        "reason": "the model has no Gather on a constant float table to quantize",
    }
    for recipe, arm in (("int8-dynamic", "matmul"), ("int8", None)):
        row = build(container, version, recipe)
        assert row.status == BuildStatus.SUCCEEDED, (recipe, row.error)
        report = row.report
        assert report["accuracy"]["passed"] and report["accuracy"]["top1_agreement"] >= 0.99
        bench = report["benchmark"]
        assert bench["arm"] == arm
        if arm:
            assert report["arms"][arm]["passed"] is True
            assert report["arms"]["qattention"]["tried"] is False
        else:
            assert "arms" not in report  # static INT8 has one path
        assert_baselines_named(bench)
        assert bench["shapes"]["real_lengths"] == {
            "skipped": "no mask input (the model has no input 'attention_mask')"
        }
        assert bench["speedup_vs_raw_fp32"]["real_lengths"] is None
        assert bench["candidate_real_lengths"] is None
        assert bench["baselines"]["fused_fp32"]["same_as"] == "raw_fp32"
        assert "real_lengths" not in bench["baselines"]["raw_fp32"]
        rows = load_sample(sample)
        assert bench["candidate"]["batch"] == 8 and rows["x"].shape[0] == 32


def test_quantize_embeddings_on_another_recipe_is_refused_before_queueing(
    container: Container, encoder: ModelVersion
) -> None:
    def count() -> int:
        with container.db.session() as s:
            return s.query(Build).filter(Build.model_version_id == encoder.id).count()

    before = count()
    for recipe in ("int8", "fp32"):
        with pytest.raises(
            InvalidInput,
            match=f"quantize_embeddings applies to the int8-dynamic recipe only, not {recipe}",
        ):
            builds.create(
                container,
                "arms-encoder",
                1,
                recipe,
                "onnxruntime-cpu",
                "test",
                {"quantize_embeddings": True},
            )
    with pytest.raises(InvalidInput, match="quantize_embeddings must be true or false"):
        builds.create(
            container,
            "arms-encoder",
            1,
            "int8-dynamic",
            "onnxruntime-cpu",
            "test",
            {"quantize_embeddings": "yes"},
        )
    assert count() == before  # nothing half-written
