"""Trimming padding and batching by length, on a real tritonserver (Python backend).

Models packaged as a build packages them (``package_repository``): the tiny encoder of
``tests/support/graphs.py`` (``input_ids`` and ``attention_mask`` [batch, seq], a token
output ``last_hidden_state`` [batch, seq, 8] and a mask-pooled ``pooled`` [batch, 8]),
trimmed and untrimmed; the same encoder with its mask named ``input_mask`` (the
registration's ``shipway.mask_input``); one without a mask input, whose padding counts;
and MiniLM. Each answer is checked against ONNX Runtime run directly on the request as
sent, padding and all (the untrimmed run): pooled outputs equal within float tolerance,
token outputs equal where the mask is 1 and zero where it is 0, shapes as sent.

The batching models wait up to 5 s for 8 requests (``preferred_batch_size: 8``), so
requests sent together are handed to the model together, and Triton's statistics say
in how many executions they ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.builds.triton_config import ServingOptions
from shipway.builds.triton_models.padding import bucket as padding_bucket
from shipway.examples import minilm
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from tests.support.graphs import tiny_encoder, token_rows
from tests.support.triton_client import executions, infer_int64, infer_together

pytestmark = pytest.mark.integration

Arrays = dict[str, np.ndarray]
TOGETHER = ServingOptions(max_queue_delay_us=5_000_000, preferred_batch_sizes=(8,))
# (real length, sent length): every bucket, right at and past their edges, one
# request sent unpadded, one padded to 128, one beyond the last bucket
MIXED = [(3, 5), (16, 16), (17, 40), (9, 128), (33, 64), (60, 100), (140, 150), (2, 2)]


@dataclass
class Served:
    url: str
    onnx: dict[str, bytes]  # model name -> its ONNX, to run directly

    def infer(self, model: str, request: Arrays) -> Arrays:
        return infer_int64(self.url, model, request)

    def together(self, model: str, requests: list[Arrays]) -> list[Arrays]:
        return infer_together(self.url, model, requests)

    def executions(self, model: str) -> tuple[int, int]:
        """(inferences, executions) Triton counted for ``model`` so far."""
        return executions(self.url, model)

    def direct(self, model: str, request: Arrays) -> Arrays:
        """ONNX Runtime on the request as sent: the untrimmed answer."""
        session = ort.InferenceSession(self.onnx[model])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, request), strict=True))


@pytest.fixture(scope="module")
def served(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("trim")
    models = {  # name: (onnx, options, mask input)
        "trimmed": (tiny_encoder(), TOGETHER, "attention_mask"),
        "untrimmed": (tiny_encoder(), ServingOptions(trim_padding=False), "attention_mask"),
        "untrimmed-together": (
            tiny_encoder(),
            ServingOptions(
                max_queue_delay_us=5_000_000, preferred_batch_sizes=(8,), trim_padding=False
            ),
            "attention_mask",
        ),
        "named-mask": (tiny_encoder("input_mask"), ServingOptions(), "input_mask"),
        "no-mask": (tiny_encoder(None), ServingOptions(), "attention_mask"),
        "minilm": (minilm.onnx_path().read_bytes(), TOGETHER, "attention_mask"),
    }
    for name, (onnx_bytes, options, mask) in models.items():
        (root / f"{name}.onnx").write_bytes(onnx_bytes)
        signature = read_signature(load_model(onnx_bytes))
        sample = {spec.name: np.ones((2, 6), np.int64) for spec in signature.inputs}
        package_repository(
            root / "repo", name, root / f"{name}.onnx", signature, Target.ONNXRUNTIME_CPU,
            options, sample=sample, mask_input=mask,
        )  # fmt: skip
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(180)
        yield Served(process.url, {name: made[0] for name, made in models.items()})
    finally:
        process.stop()


def requests_of(shapes: list[tuple[int, int]], seed: int = 0) -> list[Arrays]:
    return [token_rows([real], sent, seed=seed + i) for i, (real, sent) in enumerate(shapes)]


def assert_same_answer(
    got: Arrays, expected: Arrays, mask: np.ndarray, token: str, pooled: str, atol: float
) -> None:
    """Shapes as sent; pooled equal; token states equal where the mask is 1, 0 elsewhere."""
    assert got[token].shape == expected[token].shape
    assert got[pooled].shape == expected[pooled].shape
    np.testing.assert_allclose(got[pooled], expected[pooled], rtol=1e-4, atol=atol)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[token][real], expected[token][real], rtol=1e-4, atol=atol)
    assert not got[token][~real].any()


def test_mixed_lengths_run_together_trimmed_and_answer_as_untrimmed(served: Served) -> None:
    requests = requests_of(MIXED)
    before = served.executions("trimmed")
    answers = served.together("trimmed", requests)
    inferences, executions = np.subtract(served.executions("trimmed"), before)
    assert (inferences, executions) == (8, 1)  # eight lengths, one batch
    for request, got in zip(requests, answers, strict=True):
        expected = served.direct("trimmed", request)
        assert_same_answer(
            got, expected, request["attention_mask"], "last_hidden_state", "pooled", 1e-6
        )
        padded = ~request["attention_mask"].astype(bool)
        if padded.any():  # the untrimmed run has states there: trimming answers zeros
            assert expected["last_hidden_state"][padded].any()


def test_untrimmed_lengths_are_not_batched_together(served: Served) -> None:
    """Trimming off: the old config, where Triton batches equal shapes only."""
    requests = requests_of(MIXED)
    before = served.executions("untrimmed-together")
    served.together("untrimmed-together", requests)
    assert tuple(np.subtract(served.executions("untrimmed-together"), before)) == (8, 8)


def test_several_rows_per_request_keep_their_rows(served: Served) -> None:
    requests = [
        token_rows([3, 30, 7], 40, seed=1),
        token_rows([12], 12, seed=2),
        token_rows([5, 1], 128, seed=3),
        token_rows([20, 18], 20, seed=4),
    ] * 2
    answers = served.together("trimmed", requests)
    for request, got in zip(requests, answers, strict=True):
        expected = served.direct("trimmed", request)
        assert_same_answer(
            got, expected, request["attention_mask"], "last_hidden_state", "pooled", 1e-6
        )


def test_trimming_off_answers_exactly_as_before(served: Served) -> None:
    """The untrimmed model answers what ONNX Runtime gives on the request as sent,
    padding positions' states included."""
    for request in requests_of(MIXED[:4], seed=20):
        got = served.infer("untrimmed", request)
        expected = served.direct("untrimmed", request)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6)


