"""Small ONNX models built with ``onnx.helper``, each one a shape of graph that ONNX
allows and a build must handle: torch's ``nn.Linear`` as ``Gemm``, nodes without
names, weights in ``Constant`` nodes, ``Conv``, weights shared by several nodes,
class scores, a fixed batch size, and a model that blocks ONNX Runtime.

Each builder returns the model and a reference sample (``.npz`` bytes) for it.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray],
    name: str,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        outputs,
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _float(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def clustered(rng: np.random.Generator, centers: np.ndarray, rows: int) -> np.ndarray:
    """Rows near one of ``centers`` each, in turn: data a classifier separates."""
    labels = np.arange(rows) % len(centers)
    return (centers[labels] + 0.1 * rng.normal(size=(rows, centers.shape[1]))).astype(np.float32)


def gemm_classifier(rows: int = 32) -> tuple[bytes, bytes]:
    """Two ``nn.Linear`` layers as torch exports them on 2-D inputs (``Gemm`` with
    ``transB=1``), then softmax: 5 well-separated classes, probabilities out."""
    rng = np.random.default_rng(10)
    centers = rng.normal(size=(5, 16)) * 2
    w1 = rng.normal(size=(32, 16)) / 4
    hidden = np.maximum(centers @ w1.T, 0)  # each class's hidden pattern
    w2 = 4 * hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    b2 = -0.5 * (w2 * hidden).sum(axis=1) / 4  # a little centering, as training would
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], "fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], "fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], "softmax", axis=-1),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 16])],
        [_float("probs", ["batch", 5])],
        {"fc1.weight": w1, "fc1.bias": np.zeros(32), "fc2.weight": w2, "fc2.bias": b2},
        "gemm-classifier",
    )
    return model, npz(x=clustered(rng, centers, rows))


def close_classes_classifier(rows: int = 64) -> tuple[bytes, bytes]:
    """A 5-class softmax classifier whose classes differ by far less than INT8 weight
    rounding (each class's weights are one shared vector plus a tiny class-specific
    part): probabilities stay ~0.2 each, so INT8 keeps a cosine of ~1 against FP32
    while the top-1 class flips on many rows (issue 11)."""
    rng = np.random.default_rng(11)
    shared = rng.normal(size=(1, 8))
    weight = shared + 2e-4 * rng.normal(size=(5, 8))
    nodes = [
        helper.make_node("Gemm", ["x", "weight", "bias"], ["logits"], "classifier", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], "softmax", axis=-1),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 8])],
        [_float("probs", ["batch", 5])],
        {"weight": weight, "bias": np.zeros(5)},
        "close-classes",
    )
    return model, npz(x=rng.normal(size=(rows, 8)).astype(np.float32))


def unnamed_mlp(rows: int = 32) -> tuple[bytes, bytes]:
    """MatMul + Add + Relu + MatMul with no node names (they are optional in ONNX), the
    second weight held by a ``Constant`` node; a regression output."""
    rng = np.random.default_rng(12)
    w2 = numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32) / 6, "w2")
    nodes = [
        helper.make_node("Constant", [], ["w2"], value=w2),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 16])],
        [_float("y", ["batch", 8])],
        {"w1": rng.normal(size=(16, 32)) / 4, "b1": rng.normal(size=32) / 4},
        "unnamed-mlp",
    )
    return model, npz(x=rng.normal(size=(rows, 16)).astype(np.float32))


def conv_net(rows: int = 32) -> tuple[bytes, bytes]:
    """Conv + Relu + Conv + Relu + global pooling + a ``Gemm`` head: image in, scores out."""
    rng = np.random.default_rng(13)
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], "conv2", strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], "pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["scores"], "fc", transB=1),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 3, 8, 8])],
        [_float("scores", ["batch", 4])],
        {
            "c1.w": rng.normal(size=(8, 3, 3, 3)) / 3,
            "c1.b": rng.normal(size=8) / 10,
            "c2.w": rng.normal(size=(16, 8, 3, 3)) / 6,
            "c2.b": rng.normal(size=16) / 10,
            "fc.w": rng.normal(size=(4, 16)),
            "fc.b": rng.normal(size=4) / 10,
        },
        "conv-net",
    )
    return model, npz(x=rng.normal(size=(rows, 3, 8, 8)).astype(np.float32))


def tied_weights(rows: int = 32) -> tuple[bytes, bytes]:
    """One weight initializer read by three layers: two MatMuls and a Gemm that uses it
    transposed (tied weights, as in an autoencoder or tied embeddings)."""
    rng = np.random.default_rng(14)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h1"], "mm1"),
        helper.make_node("Relu", ["h1"], ["r1"], "relu1"),
        helper.make_node("MatMul", ["r1", "w"], ["h2"], "mm2"),
        helper.make_node("Relu", ["h2"], ["r2"], "relu2"),
        helper.make_node("Gemm", ["r2", "w", "b"], ["y"], "g3", transB=1),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 16])],
        [_float("y", ["batch", 16])],
        {"w": rng.normal(size=(16, 16)) / 4, "b": rng.normal(size=16) / 10},
        "tied-weights",
    )
    return model, npz(x=rng.normal(size=(rows, 16)).astype(np.float32))


def fixed_batch_one() -> tuple[bytes, bytes]:
    """A model exported with batch size 1 fixed in its graph: ``[1, 16] -> [1, 8]``."""
    rng = np.random.default_rng(15)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    model = _model(
        nodes,
        [_float("x", [1, 16])],
        [_float("y", [1, 8])],
        {"w": rng.normal(size=(16, 8)) / 4, "b": rng.normal(size=8) / 10},
        "fixed-batch",
    )
    return model, npz(x=rng.normal(size=(1, 16)).astype(np.float32))


def blocks_on_large_inputs(rows: int = 16) -> tuple[bytes, bytes]:
    """Runs normally on its sample; an input above 100 sets a ``Loop`` to ~10^18
    iterations, so ONNX Runtime never returns from the session (in native code, out
    of reach of Python signals). A calibration dataset with such a row makes a build
    hang at its calibrate stage."""
    rng = np.random.default_rng(16)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["peak"], "peak", keepdims=0),
        helper.make_node("Greater", ["peak", "limit"], ["large"], "large"),
        helper.make_node("Where", ["large", "forever", "once"], ["trips_f"], "trips"),
        helper.make_node("Cast", ["trips_f"], ["trips"], "cast", to=TensorProto.INT64),
        helper.make_node(
            "Constant",
            [],
            ["go"],
            "go",
            value=helper.make_tensor("go", TensorProto.BOOL, [], [True]),
        ),
        helper.make_node("Loop", ["trips", "go", "x"], ["spun"], "loop", body=body),
        helper.make_node("MatMul", ["spun", "w"], ["y"], "mm"),
    ]
    model = _model(
        nodes,
        [_float("x", ["batch", 8])],
        [_float("y", ["batch", 4])],
        {
            "w": rng.normal(size=(8, 4)),
            "limit": np.array(100.0),
            "forever": np.array(1e18),
            "once": np.array(1.0),
        },
        "blocks",
    )
    return model, npz(x=rng.normal(size=(rows, 8)).astype(np.float32))


def _ints(name: str, values: list[int]) -> onnx.NodeProto:
    tensor = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    return helper.make_node("Constant", [], [name], value=tensor)


def tiny_encoder(
    mask: str | None = "attention_mask", vocab: int = 50, hidden: int = 8, max_len: int = 256
) -> bytes:
    """A transformer-like encoder: ``input_ids`` [batch, seq] int64 (ids < ``vocab``),
    token and position embeddings, one attention layer and a residual, out come
    ``last_hidden_state`` [batch, seq, hidden] and ``pooled`` [batch, hidden].

    With ``mask`` (an int64 [batch, seq] input of that name) attention skips masked
    keys (an additive -1e4 bias) and ``pooled`` is the mask-aware mean, as a sentence
    encoder's; padded positions still get non-zero states of their own, as in a real
    encoder. With ``mask=None`` there is no mask input: every position attends to every
    position and ``pooled`` is the plain mean (a model whose padding counts)."""
    rng = np.random.default_rng(17)
    weights: dict[str, np.ndarray] = {
        "tok": rng.normal(size=(vocab, hidden)),
        "pos": rng.normal(size=(max_len, hidden)) / 2,
        "wq": rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
        "wk": rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
        "wv": rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
        "scale": np.array(1 / np.sqrt(hidden)),
    }
    if mask is not None:
        weights |= {"one": np.array(1.0), "big": np.array(-1e4)}
    nodes = [
        _ints("zero", [0]),
        _ints("axis1", [1]),
        _ints("two", [2]),
        helper.make_node("Gather", ["tok", "input_ids"], ["tokens"]),
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Slice", ["shape", "axis1", "two"], ["seq"]),
        helper.make_node("Slice", ["pos", "zero", "seq", "zero"], ["positions"]),
        helper.make_node("Add", ["tokens", "positions"], ["x"]),
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["raw"]),
        helper.make_node("Mul", ["raw", "scale"], ["scores"]),
    ]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if mask is None:
        nodes += [
            helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),
            helper.make_node("MatMul", ["attention", "v"], ["context"]),
            helper.make_node("Add", ["x", "context"], ["summed"]),
            helper.make_node("Tanh", ["summed"], ["last_hidden_state"]),
            helper.make_node("ReduceMean", ["last_hidden_state"], ["pooled"], axes=[1], keepdims=0),
        ]
    else:
        inputs.append(helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"]))
        nodes += [
            helper.make_node("Cast", [mask], ["m"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "m"], ["masked"]),
            helper.make_node("Mul", ["masked", "big"], ["bias2"]),
            helper.make_node("Unsqueeze", ["bias2", "axis1"], ["bias"]),
            helper.make_node("Add", ["scores", "bias"], ["biased"]),
            helper.make_node("Softmax", ["biased"], ["attention"], axis=-1),
            helper.make_node("MatMul", ["attention", "v"], ["context"]),
            helper.make_node("Add", ["x", "context"], ["summed"]),
            helper.make_node("Tanh", ["summed"], ["last_hidden_state"]),
            helper.make_node("Unsqueeze", ["m", "two"], ["m3"]),
            helper.make_node("Mul", ["last_hidden_state", "m3"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axis1"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["m3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["total", "count"], ["pooled"]),
        ]
    return _model(
        nodes,
        inputs,
        [
            _float("last_hidden_state", ["batch", "seq", hidden]),
            _float("pooled", ["batch", hidden]),
        ],
        weights,
        "tiny-encoder",
    )


def token_rows(
    lengths: list[int], seq: int, vocab: int = 50, seed: int = 0, mask: bool = True
) -> dict[str, np.ndarray]:
    """Requests rows for ``tiny_encoder``: row ``i`` has ``lengths[i]`` real ids (1..vocab-1)
    then zeros to ``seq``; with ``mask``, the matching ``attention_mask``."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), seq), dtype=np.int64)
    attention = np.zeros((len(lengths), seq), dtype=np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, vocab, size=length)
        attention[row, :length] = 1
    return {"input_ids": ids, "attention_mask": attention} if mask else {"input_ids": ids}
