"""An INT8 candidate through every stage (split, calibrate, gate, benchmark) for the
signatures whose rows are not the plain first axis of every input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from shipway.builds.compile import BenchPlan, Inputs, compile_candidate
from shipway.builds.recipes import BuildOptions, Recipe, Target
from shipway.registry.signature import load_model, read_signature
from tests.support.signatures import F32, model, tensor

WEIGHTS = numpy_helper.from_array(
    np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32), "W"
)
ROWS = np.random.default_rng(1).normal(size=(32, 16)).astype(np.float32)


def scaled() -> bytes:  # y = (x @ W) * scale, scale rank 0: the same for every row
    return model(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Mul", ["h", "scale"], ["y"]),
        ],
        [tensor("x", F32, ["batch", 16]), tensor("scale", F32, [])],
        [tensor("y", F32, ["batch", 16])],
        [WEIGHTS],
    )


def summed() -> bytes:  # y = x @ W and total = sum(y): a rank-0 output, no batch axis
    return model(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
            helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0),
        ],
        [tensor("x", F32, ["batch", 16])],
        [tensor("y", F32, ["batch", 16]), tensor("total", F32, [])],
        [WEIGHTS],
    )


@pytest.mark.parametrize(
    ("make", "sample", "calibration", "rows", "batch"),
    [
        (scaled, {"x": ROWS, "scale": np.array(2.0, np.float32)}, None, (16, 16), 8),
        # One request: it calibrates on a registered dataset, the sample is held out.
        (summed, {"x": ROWS}, {"x": ROWS[::-1].copy()}, (1, 1), 1),
    ],
)
def test_int8_candidate_for_constant_inputs_and_for_no_batch_axis(
    tmp_path: Path,
    make: Callable[[], bytes],
    sample: dict[str, np.ndarray],
    calibration: dict[str, np.ndarray] | None,
    rows: tuple[int, int],
    batch: int,
) -> None:
    onnx_bytes = make()
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes)
    inputs = Inputs(path, read_signature(load_model(onnx_bytes)), sample, calibration)
    result = compile_candidate(
        inputs,
        Recipe.INT8,
        Target.ONNXRUNTIME_CPU,
        BuildOptions(),
        tmp_path,
        BenchPlan(seconds=0.02, rounds=1),
        lambda stage, fraction: None,
    )
    report = result.report
    assert (report["calibration"]["rows"], report["calibration"]["held_out_rows"]) == rows
    assert report["accuracy"]["passed"], report["accuracy"]
    assert report["benchmark"]["candidate"]["batch"] == batch  # rows per run
