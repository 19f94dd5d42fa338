"""Trimming is decided per build, on a real tritonserver: real builds (``BuildPipeline``,
as a worker runs them) of small encoders built with ``onnx.helper``
(``tests/support/graphs.tiny_encoder``: ``input_ids`` and ``attention_mask``, MatMuls on
constant weights, a token output ``last_hidden_state`` and a mask-pooled ``pooled``).

- An FP32 build trims: its engine answers the reference sample trimmed as padded, the
  build report says so, and Triton answers eight mixed-length requests sent together
  (stacked into one trimmed execution: the test gives the built config's batcher a
  long queue delay so they meet) as ONNX Runtime does on each request as sent (pooled
  within 1e-4, token states where the mask is 1).
- An ``int8-dynamic`` build does not: ``DynamicQuantizeLinear`` takes its scales over
  the whole tensor, padding included, so trimming would move the answers the gate
  judged; the check finds it, the report and the config say why, and Triton answers
  each request exactly as ONNX Runtime does on it as sent (the gated answer), not as
  the trimmed run would.
- FP16 engines trim although fp16 rounding moves their answers past 1e-4: the
  tolerance follows the engine's precision. ``fp16`` builds exist for the
  ``tensorrt`` target only, whose backend never trims, so this is checked at the
  ``packaging.trim_decision`` level on ONNX engines converted by the build's own
  ``quantize.fp16`` (the tiny encoder, and MiniLM-L3, whose FP16 rounding noise is
  past 1e-4), next to MiniLM's FP32 (trims) and ``int8-dynamic`` (refused) engines.
- ``SHIPWAY_SERVING_TRIM_PADDING=false`` (the kill switch) and a model without a mask
  input are packaged untrimmed, with the reason.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from shipway.builds import trim_check
from shipway.builds.packaging import trim_decision
from shipway.builds.pipeline import BuildPipeline
from shipway.builds.recipes import BuildOptions, parse
from shipway.builds.triton_config import ServingOptions
from shipway.builds.triton_models import padding
from shipway.container import Container
from shipway.engines import quantize
from shipway.examples import minilm
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus, ModelVersion
from tests.support.graphs import tiny_encoder, token_rows
from tests.support.triton_client import executions, infer_int64, infer_together

pytestmark = pytest.mark.integration

Arrays = dict[str, np.ndarray]
# (real length, sent length): padded a little, a lot, past the sample's length, unpadded
MIXED = [(3, 5), (16, 16), (17, 40), (9, 128), (33, 64), (2, 2), (20, 24), (7, 100)]


def npz(arrays: Arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def build(container: Container, name: str, recipe: str) -> tuple[Build, ModelVersion]:
    """A build of the latest version of ``name``, run in this process as a worker runs it."""
    parsed_recipe, parsed_target = parse(recipe, "onnxruntime-cpu")
    version = max(models.list_versions(container, name), key=lambda v: v.version)
    with container.db.session() as s:
        row = Build(
            model_version_id=version.id,
            recipe=parsed_recipe,
            target=parsed_target,
            options=BuildOptions.from_dict({}).to_dict(),
        )
        s.add(row)
        s.flush()
        build_id = row.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    done = builds.get(container, build_id)
    assert done.status == BuildStatus.SUCCEEDED, done.error
    return done, version


@dataclass
class Built:
    row: Build
    folder: Path  # the packaged model folder, as Triton loads it
    onnx: Path  # its engine

    @property
    def config(self) -> str:
        return (self.folder / "config.pbtxt").read_text()

    @property
    def decision(self) -> dict[str, Any]:
        """The config's ``shipway_trim_decision``, parsed."""
        found = re.search(
            r'key: "shipway_trim_decision" value: \{ string_value: (".*") \}', self.config
        )
        assert found, self.config
        return json.loads(json.loads(found.group(1)))

    def direct(self, request: Arrays) -> Arrays:
        """ONNX Runtime on the request as sent: the untrimmed, gated answer."""
        session = ort.InferenceSession(str(self.onnx), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, request), strict=True))


