"""Tiny ONNX models, one per kind of signature, with reference samples and requests.

Each case is built here with ``onnx.helper``; what Shipway must make of it (batch
axis, rows, Triton ``dims``, the served answer) is asserted by the tests that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def tensor(name: str, elem: int, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers or [])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8  # what the local Triton's ONNX Runtime reads
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def const(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


@dataclass(frozen=True)
class Case:
    onnx: bytes
    sample: Callable[[int], dict[str, np.ndarray]]  # rows -> the reference sample
    request: dict[str, np.ndarray]  # one request in the model's own shape


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def scalar_scale() -> Case:
    """``y = x * scale``: x ``[batch, 4]``, scale rank 0 (issue 12, item 1)."""
    onnx_bytes = model(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        [tensor("x", F32, ["batch", 4]), tensor("scale", F32, [])],
        [tensor("y", F32, ["batch", 4])],
    )
    return Case(
        onnx_bytes,
        lambda n: {
            "x": _rng().normal(size=(n, 4)).astype(np.float32),
            "scale": np.array(2.5, np.float32),
        },
        {"x": _rng(1).normal(size=(3, 4)).astype(np.float32), "scale": np.array(-1.5, np.float32)},
    )


def vector() -> Case:
    """``y = 2x + 1``: one rank-1 ``[batch]`` input and output."""
    onnx_bytes = model(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["y"]),
        ],
        [tensor("x", F32, ["batch"])],
        [tensor("y", F32, ["batch"])],
        [helper.make_tensor("two", F32, [], [2.0]), helper.make_tensor("one", F32, [], [1.0])],
    )
    return Case(
        onnx_bytes,
        lambda n: {"x": _rng().normal(size=n).astype(np.float32)},
        {"x": np.array([0.5, -1.0, 3.0], np.float32)},
    )


def fixed() -> Case:
    """``y = relu(x)`` with a fixed first axis: x ``[1, 4]``."""
    onnx_bytes = model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor("x", F32, [1, 4])],
        [tensor("y", F32, [1, 4])],
    )
    return Case(
        onnx_bytes,
        lambda n: {"x": _rng().normal(size=(1, 4)).astype(np.float32)},
        {"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)},
    )


def shared_length() -> Case:
    """``y = x + a``: x ``[batch, n]``, a ``[n]`` — a's symbolic first axis is not
    the batch."""
    onnx_bytes = model(
        [helper.make_node("Add", ["x", "a"], ["y"])],
        [tensor("x", F32, ["batch", "n"]), tensor("a", F32, ["n"])],
        [tensor("y", F32, ["batch", "n"])],
    )
    return Case(
        onnx_bytes,
        lambda n: {
            "x": _rng().normal(size=(n, 5)).astype(np.float32),
            "a": np.arange(5, dtype=np.float32),
        },
        {"x": _rng(2).normal(size=(2, 3)).astype(np.float32), "a": np.ones(3, np.float32)},
    )


def column_mean() -> Case:
    """``y = mean(x, axis 0)``: x ``[n, 4]`` → y ``[4]``; n is reduced, so no batch."""
    onnx_bytes = model(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], keepdims=0)],
        [tensor("x", F32, ["n", 4])],
        [tensor("y", F32, [4])],
    )
    return Case(
        onnx_bytes,
        lambda n: {"x": _rng().normal(size=(n, 4)).astype(np.float32)},
        {"x": _rng(3).normal(size=(6, 4)).astype(np.float32)},
    )


def bias() -> Case:
    """``y = x + b``: x ``[batch, n]`` (both symbolic), b ``[4]`` (issue 12, item 2)."""
    onnx_bytes = model(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        [tensor("x", F32, ["batch", "n"]), tensor("b", F32, [4])],
        [tensor("y", F32, ["batch", "n"])],
    )
    return Case(
        onnx_bytes,
        lambda n: {
            "x": _rng().normal(size=(n, 4)).astype(np.float32),
            "b": np.array([1.0, -2.0, 0.5, 4.0], np.float32),
        },
        {"x": _rng(4).normal(size=(2, 4)).astype(np.float32), "b": np.ones(4, np.float32)},
    )


def tokens() -> Case:
    """``y = ids * mask`` as float: two ``[batch, seq]`` int64 inputs, the one case
    Triton may batch."""
    onnx_bytes = model(
        [
            helper.make_node("Mul", ["ids", "mask"], ["m"]),
            helper.make_node("Cast", ["m"], ["y"], to=F32),
        ],
        [tensor("ids", I64, ["batch", "seq"]), tensor("mask", I64, ["batch", "seq"])],
        [tensor("y", F32, ["batch", "seq"])],
    )

    def sample(n: int) -> dict[str, np.ndarray]:
        ids = _rng().integers(1, 1000, size=(n, 7))
        mask = (np.arange(7)[None, :] < _rng(5).integers(2, 8, size=(n, 1))).astype(np.int64)
        return {"ids": ids, "mask": mask}

    request = {
        "ids": np.array([[5, 6, 7], [8, 9, 10]], np.int64),
        "mask": np.array([[1, 1, 0], [1, 0, 0]], np.int64),
    }
    return Case(onnx_bytes, sample, request)


def mixed_ranks() -> Case:
    """Four inputs of ranks 3, 1, 0 and 2, two outputs of ranks 2 and 1:
    ``y = sum((x * w) * scale, axis 2) * mask``, ``count = sum(mask, axis 1)``."""
    onnx_bytes = model(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Mul", ["xw", "scale"], ["xws"]),
            helper.make_node("ReduceSum", ["xws", "axis2"], ["s"], keepdims=0),
            helper.make_node("Cast", ["mask"], ["maskf"], to=F32),
            helper.make_node("Mul", ["s", "maskf"], ["y"]),
            helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=0),
        ],
        [
            tensor("x", F32, ["batch", "seq", 4]),
            tensor("w", F32, [4]),
            tensor("scale", F32, []),
            tensor("mask", I64, ["batch", "seq"]),
        ],
        [tensor("y", F32, ["batch", "seq"]), tensor("count", I64, ["batch"])],
        [const("axis2", [2]), const("axis1", [1])],
    )

    def sample(n: int) -> dict[str, np.ndarray]:
        return {
            "x": _rng().normal(size=(n, 6, 4)).astype(np.float32),
            "w": np.array([0.5, 1.0, -1.0, 2.0], np.float32),
            "scale": np.array(3.0, np.float32),
            "mask": (_rng(6).random(size=(n, 6)) > 0.3).astype(np.int64),
        }

    request = {
        "x": _rng(7).normal(size=(2, 3, 4)).astype(np.float32),
        "w": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        "scale": np.array(0.5, np.float32),
        "mask": np.array([[1, 1, 0], [1, 0, 1]], np.int64),
    }
    return Case(onnx_bytes, sample, request)


def scalar_output() -> Case:
    """``y = 2x`` and ``total = sum(x)``: a rank-0 output, so no batch axis."""
    onnx_bytes = model(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        ],
        [tensor("x", F32, ["batch", 4])],
        [tensor("y", F32, ["batch", 4]), tensor("total", F32, [])],
        [helper.make_tensor("two", F32, [], [2.0])],
    )
    return Case(
        onnx_bytes,
        lambda n: {"x": _rng().normal(size=(n, 4)).astype(np.float32)},
        {"x": _rng(8).normal(size=(3, 4)).astype(np.float32)},
    )


def scalar_only() -> Case:
    """``y = 3s``: a rank-0 input and a rank-0 output, nothing else."""
    onnx_bytes = model(
        [helper.make_node("Mul", ["s", "three"], ["y"])],
        [tensor("s", F32, [])],
        [tensor("y", F32, [])],
        [helper.make_tensor("three", F32, [], [3.0])],
    )
    return Case(
        onnx_bytes,
        lambda n: {"s": np.array(1.25, np.float32)},
        {"s": np.array(-2.0, np.float32)},
    )


CASES: dict[str, Callable[[], Case]] = {
    "scalar-scale": scalar_scale,
    "vector": vector,
    "fixed": fixed,
    "shared-length": shared_length,
    "column-mean": column_mean,
    "bias": bias,
    "tokens": tokens,
    "mixed-ranks": mixed_ranks,
    "scalar-output": scalar_output,
    "scalar-only": scalar_only,
}
