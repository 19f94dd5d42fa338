"""Facts about an ONNX graph that steer a build, and the one rewrite quantization
needs; pure functions of the model proto.

Quantizable layers are ``MatMul``, ``Gemm`` and ``Conv`` nodes with a constant
weight (ONNX Runtime's quantizers turn exactly these into integer kernels). ONNX
allows more shapes of graph than the quantizers handle well, so ``normalize``
rewrites them first, without changing what the model computes:

- nodes without names (names are optional in ONNX) get unique ones, because the
  quantizers and the sensitivity sweep address layers by name;
- ``Constant`` nodes feeding a weight become initializers (the quantizers only
  quantize initializers);
- ``Gemm`` with a constant weight becomes ``MatMul`` (+ ``Add`` for the bias), with
  ``alpha``, ``beta`` and ``transB`` folded into the constants: the dynamic quantizer
  has no integer Gemm and renames Gemms it converts itself, which breaks selecting or
  excluding them by name;
- a weight initializer shared by several nodes (tied weights) gets a copy per
  quantizable consumer: ONNX Runtime's static quantizer quantizes a shared
  initializer once, per channel along the axis of whichever consumer it met first,
  and rewires every consumer to it, so a node kept in FP32 would still read INT8
  weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
LAYER_OPS = ("MatMul", "Gemm", "Conv")
# Inputs that hold a layer's constant parameters: the weight, and for Conv its bias
# (quantized to int32 with the weight's scale, so it must not be shared either).
PARAMETER_INPUTS = {"MatMul": (1,), "Gemm": (1,), "Conv": (1, 2)}


def is_qdq(model: onnx.ModelProto) -> bool:
    """True for an already-quantized Q/DQ model (quantization-aware training, or a
    model quantized elsewhere): its scales are part of the model, so calibrating it
    again would only lose them."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def _constants(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer}
    return names | {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}


def weighted_nodes(model: onnx.ModelProto, op_types: Iterable[str] = LAYER_OPS) -> list[str]:
    """Nodes of ``op_types`` whose weight (second input) is a constant, in graph order.

    These are the layers quantization changes (activation-by-activation MatMuls such
    as attention scores stay in float), so they are the candidates of the
    sensitivity sweep. Unnamed nodes are listed as ``""``: ``normalize`` names them.
    """
    wanted = set(op_types)
    constants = _constants(model.graph)
    return [
        node.name
        for node in model.graph.node
        if node.op_type in wanted and len(node.input) > 1 and node.input[1] in constants
    ]


def int8_weights(model: onnx.ModelProto) -> int:
    """How many weight tensors are stored as 8-bit integers: the proof that a
    candidate was quantized (zero points and scales are at most 1-D; weights of
    MatMul and Conv are at least 2-D)."""
    small = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    return sum(1 for i in model.graph.initializer if i.data_type in small and len(i.dims) >= 2)


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield sub
                    yield from _subgraphs(sub)


def _uses(graph: onnx.GraphProto) -> Counter[str]:
    """How often each value is read, in the graph, its subgraphs and as an output."""
    counts: Counter[str] = Counter()
    for g in (graph, *_subgraphs(graph)):
        for node in g.node:
            counts.update(i for i in node.input if i)
        counts.update(o.name for o in g.output)
    return counts


class _Names:
    """Fresh, unique names for values and nodes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {i.name for i in graph.initializer}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        for g in (graph, *_subgraphs(graph)):
            for node in g.node:
                self.taken |= {*node.input, *node.output, node.name}

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self.taken:
            name, n = f"{base}_{n}", n + 1
        self.taken.add(name)
        return name


def name_nodes(graph: onnx.GraphProto) -> int:
    """Give every unnamed (or duplicately named) node of the main graph a unique name;
    returns how many were renamed."""
    names = _Names(graph)
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = names.fresh(f"{node.op_type}_{index}")
            renamed += 1
        seen.add(node.name)
    return renamed


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes that feed a layer's parameters become initializers."""
    parameters = {
        node.input[i]
        for node in graph.node
        for i in PARAMETER_INPUTS.get(node.op_type, ())
        if len(node.input) > i
    }
    keep = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.output[0] in parameters and value is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(keep)


