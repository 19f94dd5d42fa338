"""A packaged repository loads in a real tritonserver and answers like ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from shipway.errors import Unavailable
from shipway.examples import minilm
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from tests.integration.conftest import RunningTriton
from tests.support.answers import token_state_error

pytestmark = pytest.mark.integration


def infer(url: str, model: str, inputs: dict[str, np.ndarray], binary: bool) -> np.ndarray:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, value in inputs.items():
            tensor = triton_http.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value, binary_data=binary)
            tensors.append(tensor)
        outputs = [triton_http.InferRequestedOutput(minilm.HIDDEN_STATE, binary_data=binary)]
        return client.infer(model, tensors, outputs=outputs).as_numpy(minilm.HIDDEN_STATE)
    finally:
        client.close()


def test_served_minilm_matches_onnxruntime(
    minilm_triton: RunningTriton, minilm_onnx: Path, minilm_inputs: dict[str, np.ndarray]
) -> None:
    expected = ort.InferenceSession(str(minilm_onnx)).run([minilm.HIDDEN_STATE], minilm_inputs)[0]
    for binary in (True, False):
        served = infer(minilm_triton.process.url, minilm_triton.model_name, minilm_inputs, binary)
        assert served.shape == expected.shape == (3, 16, 384)
        # trimmed: equal where the mask is 1, zeros where it is 0
        diff = token_state_error(served, expected, minilm_inputs["attention_mask"])
        print(f"max |triton - onnxruntime| (binary={binary}) = {diff:.3e}")
        assert diff < 1e-4


def test_wrong_input_shape_is_a_client_error(minilm_triton: RunningTriton) -> None:
    bad = {"input_ids": np.ones((1, 4), np.int64)}  # attention_mask missing
    with pytest.raises(triton_http.InferenceServerException, match="attention_mask"):
        infer(minilm_triton.process.url, minilm_triton.model_name, bad, True)


def test_a_model_that_cannot_load_fails_with_the_server_log(
    triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    model = tmp_path / "repo" / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: 0\n')
    (model / "1" / "model.py").write_text("raise RuntimeError('cannot load me')\n")
    process = TritonProcess(triton_dist, tmp_path / "repo", tmp_path / "triton.log")
    process.start()
    with pytest.raises(Unavailable, match="tritonserver exited") as info:
        process.wait_ready(60)
    assert "broken" in str(info.value)
    assert not process.alive()