def test_the_mask_the_registration_names_is_the_one_trimmed_by(served: Served) -> None:
    for real, sent in [(4, 50), (20, 20), (9, 128)]:
        (request,) = requests_of([(real, sent)], seed=real)
        request = {"input_ids": request["input_ids"], "input_mask": request["attention_mask"]}
        got = served.infer("named-mask", request)
        expected = served.direct("named-mask", request)
        assert_same_answer(
            got, expected, request["input_mask"], "last_hidden_state", "pooled", 1e-6
        )


def test_a_model_without_a_mask_input_is_untouched(served: Served) -> None:
    """Its padding counts (it attends to every position and pools them all): it is
    answered on every position as sent, padding states included."""
    for real, sent in [(4, 50), (9, 128)]:
        request = token_rows([real], sent, seed=real, mask=False)
        got = served.infer("no-mask", request)
        expected = served.direct("no-mask", request)
        assert got["last_hidden_state"][0, real:].any()
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6)


def test_inputs_of_different_lengths_in_one_request_are_refused(served: Served) -> None:
    body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
            {"name": "attention_mask", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]},
        ]
    }
    answer = httpx.post(
        f"{served.url}/v2/models/trimmed/infer", json=body, trust_env=False, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert "input_ids has 3" in answer.json()["error"]
    assert "attention_mask has 2" in answer.json()["error"]


def test_a_request_the_model_cannot_run_fails_alone(served: Served) -> None:
    """An id past the vocabulary fails its own request (400), not its batch-mates: the
    bad request shares the 16-token bucket with three others, so their stacked run
    fails and each is re-run alone; without that fallback the three would fail too."""
    requests = requests_of(MIXED)
    bad = {k: v.copy() for k, v in requests[0].items()}
    bad["input_ids"][0, 0] = 10_000
    requests[0] = bad
    mates = [1, 3, 7]  # (16, 16), (9, 128), (2, 2): the same bucket as (3, 5)
    assert {padding_bucket(MIXED[i][0]) for i in [0, *mates]} == {16}
    before = served.executions("trimmed")
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(served.infer, "trimmed", r) for r in requests]
        with pytest.raises(Exception, match=r"out of bounds|indices") as info:
            futures[0].result()
        assert "400" in str(info.value) or "Bad Request" in str(info.value)
        answers = {index: future.result() for index, future in enumerate(futures) if index}
    # all eight in one execute(): the mates were stacked with the bad request
    assert served.executions("trimmed")[1] - before[1] == 1
    for index, got in answers.items():
        expected = served.direct("trimmed", requests[index])
        mask = requests[index]["attention_mask"]
        assert_same_answer(got, expected, mask, "last_hidden_state", "pooled", 1e-6)


