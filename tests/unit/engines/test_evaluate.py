from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from shipway.engines import evaluate
from shipway.engines.benchmark import side_by_side
from shipway.engines.calibration import Rows
from shipway.errors import BuildFailed
from shipway.registry.signature import load_model, read_signature
from tests.support.signatures import CASES, F32, model, tensor


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_run_in_slices_answer_as_the_whole_sample_at_once(case: str) -> None:
    made = CASES[case]()
    signature, sample = read_signature(load_model(made.onnx)), made.sample(11)
    names = [o.name for o in signature.outputs]
    whole = ort.InferenceSession(made.onnx).run(names, sample)
    sliced = evaluate.run(evaluate.session(made.onnx), Rows.of(signature, sample), batch=3)
    assert list(sliced) == names
    for name, expected in zip(names, whole, strict=True):
        assert sliced[name].shape == expected.shape
        np.testing.assert_allclose(sliced[name], expected, rtol=1e-6, atol=1e-6)


def test_an_output_without_the_declared_batch_axis_is_a_clear_error() -> None:
    # Declares y [batch, 4] but reduces the rows away: slicing would glue wrong rows.
    onnx_bytes = model(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], keepdims=0)],
        [tensor("x", F32, ["batch", 4])],
        [tensor("y", F32, ["batch", 4])],
    )
    signature = read_signature(load_model(onnx_bytes))
    assert signature.batch_dim == "batch"
    sample = Rows.of(signature, {"x": np.ones((8, 4), np.float32)})
    with pytest.raises(BuildFailed, match=r"output 'y' has shape \[4\] for 3 input rows"):
        evaluate.run(evaluate.session(onnx_bytes), sample, batch=3)


@pytest.mark.parametrize(("case", "per_run"), [("scalar-scale", 8), ("column-mean", 1)])
def test_benchmark_feeds_rows_with_constants_whole(case: str, per_run: int, tmp_path: Path) -> None:
    made = CASES[case]()
    path = tmp_path / "m.onnx"
    path.write_bytes(made.onnx)
    signature = read_signature(load_model(made.onnx))
    measured = side_by_side(
        {"m": path}, Rows.of(signature, made.sample(3)), batch=8, seconds=0.01, rounds=1
    )
    # 3 rows repeated to fill 8; a model without a batch axis runs its one request.
    assert measured["m"].batch == per_run
