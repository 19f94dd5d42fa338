"""Optimized builds of the real MiniLM model: INT8 calibration, the accuracy gate with
selective FP32 layers, the benchmark against FP32 and stable, and the generated Triton
repositories loaded by a real tritonserver. Bad inputs fail clearly and leave nothing
deployable.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from shipway.builds.baselines import ARM_MARGIN
from shipway.builds.pipeline import BuildPipeline
from shipway.builds.recipes import BuildOptions, parse
from shipway.container import Container
from shipway.engines import tensorrt
from shipway.engines.evaluate import run, session
from shipway.errors import InvalidInput
from shipway.registry.signature import load_sample
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.services import builds, deployments, models
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus, ModelVersion
from tests.support import graphs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    home = tmp_path_factory.mktemp("optimized")
    # Short benchmark rounds: the numbers are reported, never asserted on here.
    container = Container(Settings(home=home, build_bench_seconds=0.2, build_bench_rounds=1))
    container.registry.initialize()
    yield container
    container.close()


@pytest.fixture(scope="module")
def minilm_version(container: Container, minilm_onnx: Path, minilm_sample: Path) -> ModelVersion:
    return models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
        actor="test",
    )


def build(
    container: Container,
    version: ModelVersion,
    recipe: str,
    target: str = "onnxruntime-cpu",
    **options: Any,
) -> tuple[Build, list[str]]:
    """Create a build row as the API does (same validation), and run its pipeline in
    this process, as a worker would; returns the build and the stages it reported."""
    parsed_recipe, parsed_target = parse(recipe, target)
    with container.db.session() as s:
        row = Build(
            model_version_id=version.id,
            recipe=parsed_recipe,
            target=parsed_target,
            options=BuildOptions.from_dict(options).to_dict(),
        )
        s.add(row)
        s.flush()
        build_id = row.id
    stages: list[str] = []
    BuildPipeline(container.db, container.registry, container.settings).run(
        build_id, lambda stage, _: stages.append(stage)
    )
    return builds.get(container, build_id), stages


def repository(container: Container, version: ModelVersion, row: Build, dst: Path) -> Path:
    assert row.artifact_path
    return container.registry.download(version.mlflow_run_id, row.artifact_path, dst)


def test_int8_build_passes_the_gate_beats_fp32_and_serves_in_triton(
    container: Container,
    minilm_version: ModelVersion,
    minilm_sample: Path,
    triton_dist: TritonDistribution,
    tmp_path: Path,
) -> None:
    fp32, _ = build(container, minilm_version, "fp32")
    deployments.deploy(container, "minilm-web", fp32.id, "test")  # the stable to race

    row, stages = build(container, minilm_version, "int8", calibration="minmax")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert stages[:5] == [
        "fetch-model",
        "check-calibration-data",
        "prepare-graph",
        "calibrate",
        "quantize",
    ]
    assert stages[-3:] == ["benchmark", "package-triton", "upload-artifacts"]
    report = row.report
    assert report["calibration"]["method"] == "minmax"
    assert report["calibration"]["rows"] == 8 and report["calibration"]["held_out_rows"] == 8
    assert report["accuracy"]["passed"] and report["accuracy"]["mean_cosine"] >= 0.99
    pooled = next(o for o in report["accuracy"]["outputs"] if o["name"] == "onnx::Shape_422")
    assert pooled["kind"] == "pooled-embedding" and pooled["token_mean_cosine"] > 0.98
    bench = report["benchmark"]
    assert bench["stable_build"] == fp32.id
    assert {"candidate", "fp32", "stable"} <= bench.keys()
    assert bench["speedup_vs_fp32"] > 0 and bench["speedup_vs_stable"] > 0
    assert report["size_mb"]["candidate"] < report["size_mb"]["fp32"]

    # The report's numbers are MLflow metrics of the version's run.
    metrics = container.registry._client.get_run(minilm_version.mlflow_run_id).data.metrics
    assert metrics[f"build.{row.id}.mean_cosine"] == pytest.approx(
        report["accuracy"]["mean_cosine"]
    )
    assert f"build.{row.id}.speedup_vs_stable" in metrics

    # The packaged repository: Q/DQ INT8 inside, loaded and served by a real tritonserver.
    repo = repository(container, minilm_version, row, tmp_path / "repo")
    model_file = repo / row.triton_model_name / "1" / "model.onnx"
    ops = {n.op_type for n in onnx.load(str(model_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    config = (repo / row.triton_model_name / "config.pbtxt").read_text()
    assert "model_warmup" in config and "dynamic_batching" in config
    assert_served_like_onnxruntime(triton_dist, repo, row, minilm_sample, tmp_path)


def assert_served_like_onnxruntime(
    triton_dist: TritonDistribution, repo: Path, row: Build, sample_path: Path, tmp_path: Path
) -> None:
    """The build's repository, loaded by a real tritonserver, answers as ONNX Runtime
    does on the same engine file."""
    assert row.triton_model_name
    model_file = repo / row.triton_model_name / "1" / "model.onnx"
    process = TritonProcess(triton_dist, repo, tmp_path / "triton.log")
    process.start()
    try:
        process.wait_ready(120)
        assert process.model_ready(row.triton_model_name)
        sample = load_sample(sample_path.read_bytes())
        rows = {k: v[:2] for k, v in sample.items()}
        body = {
            "inputs": [
                {"name": k, "shape": list(v.shape), "datatype": "INT64", "data": v.tolist()}
                for k, v in rows.items()
            ],
            "outputs": [{"name": "461"}],
        }
        answer = httpx.post(
            f"{process.url}/v2/models/{row.triton_model_name}/infer", json=body, timeout=30
        )
        assert answer.status_code == 200, answer.text
        served = np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(2, -1)
        local = run(session(model_file), rows)["461"]
        np.testing.assert_allclose(served, local, rtol=1e-4, atol=1e-4)
    finally:
        process.stop()


def test_int8_dynamic_build(
    container: Container,
    minilm_version: ModelVersion,
    minilm_sample: Path,
    triton_dist: TritonDistribution,
    tmp_path: Path,
) -> None:
    row, stages = build(container, minilm_version, "int8-dynamic")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert "calibrate" not in stages  # weights offline, activations at run time
    assert "quantize-attention" in stages
    report = row.report
    assert report["accuracy"]["mean_cosine"] >= 0.99
    assert report["selective"]["kept_fp32"] == []
    # Both arms went through the gate; the one that ships passed it, and no other arm
    # that passed was faster by more than the margin (matmul is kept on noise).
    arms, bench = report["arms"], report["benchmark"]
    assert arms["matmul"]["tried"] and arms["qattention"]["tried"]
    assert arms["qattention"]["attention_nodes"] == 3  # one fused Attention per layer
    chosen = bench["arm"]
    assert (
        arms[chosen]["passed"] and report["accuracy"]["mean_cosine"] == arms[chosen]["mean_cosine"]
    )
    rates = bench["arm_decision"]["rows_per_second"]
    passing = [name for name, arm in arms.items() if arm["passed"]]
    assert set(rates) == set(passing)
    assert all(rate <= rates[chosen] * (1 + ARM_MARGIN) for rate in rates.values())
    if chosen != "matmul":  # the preferred arm gives way only to a clear lead
        assert rates[chosen] > rates["matmul"] * (1 + ARM_MARGIN)
    # Named baselines: the fused FP32 graph holds ONNX Runtime's fusions.
    fused = bench["baselines"]["fused_fp32"]
    assert fused["fused"] is True and fused["fusions"]["Attention"] == 3
    for baseline in ("raw_fp32", "fused_fp32"):
        assert bench[f"speedup_vs_{baseline}"]["padded"] > 0
        assert bench[f"speedup_vs_{baseline}"]["real_lengths"] > 0
    assert bench["shapes"]["real_lengths"]["padded_length"] == 32
    repo = repository(container, minilm_version, row, tmp_path / "repo")
    ops = {
        n.op_type
        for n in onnx.load(str(repo / row.triton_model_name / "1" / "model.onnx")).graph.node
    }
    assert "MatMulInteger" in ops
    assert ("QAttention" in ops) == (chosen == "qattention")
    assert_served_like_onnxruntime(triton_dist, repo, row, minilm_sample, tmp_path)


def test_selective_search_keeps_sensitive_layers_and_a_failed_gate_deploys_nothing(
    container: Container, minilm_version: ModelVersion
) -> None:
    # A bar that full INT8 misses: the sweep ranks layers, the search keeps the worst
    # ones in FP32 up to the budget, and the build fails with its report.
    row, stages = build(container, minilm_version, "int8", min_cosine=0.99999, max_fp32_layers=2)
    assert row.status == BuildStatus.FAILED
    assert row.error and row.error.startswith("accuracy gate failed")
    assert "sensitivity-sweep" in stages and "benchmark" not in stages
    selective = row.report["selective"]
    assert len(selective["tries"]) == 3  # 0, 1 and 2 layers kept in FP32
    cosines = [t["mean_cosine"] for t in selective["tries"]]
    assert cosines[2] > cosines[0]  # keeping the most sensitive layers helps
    ranked = [s["node"] for s in selective["most_sensitive"]]
    assert selective["kept_fp32"] == ranked[:2]
    # Nothing deployable: no artifact, no repository in MLflow.
    assert row.artifact_path is None
    assert not container.registry.has_artifact(
        minilm_version.mlflow_run_id, f"builds/{row.id}/triton"
    )
    with pytest.raises(Exception, match="only a succeeded build deploys"):
        deployments.deploy(container, "never", row.id, "test")


def test_a_qdq_model_skips_calibration(
    container: Container, minilm_version: ModelVersion, minilm_sample: Path, tmp_path: Path
) -> None:
    int8, _ = build(container, minilm_version, "int8")
    repo = repository(container, minilm_version, int8, tmp_path / "repo")
    qdq = (repo / int8.triton_model_name / "1" / "model.onnx").read_bytes()
    version = models.register(
        container,
        models.Registration("minilm-qat", qdq, minilm_sample.read_bytes(), {}),
        actor="test",
    )
    row, stages = build(container, version, "int8")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert "calibrate" not in stages and "prepare-graph" not in stages
    assert row.report["calibration"] == {"skipped": "the model already carries Q/DQ scales"}


def test_a_registered_calibration_dataset_is_used(
    container: Container, minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    from shipway.examples import minilm

    calibration = minilm.write_sample(tmp_path / "calib.npz", rows=12, seed=7)
    version = models.register(
        container,
        models.Registration(
            "minilm-calib",
            minilm_onnx.read_bytes(),
            minilm_sample.read_bytes(),
            {},
            calibration.read_bytes(),
        ),
        actor="test",
    )
    assert version.tags["shipway.calibration_rows"] == "12"
    row, _ = build(container, version, "int8")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert row.report["calibration"]["rows"] == 12
    assert row.report["calibration"]["held_out_rows"] == 16
    assert "calibration dataset" in row.report["calibration"]["source"]


def test_bad_inputs_fail_clearly_and_leave_nothing(
    container: Container, minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    # A calibration dataset that does not fit the graph: refused at registration.
    sample = load_sample(minilm_sample.read_bytes())
    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong,
        input_ids=sample["input_ids"].astype(np.int32),
        attention_mask=sample["attention_mask"],
    )
    with pytest.raises(
        InvalidInput, match="calibration dataset: sample input 'input_ids' has dtype int32"
    ):
        models.register(
            container,
            models.Registration(
                "minilm-bad",
                minilm_onnx.read_bytes(),
                minilm_sample.read_bytes(),
                {},
                wrong.read_bytes(),
            ),
            actor="test",
        )
    assert models.list_versions(container, "minilm-bad") == []

    # A model the quantizer has nothing to do with: no weighted MatMul.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    tiny = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tiny_sample = tmp_path / "tiny.npz"
    np.savez(tiny_sample, x=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    version = models.register(
        container,
        models.Registration("tiny", tiny.SerializeToString(), tiny_sample.read_bytes(), {}),
        actor="test",
    )
    row, _ = build(container, version, "int8")
    assert row.status == BuildStatus.FAILED
    assert row.error and "nothing to quantize" in row.error and row.artifact_path is None

    # Too few rows to split into calibration and held-out, and no dataset.
    small = tmp_path / "small.npz"
    np.savez(small, x=np.ones((2, 4), np.float32))
    version = models.register(
        container,
        models.Registration("tiny2", tiny.SerializeToString(), small.read_bytes(), {}),
        actor="test",
    )
    row, _ = build(container, version, "int8")
    assert row.status == BuildStatus.FAILED and "needs at least 4" in (row.error or "")

    # Unknown recipe, target or option: refused before anything is queued.
    for recipe, target, options, message in [
        ("int4", "onnxruntime-cpu", {}, "unknown recipe 'int4'"),
        ("int8", "tpu", {}, "unknown target 'tpu'"),
        ("int8", "onnxruntime-cpu", {"calibration": "kl"}, "unknown calibration method"),
        ("int8", "onnxruntime-cpu", {"min_cosine": 2}, "min_cosine must be within"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            builds.create(container, "tiny", 1, recipe, target, "test", options)


def test_tensorrt_without_a_gpu_fails_at_once(
    container: Container, minilm_version: ModelVersion
) -> None:
    if tensorrt.detect_gpu() is not None:
        pytest.skip("this machine has a GPU: the TensorRT build test below runs instead")
    row, stages = build(container, minilm_version, "int8", "tensorrt")
    assert row.status == BuildStatus.FAILED
    assert row.error and "needs an NVIDIA GPU" in row.error
    assert stages == ["fetch-model"]  # nothing was calibrated or compiled


def test_tensorrt_int8_engine_where_tensorrt_and_a_gpu_exist(
    container: Container, minilm_version: ModelVersion, tmp_path: Path
) -> None:
    """The real TensorRT path. Runs only on a GPU machine with TensorRT; never in CI."""
    if tensorrt.detect_gpu() is None or shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU here")
    pytest.importorskip("tensorrt")
    row, stages = build(container, minilm_version, "int8", "tensorrt")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert "compile-tensorrt" in stages
    assert row.report["tensorrt"]["engine_cache"] in ("hit", "miss")
    repo = repository(container, minilm_version, row, tmp_path / "repo")
    assert (repo / row.triton_model_name / "1" / "model.plan").stat().st_size > 0
    assert json.loads(json.dumps(row.report))["accuracy"]["passed"]


def test_one_calibration_two_encodings(
    minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    """Ranges are calibrated once; the ONNX Runtime encoding (U8S8) and the TensorRT
    one (symmetric S8S8, on a graph of standard ONNX ops only) come from the same cache."""
    from onnx import numpy_helper

    from shipway.engines import quantize
    from shipway.engines.calibration import CalibrationMethod, split
    from shipway.registry.signature import load_model, read_signature

    signature = read_signature(load_model(minilm_onnx.read_bytes()))
    data = split(signature, load_sample(minilm_sample.read_bytes()), None)
    prepared = quantize.prepare(minilm_onnx, tmp_path / "prepared.onnx", fuse=False)
    assert {n.domain for n in onnx.load(str(prepared)).graph.node} == {""}
    cache = tmp_path / "ranges.json"
    options = quantize.QuantOptions(method=CalibrationMethod.MINMAX)
    quantize.calibrate(prepared, data.calibration, options, cache)
    ranges = cache.read_text()

    def zero_points(encoding: quantize.Encoding) -> list[np.ndarray]:
        path = quantize.static_qdq(
            prepared,
            tmp_path / f"{encoding}.onnx",
            None,  # no data: the ranges must come from the cache
            quantize.QuantOptions(method=CalibrationMethod.MINMAX, encoding=encoding),
            cache,
        )
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]

    symmetric = zero_points(quantize.Encoding.S8S8_SYMMETRIC)
    assert symmetric and all(z.dtype == np.int8 and not z.any() for z in symmetric)
    cpu = zero_points(quantize.Encoding.U8S8)
    assert cpu and all(z.dtype == np.uint8 for z in cpu) and any(z.any() for z in cpu)
    assert cache.read_text() == ranges  # neither encoding recalibrated


# INT8 beyond MiniLM (issue 12, item 6): every graph shape ONNX allows that has
# quantizable layers, through calibration, the gate and a real tritonserver.
SHAPES = {
    # name: (builder, the layers a build must find and quantize, class-score outputs)
    "gemm-classifier": (graphs.gemm_classifier, ["fc1", "fc2"], ["probs"]),
    "unnamed-mlp": (graphs.unnamed_mlp, ["MatMul_1", "MatMul_4"], []),
    "conv-net": (graphs.conv_net, ["conv1", "conv2", "fc"], []),
    "tied-weights": (graphs.tied_weights, ["mm1", "mm2", "g3"], []),
}


def register_graph(container: Container, name: str, model: bytes, sample: bytes) -> ModelVersion:
    return models.register(container, models.Registration(name, model, sample, {}), actor="test")


def infer_json(url: str, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
            for k, v in inputs.items()
        ]
    }
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return {
        o["name"]: np.array(o["data"], np.float32).reshape(o["shape"])
        for o in answer.json()["outputs"]
    }


def test_int8_recipes_quantize_every_graph_shape_and_triton_serves_them(
    container: Container, triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    from shipway.engines.graph import int8_weights

    served = tmp_path / "served"
    built: list[tuple[Build, Path, dict[str, np.ndarray]]] = []
    for shape, (builder, layers, class_scores) in SHAPES.items():
        model, sample = builder()
        version = register_graph(container, shape, model, sample)
        for recipe in ("int8", "int8-dynamic"):
            row, stages = build(container, version, recipe)
            assert row.status == BuildStatus.SUCCEEDED, (shape, recipe, row.error)
            report = row.report
            # Every quantizable layer found by name, and every one quantized.
            assert report["quantization"] == {"layers": layers, "int8_weights": len(layers)}
            assert report["selective"]["kept_fp32"] == []
            accuracy = report["accuracy"]
            assert accuracy["passed"] and accuracy["mean_cosine"] >= 0.99, (shape, recipe)
            assert accuracy["rule"]["class_scores"] == class_scores
            if class_scores:
                assert accuracy["top1_agreement"] >= 0.99
            assert ("calibrate" in stages) == (recipe == "int8")
            assert report["benchmark"]["candidate"]["batch"] == 8
            repo = repository(container, version, row, tmp_path / row.id)
            assert row.triton_model_name
            engine = repo / row.triton_model_name / "1" / "model.onnx"
            assert int8_weights(onnx.load(str(engine))) == len(layers)
            shutil.copytree(repo / row.triton_model_name, served / row.triton_model_name)
            rows = {k: v[:3] for k, v in load_sample(sample).items()}
            built.append((row, engine, rows))

    # One real tritonserver loads every build's repository and answers as ONNX
    # Runtime does on the candidate engine.
    process = TritonProcess(triton_dist, served, tmp_path / "triton.log")
    process.start()
    try:
        process.wait_ready(180)
        for row, engine, rows in built:
            assert row.triton_model_name and process.model_ready(row.triton_model_name)
            answer = infer_json(process.url, row.triton_model_name, rows)
            local = run(session(engine), rows)
            assert answer.keys() == local.keys()
            for name, value in local.items():
                np.testing.assert_allclose(answer[name], value, rtol=1e-4, atol=1e-5)
    finally:
        process.stop()


def test_a_classifier_whose_int8_decisions_flip_fails_the_gate_on_top1(
    container: Container,
) -> None:
    """Issue 11: cosine ~1 against FP32, top-1 agreement far below 0.99. The build
    fails, naming the metric and the output, and leaves nothing deployable."""
    model, sample = graphs.close_classes_classifier()
    version = register_graph(container, "close-classes", model, sample)
    row, stages = build(container, version, "int8")
    assert row.status == BuildStatus.FAILED
    assert row.error and row.error.startswith("accuracy gate failed")
    assert "output 'probs': top1 agreement" in row.error
    accuracy = row.report["accuracy"]
    assert accuracy["rule"]["class_scores"] == ["probs"]
    assert accuracy["mean_cosine"] >= 0.99  # cosine alone would have let it through
    assert accuracy["top1_agreement"] < 0.99
    assert [(f["output"], f["metric"]) for f in accuracy["failed"]] == [("probs", "top1")]
    # One layer: none can stay in FP32 (an INT8 build of a model all in FP32 is none).
    assert row.report["selective"]["kept_fp32"] == []
    assert "benchmark" not in stages and row.artifact_path is None

    # Lowering the bar is the user's choice, per build.
    lenient, _ = build(container, version, "int8", min_top1=0.0)
    assert lenient.status == BuildStatus.SUCCEEDED, lenient.error
    assert lenient.report["accuracy"]["min_top1"] == 0.0


def test_a_class_score_tag_gates_logits_and_an_unknown_tag_is_refused(
    container: Container,
) -> None:
    model, sample = graphs.close_classes_classifier()
    logits_only = onnx.load_from_string(model)
    # The same classifier serving logits (not probabilities): recognised by tag only.
    logits_only.graph.node.pop()
    logits_only.graph.output[0].name = "logits"
    tagged = models.register(
        container,
        models.Registration(
            "close-logits",
            logits_only.SerializeToString(),
            sample,
            {"shipway.output.logits": "class-scores"},
        ),
        actor="test",
    )
    row, _ = build(container, tagged, "int8")
    assert row.status == BuildStatus.FAILED
    assert row.report["accuracy"]["rule"]["class_scores"] == ["logits"]
    assert "output 'logits': top1 agreement" in (row.error or "")

    # a mistyped tag is refused when the version is registered, before any build
    with pytest.raises(InvalidInput, match=r"tag 'shipway\.output\.logit' names no output"):
        models.register(
            container,
            models.Registration(
                "close-typo", logits_only.SerializeToString(), sample, {"shipway.output.logit": "x"}
            ),
            actor="test",
        )


def test_a_fixed_batch_model_is_benchmarked_at_its_batch_size(container: Container) -> None:
    """Issue 12, item 5: a model fixed at batch 1 built int8-dynamic used to raise
    InvalidArgument in the benchmark at batch 8 and stay 'running' forever."""
    model, sample = graphs.fixed_batch_one()
    version = models.register(
        container,
        models.Registration("fixed-batch", model, sample, {}, calibration_bytes=sample),
        actor="test",
    )
    row, stages = build(container, version, "int8-dynamic")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    assert "benchmark" in stages
    bench = row.report["benchmark"]
    assert bench["candidate"]["batch"] == 1 and bench["fp32"]["batch"] == 1


def test_whatever_a_build_raises_it_ends_failed_with_the_reason(container: Container) -> None:
    """Not only Shipway's own errors: anything raised inside a build ends it, naming
    the stage, instead of leaving it 'running' (here: options stored by hand that do
    not parse)."""
    model, sample = graphs.unnamed_mlp()
    version = register_graph(container, "raises", model, sample)
    with container.db.session() as s:
        row = Build(
            model_version_id=version.id,
            recipe="int8",
            target="onnxruntime-cpu",
            options={"min_cosine": "high"},
        )
        s.add(row)
        s.flush()
        build_id = row.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    done = builds.get(container, build_id)
    assert done.status == BuildStatus.FAILED and done.stage == "failed"
    assert done.error and done.error.startswith("unexpected error at stage 'start': TypeError")


def test_builds_trim_by_the_registered_mask_unless_the_version_opts_out(
    container: Container, tmp_path: Path
) -> None:
    """The tiny encoder's mask is ``input_mask``: the tag names it, the gate pools by it
    and the packaged config trims by it; ``shipway.trim_padding=false`` packages it
    untrimmed. Static INT8 (fixed Q/DQ scales) answers trimmed as padded, so it trims;
    ``int8-dynamic`` does not (its scales span the padding): untrimmed, with the reason."""
    onnx_bytes = graphs.tiny_encoder("input_mask")
    rows = graphs.token_rows([3, 9, 14, 5, 11, 2, 16, 7] * 2, 16, seed=4)
    sample = graphs.npz(input_ids=rows["input_ids"], input_mask=rows["attention_mask"])
    configs, serving = {}, {}
    for name, recipe, tags in (
        ("encoder", "int8", {"shipway.mask_input": "input_mask"}),
        (
            "encoder-untrimmed",
            "int8",
            {"shipway.mask_input": "input_mask", "shipway.trim_padding": "false"},
        ),
        ("encoder-dynamic", "int8-dynamic", {"shipway.mask_input": "input_mask"}),
    ):
        version = models.register(
            container, models.Registration(name, onnx_bytes, sample, tags), actor="test"
        )
        row, _ = build(container, version, recipe, min_cosine=0.9)
        assert row.status == BuildStatus.SUCCEEDED, row.error
        assert row.report["accuracy"]["rule"]["mask_input"] == "input_mask"
        pooled = next(
            o for o in row.report["accuracy"]["outputs"] if o["name"] == "last_hidden_state"
        )
        assert pooled["kind"] == "pooled-embedding"  # mean-pooled by input_mask
        repo = repository(container, version, row, tmp_path / name)
        assert row.triton_model_name
        configs[name] = (repo / row.triton_model_name / "config.pbtxt").read_text()
        serving[name] = row.report["serving"]
    assert '\\"mask\\": \\"input_mask\\"' in configs["encoder"]
    assert "allow_ragged_batch" in configs["encoder"]
    assert serving["encoder"]["trim_padding"] is True
    for untrimmed in ("encoder-untrimmed", "encoder-dynamic"):
        assert 'key: "shipway_trim"' not in configs[untrimmed]
        assert "allow_ragged_batch" not in configs[untrimmed]
        assert serving[untrimmed]["trim_padding"] is False
    assert serving["encoder-untrimmed"]["reason"] == (
        "the version's tag shipway.trim_padding=false opts it out"
    )
    assert "DynamicQuantizeLinear" in serving["encoder-dynamic"]["reason"]