def test_the_model_runs_on_the_real_tokens_only(served: Served) -> None:
    """300 positions sent, 10 real: past the encoder's 256 position embeddings, so the
    untrimmed model cannot run it (400), the trimmed one runs 10 tokens and answers in
    the request's shape."""
    request = token_rows([10], 300, seed=3)
    with pytest.raises(Exception, match=r"400|Bad Request"):
        served.infer("untrimmed", request)
    got = served.infer("trimmed", request)
    assert got["last_hidden_state"].shape == (1, 300, 8)
    cut = {name: value[:, :10] for name, value in request.items()}
    expected = served.direct("trimmed", cut)
    np.testing.assert_allclose(got["pooled"], expected["pooled"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        got["last_hidden_state"][:, :10], expected["last_hidden_state"], rtol=1e-4, atol=1e-6
    )
    assert not got["last_hidden_state"][:, 10:].any()


def test_a_request_with_no_real_position_is_refused(served: Served) -> None:
    body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
            {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [0, 0, 0]},
        ]
    }
    answer = httpx.post(
        f"{served.url}/v2/models/trimmed/infer", json=body, trust_env=False, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert "has no real position (all zeros)" in answer.json()["error"]


def test_minilm_at_real_lengths_answers_as_untrimmed(served: Served) -> None:
    """Eight requests (twelve rows) of real sentence lengths, padded to 128 or not, in
    two runs (eight rows at most a run)."""
    rng = np.random.default_rng(5)
    requests = []
    for i, sent in enumerate([128, 128, 24, 40, 128, 16, 64, 128]):
        rows = minilm.make_inputs(1 + i % 2, seq_len=sent, seed=100 + i, min_tokens=4)
        if sent == 128:  # real sentences are short: cut the real part to 8..40 tokens
            for row in range(rows["attention_mask"].shape[0]):
                keep = int(rng.integers(8, 41))
                rows["attention_mask"][row, keep:] = 0
                rows["input_ids"][row, keep:] = minilm.PAD
        requests.append(rows)
    before = served.executions("minilm")
    answers = served.together("minilm", requests)
    inferences, executions = np.subtract(served.executions("minilm"), before)
    assert inferences == 12  # rows; at most 8 a batch (max_batch_size)
    assert executions == 2
    for request, got in zip(requests, answers, strict=True):
        expected = served.direct("minilm", request)
        assert_same_answer(
            got,
            expected,
            request["attention_mask"],
            minilm.HIDDEN_STATE,
            minilm.SENTENCE_EMBEDDING,
            2e-4,
        )


def test_the_packaged_config_is_what_triton_loaded(served: Served, tmp_path: Path) -> None:
    config = httpx.get(f"{served.url}/v2/models/trimmed/config", trust_env=False).json()
    assert [i.get("allow_ragged_batch") for i in config["input"]] == [True, True]
    assert "shipway_trim" in config["parameters"]
    plain = httpx.get(f"{served.url}/v2/models/untrimmed/config", trust_env=False).json()
    assert not any(i.get("allow_ragged_batch") for i in plain["input"])
    assert "shipway_trim" not in (plain.get("parameters") or {})