def _gemm_to_matmul(graph: onnx.GraphProto, names: _Names) -> None:
    """Y = alpha * A' @ B' + beta * C  →  MatMul(A', alpha * B') [+ Add(beta * C)]."""
    inits = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        if alpha != 1.0:
            weight = weight * np.asarray(alpha, weight.dtype)
        b_name = names.fresh(f"{node.name}.weight")
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), b_name))
        a_name = node.input[0]
        if attrs.get("transA", 0):
            a_name = names.fresh(f"{node.input[0]}.transposed")
            nodes.append(
                helper.make_node(
                    "Transpose",
                    [node.input[0]],
                    [a_name],
                    names.fresh(f"{node.name}/transA"),
                    perm=[1, 0],
                )
            )
        has_bias = len(node.input) > 2 and node.input[2] != ""
        product = names.fresh(f"{node.output[0]}.matmul") if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [a_name, b_name], [product], node.name))
        if has_bias:
            bias = node.input[2]
            if beta != 1.0 and bias in inits:
                array = numpy_helper.to_array(inits[bias])
                bias = names.fresh(f"{node.name}.bias")
                graph.initializer.append(
                    numpy_helper.from_array(array * np.asarray(beta, array.dtype), bias)
                )
            elif beta != 1.0:
                scale = names.fresh(f"{node.name}.beta")
                graph.initializer.append(
                    numpy_helper.from_array(np.asarray(beta, weight.dtype), scale)
                )
                scaled = names.fresh(f"{bias}.scaled")
                nodes.append(
                    helper.make_node(
                        "Mul", [bias, scale], [scaled], names.fresh(f"{node.name}/beta")
                    )
                )
                bias = scaled
            nodes.append(
                helper.make_node(
                    "Add", [product, bias], [node.output[0]], names.fresh(f"{node.name}/bias")
                )
            )
    graph.ClearField("node")
    graph.node.extend(nodes)


def _untie(graph: onnx.GraphProto, names: _Names) -> None:
    """A parameter initializer read more than once gets a copy per layer reading it."""
    inits = {i.name: i for i in graph.initializer}
    uses = _uses(graph)
    for node in graph.node:
        for i in PARAMETER_INPUTS.get(node.op_type, ()):
            if len(node.input) <= i or node.input[i] not in inits or uses[node.input[i]] < 2:
                continue
            source = node.input[i]
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[source])
            copy.name = names.fresh(f"{source}.{node.name}")
            graph.initializer.append(copy)
            node.input[i] = copy.name
            uses[source] -= 1


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    uses = _uses(graph)
    inputs = {i.name for i in graph.input}
    kept = [i for i in graph.initializer if uses[i.name] or i.name in inputs]
    if len(kept) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(kept)


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that every quantizer handles layer by layer (see the module
    docstring); it computes the same function."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    name_nodes(graph)
    _constants_to_initializers(graph)
    names = _Names(graph)
    _gemm_to_matmul(graph, names)
    _untie(graph, names)
    _drop_unused_initializers(graph)
    return result


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used directly as ``Gather`` indices into a constant table (token ids
    into an embedding): input name -> the table's size along the gathered axis (for
    several tables, the smallest). Valid indices are ``[-size, size - 1]`` (ONNX
    ``Gather``). ONNX Runtime refuses an index outside; OpenVINO's Gather answers zeros
    for it instead, so the model that serves an OpenVINO engine checks these bounds
    itself. Pure; the main graph only."""
    graph = model.graph
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    inputs = {i.name for i in graph.input} - set(tables)
    bounds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in inputs:
            continue
        dims = tables.get(node.input[0])
        if not dims:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if not -len(dims) <= axis < len(dims):
            continue
        size = int(dims[axis])
        name = node.input[1]
        bounds[name] = min(size, bounds.get(name, size))
    return bounds
