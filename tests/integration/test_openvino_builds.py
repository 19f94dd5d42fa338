"""The openvino-cpu target, through the real build path (``BuildPipeline``, as a worker
runs it) and the real local tritonserver:

- small models built with ``onnx.helper`` (a Gemm classifier with class scores; a tiny
  encoder with int64 ``input_ids``/``attention_mask`` inputs and two outputs, a token
  output and a pooled one) built for every openvino-cpu recipe (fp32, int8 by NNCF,
  bf16 where the CPU has it, refused with the reason where it has not); each is gated
  on OpenVINO's own answers, benchmarked against the named ONNX Runtime baselines, says
  the precision OpenVINO compiled with, and is served by Triton's Python backend
  running OpenVINO, answering as OpenVINO does on that engine and close to FP32;
- MiniLM int8 on openvino-cpu passes the 0.99 gate;
- a model OpenVINO cannot read (``Det``, which ONNX Runtime runs) fails the build with
  OpenVINO's reason and leaves no artifact.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from shipway.builds import trim_check
from shipway.builds.pipeline import BuildPipeline
from shipway.builds.recipes import BuildOptions, parse
from shipway.container import Container
from shipway.engines import openvino
from shipway.engines.evaluate import run, session
from shipway.registry.signature import load_sample
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus, ModelVersion
from tests.support import graphs
from tests.support.triton_client import infer_int64

pytestmark = pytest.mark.integration

Arrays = dict[str, np.ndarray]
HAS_BF16 = "BF16" in openvino.capabilities()


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    home = tmp_path_factory.mktemp("openvino")
    # Short benchmark rounds: the numbers are reported, never asserted on here.
    container = Container(Settings(home=home, build_bench_seconds=0.2, build_bench_rounds=1))
    container.registry.initialize()
    yield container
    container.close()


def build(container: Container, version: ModelVersion, recipe: str) -> tuple[Build, list[str]]:
    """A build row created as the API does (same validation), run in this process."""
    parsed_recipe, parsed_target = parse(recipe, "openvino-cpu")
    with container.db.session() as s:
        row = Build(
            model_version_id=version.id,
            recipe=parsed_recipe,
            target=parsed_target,
            options=BuildOptions().to_dict(),
        )
        s.add(row)
        s.flush()
        build_id = row.id
    stages: list[str] = []
    BuildPipeline(container.db, container.registry, container.settings).run(
        build_id, lambda stage, _: stages.append(stage)
    )
    return builds.get(container, build_id), stages


def register(container: Container, name: str, model: bytes, sample: bytes) -> ModelVersion:
    return models.register(container, models.Registration(name, model, sample, {}), actor="test")


def infer_float(url: str, model: str, request: Arrays) -> Arrays:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, value in request.items():
            tensor = triton_http.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    finally:
        client.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's (or token's) cosine."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def encoder_sample() -> bytes:
    """32 rows of 3..16 real ids padded to 16: 16 calibrate, 16 are held out."""
    lengths = np.random.default_rng(3).integers(3, 17, size=32).tolist()
    return graphs.npz(**graphs.token_rows(lengths, 16, seed=1))


RECIPES = ("fp32", "int8", "bf16")


def test_openvino_recipes_build_gate_and_serve(
    container: Container, triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    shapes = {
        "ov-classifier": graphs.gemm_classifier(),
        "ov-encoder": (graphs.tiny_encoder(hidden=32), encoder_sample()),
    }
    served = tmp_path / "served"
    built: list[tuple[Build, Path, str, bytes, Arrays]] = []
    for name, (model, sample) in shapes.items():
        version = register(container, name, model, sample)
        for recipe in RECIPES:
            row, stages = build(container, version, recipe)
            if recipe == "bf16" and not HAS_BF16:
                assert row.status == BuildStatus.FAILED and row.artifact_path is None
                assert "needs a CPU with bfloat16 support" in (row.error or ""), row.error
                continue
            assert row.status == BuildStatus.SUCCEEDED, (name, recipe, row.error)
            report = row.report
            expected = "f32" if recipe == "fp32" or not HAS_BF16 else "bf16"
            # The precision OpenVINO compiled with, read back from the compiled model.
            assert report["openvino"]["inference_precision_requested"] == expected
            assert report["openvino"]["inference_precision"] == expected
            assert report["accuracy"]["passed"], (name, recipe, report["accuracy"])
            assert report["accuracy"]["mean_cosine"] >= 0.99
            assert ("quantize-nncf" in stages) == (recipe == "int8")
            if recipe == "int8":
                assert report["quantization"]["fake_quantize_nodes"] > 0
            bench = report["benchmark"]
            assert bench["candidate_runtime"]["inference_precision"] == expected
            assert set(bench["baselines"]) == {"raw_fp32", "fused_fp32"}
            assert bench["speedup_vs_raw_fp32"]["padded"] > 0
            assert bench["speedup_vs_fused_fp32"]["padded"] > 0
            if name == "ov-encoder":  # a mask: measured at real lengths too
                assert bench["speedup_vs_fused_fp32"]["real_lengths"] > 0
            repo = container.registry.download(
                version.mlflow_run_id, row.artifact_path or "", tmp_path / row.id
            )
            assert row.triton_model_name
            folder = repo / row.triton_model_name
            assert {p.name for p in (folder / "1").iterdir()} >= {
                "model.xml",
                "model.bin",
                "model.py",
            }
            config = (folder / "config.pbtxt").read_text()
            assert 'backend: "python"' in config and "shipway_openvino" in config
            assert f'\\"INFERENCE_PRECISION_HINT\\": \\"{expected}\\"' in config
            shutil.copytree(folder, served / row.triton_model_name)
            rows = {k: v[:4] for k, v in load_sample(sample).items()}
            built.append((row, folder / "1" / "model.xml", expected, model, rows))
            if name == "ov-encoder" and recipe == "fp32":
                # OpenVINO in f32 answers the sample trimmed as padded: checked, trimmed
                serving = report["serving"]
                assert serving["trim_padding"], serving
                assert "shipway_trim" in config and "shipway_padding.py" in {
                    p.name for p in (folder / "1").iterdir()
                }

    process = TritonProcess(triton_dist, served, tmp_path / "triton.log")
    process.start()
    try:
        process.wait_ready(240)
        for row, xml, precision, model, rows in built:
            assert row.triton_model_name and process.model_ready(row.triton_model_name)
            if "attention_mask" in rows:
                answer = infer_int64(process.url, row.triton_model_name, rows)
            else:
                answer = infer_float(process.url, row.triton_model_name, rows)
            fp32 = run(session(model), rows)  # the registered model, ONNX Runtime
            engine = openvino.Session(xml, precision, 0, list(fp32))
            local = dict(zip(fp32, engine.run(None, rows), strict=True))
            assert answer.keys() == local.keys() == fp32.keys()
            tolerance = trim_check.Tolerance(openvino.numpy_precision(precision))
            mask = rows.get("attention_mask")
            for output, value in local.items():
                got = answer[output]
                if output == "last_hidden_state" and mask is not None:
                    # OpenVINO's answer within the mask; trimmed, zeros past it
                    keep = mask.astype(bool)
                    if row.report["serving"]["trim_padding"]:
                        assert np.all(got[~keep] == 0)
                    got, value = got[keep], value[keep]
                np.testing.assert_allclose(
                    got, value, rtol=trim_check.RTOL, atol=tolerance.atol(value)
                )
                reference = fp32[output]
                if output == "last_hidden_state" and mask is not None:
                    reference = reference[mask.astype(bool)]
                # close to FP32 as the gate asks: mean 0.99, every row 0.98 (tokens: mean)
                found = cosines(got, reference)
                assert found.mean() >= 0.99, (row.recipe, output, found)
                if output != "last_hidden_state":
                    assert found.min() >= 0.98, (row.recipe, output, found)
            if "attention_mask" in rows:
                # A request the model cannot run once it has answered (inputs that
                # disagree on the sequence length): the client's error, 400, with why.
                bad = {
                    "input_ids": rows["input_ids"][:1, :8],
                    "attention_mask": rows["attention_mask"][:1],
                }
                body = {
                    "inputs": [
                        {
                            "name": k,
                            "shape": list(v.shape),
                            "datatype": "INT64",
                            "data": v.ravel().tolist(),
                        }
                        for k, v in bad.items()
                    ]
                }
                refused = httpx.post(
                    f"{process.url}/v2/models/{row.triton_model_name}/infer", json=body, timeout=30
                )
                assert refused.status_code == 400, (row.recipe, refused.text)
                assert refused.json()["error"], refused.text
    finally:
        process.stop()


def test_minilm_int8_on_openvino_passes_the_gate(
    container: Container, minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    """MiniLM int8 by NNCF from a registered 64-row calibration dataset, gated at 0.99 on
    OpenVINO's own answers, with both baselines measured at the padded and the real
    lengths (numbers reported, not asserted). The reference sample's 8 even rows alone
    are too few for NNCF's ranges here (pooled mean cosine 0.987, measured)."""
    from shipway.examples import minilm

    calibration = minilm.write_sample(tmp_path / "calibration.npz", rows=64, seed=7)
    version = models.register(
        container,
        models.Registration(
            "minilm-ov",
            minilm_onnx.read_bytes(),
            minilm_sample.read_bytes(),
            {},
            calibration.read_bytes(),
        ),
        actor="test",
    )
    row, _ = build(container, version, "int8")
    assert row.status == BuildStatus.SUCCEEDED, row.error
    report = row.report
    assert report["calibration"]["rows"] == 64
    assert report["quantization"]["calibration_rows"] == 64
    assert report["accuracy"]["passed"] and report["accuracy"]["mean_cosine"] >= 0.99
    assert report["quantization"]["fake_quantize_nodes"] > 0
    bench = report["benchmark"]
    assert bench["baselines"]["fused_fp32"]["fused"], bench["baselines"]["fused_fp32"]
    assert set(bench["speedup_vs_fused_fp32"]) == {"padded", "real_lengths"}
    assert all(v is not None and v > 0 for v in bench["speedup_vs_fused_fp32"].values())
    assert report["size_mb"]["candidate"] < report["size_mb"]["fp32"]


