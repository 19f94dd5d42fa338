"""Trimming for the official image's backends (an ensemble around the engine), on a real
tritonserver.

Models are packaged as a build for the official image packages them
(``package_repository(..., onnx_backend="onnxruntime")``): the ensemble, its numpy
steps (``sequence_step.py``) and the engine. The one stand-in: the local Triton has no
``onnxruntime`` backend, so each engine step's config is switched to the Python backend
running the same ONNX file untrimmed (``onnxruntime_python.py``, which answers each
request as ONNX Runtime does on it). Everything else — the ensemble's wiring, the
steps, the engine's dynamic batcher — is what the official image loads.

Each answer is checked against ONNX Runtime run directly on the request as sent
(padding and all): pooled outputs equal within float tolerance, token outputs equal
where the mask is 1 and zero where it is 0, shapes as sent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from shipway.builds import packaging
from shipway.builds.ensemble import ENGINE_SUFFIX, RESTORE_SUFFIX, TRIM_SUFFIX
from shipway.builds.recipes import Target
from shipway.builds.triton_config import OPENVINO_PARAMETER, ServingOptions, openvino_parameters
from shipway.engines import openvino
from shipway.examples import minilm
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from tests.support.graphs import tiny_encoder, token_rows
from tests.support.triton_client import executions, infer_int64, infer_together

pytestmark = pytest.mark.integration

Arrays = dict[str, np.ndarray]
# the engine waits up to 5 s for 8 requests, so requests sent together share a run
TOGETHER = ServingOptions(max_queue_delay_us=5_000_000, preferred_batch_sizes=(8,))
# (real length, sent length) across every bucket, padded, unpadded, past the last one
MIXED = [(3, 5), (16, 16), (17, 40), (9, 128), (33, 64), (60, 100), (140, 150), (2, 2)]


def pooled_only() -> bytes:
    """The tiny encoder without its token output: an ensemble with no restore step."""
    model = onnx.load_from_string(tiny_encoder())
    kept = [o for o in model.graph.output if o.name != "last_hidden_state"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


@dataclass
class Served:
    url: str
    repo: Path
    onnx: dict[str, bytes]

    def direct(self, model: str, request: Arrays) -> Arrays:
        session = ort.InferenceSession(self.onnx[model])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, request), strict=True))

    def config(self, model: str) -> dict:
        return httpx.get(f"{self.url}/v2/models/{model}/config", trust_env=False).json()


def _engine_stand_in(folder: Path) -> None:
    """The engine step on the Python backend (the local Triton's only one), untrimmed:
    ONNX Runtime for an ``onnxruntime`` engine, OpenVINO for an ``openvino`` one (with
    the precision the official backend was configured for)."""
    config = folder / "config.pbtxt"
    text = config.read_text()
    if 'backend: "openvino"' in text:
        lines = [x for x in text.splitlines() if "PERFORMANCE_HINT" not in x]
        python = openvino_parameters("python", "bf16")[OPENVINO_PARAMETER]
        lines.append(
            f'parameters {{ key: "{OPENVINO_PARAMETER}" '
            f"value: {{ string_value: {json.dumps(python)} }} }}"
        )
        config.write_text("\n".join(lines).replace('backend: "openvino"', 'backend: "python"'))
        shutil.copyfile(packaging._OPENVINO_MODEL, folder / "1" / "model.py")
        shutil.copyfile(packaging._SERVED, folder / "1" / packaging.SERVED_FILE)
        return
    assert 'backend: "onnxruntime"' in text
    config.write_text(text.replace('backend: "onnxruntime"', 'backend: "python"'))
    shutil.copyfile(packaging._PYTHON_MODEL, folder / "1" / "model.py")
    shutil.copyfile(packaging._SERVED, folder / "1" / packaging.SERVED_FILE)


def _package_openvino(repo: Path, root: Path, name: str, onnx_bytes: bytes) -> None:
    """An openvino-cpu bf16 build of ``onnx_bytes`` for Triton's OpenVINO backend, its
    trimming checked by OpenVINO in bf16, as the build pipeline does it (an f32 one is
    served untrimmed there: that backend cannot be told to compute f32)."""
    (root / f"{name}.onnx").write_bytes(onnx_bytes)
    xml = openvino.save(openvino.read_onnx(root / f"{name}.onnx"), root / name / "model.xml")
    signature = read_signature(load_model(onnx_bytes))
    sample = {spec.name: np.ones((2, 40), np.int64) for spec in signature.inputs}
    names = [o.name for o in signature.outputs]
    decision = packaging.trim_decision(
        xml, signature, "openvino", TOGETHER, sample, "attention_mask",
        precision="bfloat16", open_engine=partial(openvino.Session, xml, "bf16", 1, names),
    )  # fmt: skip
    assert decision.trim, decision.reason
    packaging.package_repository(
        repo, name, xml, signature, Target.OPENVINO_CPU, TOGETHER, onnx_backend="onnxruntime",
        sample=sample, decision=decision, openvino_precision="bf16",
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ensemble")
    repo = root / "repo"
    models = {
        "encoder": (tiny_encoder(), TOGETHER),
        "pooled": (pooled_only(), ServingOptions()),
        "no-mask": (tiny_encoder(None), ServingOptions()),
        "150-positions": (tiny_encoder(max_len=150), ServingOptions()),
        "100-positions": (tiny_encoder(max_len=100), ServingOptions()),
        "minilm": (minilm.onnx_path().read_bytes(), TOGETHER),
    }
    for name, (onnx_bytes, options) in models.items():
        (root / f"{name}.onnx").write_bytes(onnx_bytes)
        signature = read_signature(load_model(onnx_bytes))
        sample = {spec.name: np.ones((2, 40), np.int64) for spec in signature.inputs}
        packaging.package_repository(
            repo, name, root / f"{name}.onnx", signature, Target.ONNXRUNTIME_CPU, options,
            onnx_backend="onnxruntime", sample=sample,
        )  # fmt: skip
        engine = repo / f"{name}{ENGINE_SUFFIX}"
        _engine_stand_in(engine if engine.exists() else repo / name)
    _package_openvino(repo, root, "openvino", tiny_encoder())
    _engine_stand_in(repo / f"openvino{ENGINE_SUFFIX}")
    models["openvino"] = (tiny_encoder(), TOGETHER)  # answers compared with ONNX Runtime's
    process = TritonProcess(triton_dist, repo, root / "triton.log")
    process.start()
    try:
        process.wait_ready(180)
        yield Served(process.url, repo, {name: made[0] for name, made in models.items()})
    finally:
        process.stop()


def assert_same_answer(got: Arrays, expected: Arrays, mask: np.ndarray, atol: float) -> None:
    """Shapes as sent; non-token outputs equal; token outputs equal where the mask is 1
    and zero where it is 0."""
    real = mask.astype(bool)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        if value.ndim >= 2 and value.shape[:2] == mask.shape and name != "pooled":
            np.testing.assert_allclose(got[name][real], value[real], rtol=1e-4, atol=atol)
            assert not got[name][~real].any()
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=atol)


def test_the_repository_is_an_ensemble_under_the_builds_name(served: Served) -> None:
    config = served.config("encoder")
    assert config["platform"] == "ensemble"
    steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
    assert steps == [f"encoder{TRIM_SUFFIX}", f"encoder{ENGINE_SUFFIX}", f"encoder{RESTORE_SUFFIX}"]
    assert '"trim_padding": true' in config["parameters"]["shipway_trim_decision"]["string_value"]
    engine = served.config(f"encoder{ENGINE_SUFFIX}")
    assert not any(i.get("allow_ragged_batch") for i in engine["input"])  # equal shapes only
    assert "shipway_trim" not in engine.get("parameters", {})
    assert served.config("no-mask").get("platform") != "ensemble"  # nothing to trim by
    assert not (served.repo / f"no-mask{ENGINE_SUFFIX}").exists()
    pooled = [s["model_name"] for s in served.config("pooled")["ensemble_scheduling"]["step"]]
    assert pooled == [f"pooled{TRIM_SUFFIX}", f"pooled{ENGINE_SUFFIX}"]  # no token output


@pytest.mark.parametrize(("model", "atol"), [("encoder", 1e-6), ("openvino", 5e-2)])
def test_mixed_lengths_answer_as_untrimmed_in_the_requests_shapes(
    served: Served, model: str, atol: float
) -> None:
    """``openvino``: Triton's OpenVINO backend's repository (a bf16 build), against ONNX
    Runtime's FP32 on the ONNX model it was made from, within bf16's rounding."""
    requests = [token_rows([real], sent, seed=i) for i, (real, sent) in enumerate(MIXED)]
    answers = infer_together(served.url, model, requests)
    for request, got in zip(requests, answers, strict=True):
        expected = served.direct(model, request)
        assert_same_answer(got, expected, request["attention_mask"], atol)
        padded = ~request["attention_mask"].astype(bool)
        if padded.any():  # the untrimmed run has states there: the ensemble answers zeros
            assert expected["last_hidden_state"][padded].any()


@pytest.mark.parametrize(("model", "atol"), [("encoder", 1e-6), ("openvino", 5e-2)])
def test_requests_of_one_bucket_are_stacked_whatever_length_they_were_sent_at(
    served: Served, model: str, atol: float
) -> None:
    """Eight requests sent at eight lengths, all with 17..32 real tokens: the trim step
    makes each [1, 32], so the engine's batcher (equal shapes only) runs them at once."""
    shapes = [(17, 17), (20, 128), (32, 32), (25, 40), (18, 64), (31, 100), (24, 24), (30, 33)]
    requests = [token_rows([real], sent, seed=40 + i) for i, (real, sent) in enumerate(shapes)]
    engine = f"{model}{ENGINE_SUFFIX}"
    before = executions(served.url, engine)
    answers = infer_together(served.url, model, requests)
    assert tuple(np.subtract(executions(served.url, engine), before)) == (8, 1)
    for request, got in zip(requests, answers, strict=True):
        assert_same_answer(got, served.direct(model, request), request["attention_mask"], atol)


def test_several_rows_per_request_keep_their_rows(served: Served) -> None:
    requests = [token_rows([3, 30, 7], 40, seed=1), token_rows([5, 1], 128, seed=3)]
    for request in requests:
        got = infer_int64(served.url, "encoder", request)
        assert_same_answer(got, served.direct("encoder", request), request["attention_mask"], 1e-6)


def test_a_model_without_token_outputs_answers_its_pooled_output(served: Served) -> None:
    for i, (real, sent) in enumerate(MIXED[:4]):
        request = token_rows([real], sent, seed=60 + i)
        got = infer_int64(served.url, "pooled", request)
        assert set(got) == {"pooled"}
        assert_same_answer(got, served.direct("pooled", request), request["attention_mask"], 1e-6)


def test_minilm_at_real_lengths_answers_as_untrimmed(served: Served) -> None:
    requests = []
    for i, (sent, keep) in enumerate([(128, 12), (128, 30), (24, 24), (40, 33), (16, 9)]):
        rows = minilm.make_inputs(1, seq_len=sent, seed=100 + i, min_tokens=4)
        rows["attention_mask"][:, keep:] = 0
        rows["input_ids"][:, keep:] = minilm.PAD
        requests.append(rows)
    answers = infer_together(served.url, "minilm", requests)
    for request, got in zip(requests, answers, strict=True):
        expected = served.direct("minilm", request)
        mask = request["attention_mask"].astype(bool)
        hidden, pooled = minilm.HIDDEN_STATE, minilm.SENTENCE_EMBEDDING
        assert got[hidden].shape == expected[hidden].shape
        np.testing.assert_allclose(got[pooled], expected[pooled], rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(got[hidden][mask], expected[hidden][mask], atol=2e-4)
        assert not got[hidden][~mask].any()


@pytest.mark.parametrize(
    ("mask", "ids", "message"),
    [
        ([0, 0, 0], [1, 2, 3], "the mask input 'attention_mask' has no real position"),
        ([1, 1, 0, 0], [1, 2, 3], "inputs disagree on the sequence length (axis 1)"),
    ],
)
def test_a_request_the_steps_cannot_trim_is_a_400(
    served: Served, mask: list[int], ids: list[int], message: str
) -> None:
    body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, len(mask)], "datatype": "INT64", "data": mask},
        ]
    }
    answer = httpx.post(
        f"{served.url}/v2/models/encoder/infer", json=body, trust_env=False, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    # and the ensemble still answers the next request
    request = token_rows([4], 8, seed=7)
    got = infer_int64(served.url, "encoder", request)
    assert_same_answer(got, served.direct("encoder", request), request["attention_mask"], 1e-6)


@pytest.mark.parametrize(
    ("model", "real", "sent"), [("150-positions", 140, 150), ("100-positions", 70, 100)]
)
def test_a_request_is_not_padded_past_what_it_was_sent_at_and_the_check_ran(
    served: Served, model: str, real: int, sent: int
) -> None:
    """Models with 150 and 100 positions (the check ran them at 40 and 64): 140 real
    tokens sent at 150 and 70 sent at 100 run as sent, not at their buckets 256 and
    128, which the models cannot run and neither the client nor the check asked for."""
    request = token_rows([real], sent, seed=9)
    got = infer_int64(served.url, model, request)
    assert_same_answer(got, served.direct(model, request), request["attention_mask"], 1e-6)