@dataclass
class Served:
    url: str
    built: dict[str, Built]

    def _model(self, key: str) -> str:
        model = self.built[key].row.triton_model_name
        assert model
        return model

    def infer(self, key: str, request: Arrays) -> Arrays:
        return infer_int64(self.url, self._model(key), request)

    def together(self, key: str, requests: list[Arrays]) -> list[Arrays]:
        return infer_together(self.url, self._model(key), requests)

    def executions(self, key: str) -> tuple[int, int]:
        """(inferences, executions) Triton counted for the build's model so far."""
        return executions(self.url, self._model(key))


def register(container: Container, name: str, onnx_bytes: bytes, sample: Arrays) -> None:
    models.register(container, models.Registration(name, onnx_bytes, npz(sample), {}), actor="test")


@pytest.fixture(scope="module")
def served(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Four builds, from two stores (one with the kill switch), in one tritonserver."""
    home = tmp_path_factory.mktemp("trim-decision")
    sample = token_rows([3, 7, 12, 20, 5, 9, 16, 2], 24, seed=1)  # padded to 24
    no_mask = token_rows([3, 7, 12, 20, 5, 9, 16, 2], 24, seed=1, mask=False)
    repo = home / "repo"
    built: dict[str, Built] = {}
    for store, settings in (
        ("on", Settings(home=home / "on", build_bench_seconds=0.2, build_bench_rounds=1)),
        (
            "off",
            Settings(
                home=home / "off",
                build_bench_seconds=0.2,
                build_bench_rounds=1,
                serving_trim_padding=False,
            ),
        ),
    ):
        container = Container(settings)
        try:
            container.registry.initialize()
            register(container, "encoder", tiny_encoder(), sample)
            plan = [("fp32", "encoder", "fp32")] if store == "off" else []
            if store == "on":
                register(container, "no-mask", tiny_encoder(None), no_mask)
                plan = [
                    ("fp32", "encoder", "fp32"),
                    ("int8-dynamic", "encoder", "int8-dynamic"),
                    ("no-mask", "no-mask", "fp32"),
                ]
            for key, model, recipe in plan:
                row, version = build(container, model, recipe)
                assert row.artifact_path and row.triton_model_name
                fetched = container.registry.download(
                    version.mlflow_run_id, row.artifact_path, home / "fetched" / row.id
                )
                folder = repo / row.triton_model_name
                shutil.copytree(fetched / row.triton_model_name, folder)
                if key == "fp32" and store == "on":  # let eight requests meet in one batch
                    config = folder / "config.pbtxt"
                    text, count = re.subn(
                        r"preferred_batch_size: \[[^\]]*\] max_queue_delay_microseconds: \d+",
                        "preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 5000000",
                        config.read_text(),
                    )
                    assert count == 1, text
                    config.write_text(text)
                built[f"{key}-{store}" if store == "off" else key] = Built(
                    row, folder, folder / "1" / "model.onnx"
                )
        finally:
            container.close()
    process = TritonProcess(triton_dist, repo, home / "triton.log")
    process.start()
    try:
        process.wait_ready(180)
        yield Served(process.url, built)
    finally:
        process.stop()


def requests_of(shapes: list[tuple[int, int]], seed: int = 0, mask: bool = True) -> list[Arrays]:
    return [
        token_rows([real], sent, seed=seed + i, mask=mask) for i, (real, sent) in enumerate(shapes)
    ]


def trimmed_run(built: Built, request: Arrays) -> Arrays:
    """ONNX Runtime on the request cut to its longest real row (what trimming would run)."""
    longest = int(padding.real_lengths(request["attention_mask"]).max())
    return built.direct({name: value[:, :longest] for name, value in request.items()})


def test_an_fp32_build_trims_and_answers_as_padded(served: Served) -> None:
    built = served.built["fp32"]
    serving = built.row.report["serving"]
    assert serving["trim_padding"] is True
    assert "trimmed as padded" in serving["reason"]
    check = serving["check"]
    assert check["rows"] == 8 and check["runs"] > 0 and check["differs"] == []
    assert check["sent_lengths"] == [24, 32]  # the sample's length and the next bucket
    assert max(check["max_abs_diff"].values()) <= 1e-4
    assert built.decision == {"trim_padding": True, "reason": serving["reason"]}
    assert 'key: "shipway_trim"' in built.config and "allow_ragged_batch" in built.config
    assert (built.folder / "1" / "shipway_padding.py").exists()
    requests = requests_of(MIXED)
    before = served.executions("fp32")
    answers = served.together("fp32", requests)
    inferences, executions = np.subtract(served.executions("fp32"), before)
    assert (inferences, executions) == (8, 1)  # eight lengths stacked, trimmed, one run
    for request, got in zip(requests, answers, strict=True):
        expected = built.direct(request)
        real = request["attention_mask"].astype(bool)
        assert got["last_hidden_state"].shape == expected["last_hidden_state"].shape
        np.testing.assert_allclose(got["pooled"], expected["pooled"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            got["last_hidden_state"][real],
            expected["last_hidden_state"][real],
            rtol=1e-4,
            atol=1e-4,
        )
        assert not got["last_hidden_state"][~real].any()  # trimmed: zeros past the mask


def test_an_int8_dynamic_build_is_served_untrimmed_and_says_why(served: Served) -> None:
    built = served.built["int8-dynamic"]
    report = built.row.report
    assert report["accuracy"]["passed"]
    assert report["quantization"]["int8_weights"] > 0
    serving = report["serving"]
    assert serving["trim_padding"] is False
    assert "DynamicQuantizeLinear" in serving["reason"]
    # the reason names the run-time-scale operators the engine holds, and only those
    graph = onnx.load(str(built.onnx)).graph
    held = sorted(
        {n.op_type for n in graph.node}
        & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention"}
    )
    assert f"quantizes activations at run time ({', '.join(held)})" in serving["reason"]
    assert re.search(r"'pooled' by up to \d\.\de-0\d", serving["reason"])
    check = serving["check"]
    assert "pooled" in check["differs"] and check["max_abs_diff"]["pooled"] > 1e-4
    assert built.decision == {"trim_padding": False, "reason": serving["reason"]}
    assert 'key: "shipway_trim"' not in built.config and "allow_ragged_batch" not in built.config
    assert not (built.folder / "1" / "shipway_padding.py").exists()
    moved = 0.0
    # Untrimmed, the Python backend runs every request alone (it is the official
    # image's onnxruntime backend that stacks equal shapes, and a dynamic scale spans
    # batch-mates): each served answer is ONNX Runtime's on that request as sent.
    for request in requests_of(MIXED, seed=40):
        got = served.infer("int8-dynamic", request)
        expected = built.direct(request)
        for name, value in expected.items():  # padding positions' states included
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4)
        if request["attention_mask"].all():
            continue
        trimmed = trimmed_run(built, request)["pooled"]
        moved = max(moved, float(np.abs(trimmed - expected["pooled"]).max()))
    assert moved > 1e-4  # trimmed, these answers would have moved: the check mattered


def test_the_kill_switch_packages_untrimmed(served: Served) -> None:
    built = served.built["fp32-off"]
    serving = built.row.report["serving"]
    assert serving == {
        "trim_padding": False,
        "reason": "SHIPWAY_SERVING_TRIM_PADDING=false: no build trims (the kill switch)",
    }
    assert built.decision == serving
    assert 'key: "shipway_trim"' not in built.config
    for request in requests_of(MIXED[:4], seed=60):
        got = served.infer("fp32-off", request)
        expected = built.direct(request)
        padded = ~request["attention_mask"].astype(bool)
        if padded.any():  # untrimmed: padding positions answered with states of their own
            assert got["last_hidden_state"][padded].any()
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6)


def test_a_model_without_a_mask_input_is_untouched(served: Served) -> None:
    built = served.built["no-mask"]
    serving = built.row.report["serving"]
    assert serving["trim_padding"] is False
    assert serving["reason"] == "no mask input (the model has no input 'attention_mask')"
    assert 'key: "shipway_trim"' not in built.config
    for request in requests_of([(4, 50), (9, 128)], seed=80, mask=False):
        got = served.infer("no-mask", request)
        expected = built.direct(request)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6)


def test_fp16_engines_trim_despite_rounding_noise_and_int8_dynamic_still_does_not(
    tmp_path: Path,
) -> None:
    """At the ``trim_decision`` level (``fp16`` builds target TensorRT only): the
    tolerance is ``ULPS`` fp16 ulps of each output's magnitude for an FP16 engine, and
    the 1e-4 floor for FP32 and ``int8-dynamic`` engines."""
    tiny = tmp_path / "tiny.onnx"
    tiny.write_bytes(tiny_encoder())
    quantize.fp16(tiny, tmp_path / "tiny16.onnx")
    decided = trim_decision(
        tmp_path / "tiny16.onnx",
        read_signature(load_model(tiny.read_bytes())),
        "python",
        ServingOptions(),
        token_rows([3, 7, 12, 20, 5, 9, 16, 2], 24, seed=1),
        "attention_mask",
    )
    assert decided.trim, decided.reason
    assert decided.check is not None
    assert decided.check.tolerance.precision == "float16"
    assert "4 float16 ulps of the output's largest magnitude" in decided.reason

    # MiniLM-L3 on its reference sample (the example's: 64 rows padded to 32)
    source = minilm.onnx_path()
    signature = read_signature(load_model(source.read_bytes()))
    sample = minilm.make_inputs(64, 32)
    quantize.fp16(source, tmp_path / "minilm16.onnx")
    quantize.dynamic(
        quantize.prepare(source, tmp_path / "prepared.onnx", fuse=True),
        tmp_path / "minilm-dynamic.onnx",
        (),
        None,
    )

    def decide(engine: Path, precision: str | None = None) -> dict[str, Any]:
        made = trim_decision(
            engine, signature, "python", ServingOptions(), sample, "attention_mask", None,
            precision,
        )  # fmt: skip
        return made.to_dict()

    fp32 = decide(source)
    assert fp32["trim_padding"] is True, fp32["reason"]
    assert max(fp32["check"]["max_abs_diff"].values()) < 1e-6
    assert fp32["check"]["stacked_rows"] > 0 and fp32["check"]["rows"] == trim_check.MAX_ROWS

    fp16 = decide(tmp_path / "minilm16.onnx")
    assert fp16["trim_padding"] is True, fp16["reason"]
    assert fp16["check"]["tolerance"]["precision"] == "float16"
    pooled = fp16["check"]["max_abs_diff"][minilm.SENTENCE_EMBEDDING]
    assert pooled > trim_check.ATOL  # past the FP32 bound: fp16 rounding, not padding
    # held to the FP32 bound, the same engine would have been refused
    strict = decide(tmp_path / "minilm16.onnx", "float32")
    assert strict["trim_padding"] is False
    assert minilm.SENTENCE_EMBEDDING in strict["check"]["differs"]

    dynamic = decide(tmp_path / "minilm-dynamic.onnx")
    assert dynamic["trim_padding"] is False
    assert dynamic["check"]["tolerance"]["precision"] == "float32"
    assert dynamic["check"]["max_abs_diff"][minilm.SENTENCE_EMBEDDING] > 1e-2
    assert "DynamicQuantizeLinear" in dynamic["reason"]