def test_a_model_openvino_cannot_read_fails_clearly_and_leaves_nothing(
    container: Container,
) -> None:
    """``Det`` runs in ONNX Runtime (so registration accepts the model) but OpenVINO's
    ONNX frontend has no conversion for it: every openvino-cpu recipe fails with
    OpenVINO's reason, and nothing is packaged."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"], name="det")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rows = np.random.default_rng(0).normal(size=(8, 2, 2)).astype(np.float32)
    version = register(container, "ov-det", model.SerializeToString(), graphs.npz(x=rows))
    for recipe in ("fp32", "int8"):
        row, _ = build(container, version, recipe)
        assert row.status == BuildStatus.FAILED, recipe
        assert row.error and "OpenVINO cannot read model.onnx" in row.error, row.error
        assert "Det" in row.error
        assert row.artifact_path is None and row.triton_model_name is None
        assert not container.registry.has_artifact(version.mlflow_run_id, f"builds/{row.id}")


WIRE = {"float32": "FP32", "int64": "INT64"}


def test_every_signature_shape_is_served_by_openvino_as_openvino_answers(
    triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    """Each kind of signature (``tests.support.signatures``: rank-0 inputs and outputs,
    rank-1 tensors, a fixed first axis, mixed ranks, several inputs and outputs, int64
    inputs) as an f32 IR in the local Python backend: a request in the model's own
    shape (rank 0 travels as ``[1]``) is answered as OpenVINO answers it on the IR, and
    as ONNX Runtime on the ONNX model within float tolerance."""
    import onnxruntime as ort
    import tritonclient.http as triton_http

    from shipway.builds.packaging import package_repository
    from shipway.builds.recipes import Target
    from shipway.registry.signature import load_model, read_signature
    from tests.support.signatures import CASES

    repo = tmp_path / "repo"
    signatures = {}
    for name, make in CASES.items():
        made = make()
        (tmp_path / f"{name}.onnx").write_bytes(made.onnx)
        xml = openvino.save(
            openvino.read_onnx(tmp_path / f"{name}.onnx"), tmp_path / name / "model.xml"
        )
        signatures[name] = read_signature(load_model(made.onnx))
        package_repository(
            repo,
            name,
            xml,
            signatures[name],
            Target.OPENVINO_CPU,
            sample=made.sample(16),
            openvino_precision="f32",
        )
    process = TritonProcess(triton_dist, repo, tmp_path / "triton.log")
    process.start()
    try:
        process.wait_ready(240)  # every model loaded: every warm-up ran in OpenVINO
        client = triton_http.InferenceServerClient(process.url.removeprefix("http://"))
        for name, make in CASES.items():
            made = make()
            names = [o.name for o in signatures[name].outputs]
            tensors = []
            for key, value in made.request.items():
                wire = value.reshape(value.shape or (1,))
                tensor = triton_http.InferInput(key, list(wire.shape), WIRE[value.dtype.name])
                tensor.set_data_from_numpy(wire)
                tensors.append(tensor)
            result = client.infer(name, tensors)
            engine = openvino.Session(tmp_path / name / "model.xml", "f32", 0, names)
            local = dict(zip(names, engine.run(None, made.request), strict=True))
            onnx_answer = ort.InferenceSession(made.onnx).run(names, made.request)
            for output, want, reference in zip(names, local.values(), onnx_answer, strict=True):
                got = result.as_numpy(output)
                assert got.shape == (want.shape or (1,)), (name, output)
                np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-6)
                np.testing.assert_allclose(want, reference, rtol=1e-5, atol=1e-6)
        client.close()
    finally:
        process.stop()
