"""The in-build benchmark runs models at a batch they accept, rows as the signature
defines them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from shipway.engines.benchmark import side_by_side
from shipway.engines.calibration import Rows
from shipway.registry.signature import load_model, read_signature


def constants_beside_a_batch(path: Path) -> Path:
    """y = x + sum(a) + sum(b): x [batch, 4] split into rows; a [3] and b [5] are the
    same for every row (they fix their own first axes, which are no batch)."""
    nodes = [
        helper.make_node("ReduceSum", ["a"], ["sa"], keepdims=0),
        helper.make_node("ReduceSum", ["b"], ["sb"], keepdims=0),
        helper.make_node("Add", ["x", "sa"], ["xa"]),
        helper.make_node("Add", ["xa", "sb"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_constant_inputs_of_different_lengths_do_not_decide_the_batch(tmp_path: Path) -> None:
    path = constants_beside_a_batch(tmp_path / "m.onnx")
    signature = read_signature(load_model(path.read_bytes()))
    sample = {
        "x": np.ones((3, 4), np.float32),
        "a": np.ones(3, np.float32),
        "b": np.ones(5, np.float32),
    }
    rows = Rows.of(signature, sample)
    assert rows.constants == {"a", "b"}
    measured = side_by_side({"candidate": path}, rows, batch=8, seconds=0.05, rounds=1)
    assert measured["candidate"].batch == 8  # not 3 or 5, and no "different batch sizes"
