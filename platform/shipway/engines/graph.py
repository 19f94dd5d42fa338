"""Facts about an ONNX graph that steer a build; pure functions of the model proto."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def is_qdq(model: onnx.ModelProto) -> bool:
    """True for an already-quantized Q/DQ model (quantization-aware training, or a
    model quantized elsewhere): its scales are part of the model, so calibrating it
    again would only lose them."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def weighted_nodes(
    model: onnx.ModelProto, op_types: Iterable[str] = ("MatMul", "Gemm")
) -> list[str]:
    """Nodes of ``op_types`` with a constant weight operand, in graph order.

    These are the layers quantization changes (activation-by-activation MatMuls such
    as attention scores stay in float), so they are the candidates of the
    sensitivity sweep.
    """
    wanted = set(op_types)
    constants = {init.name for init in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in wanted and node.name and any(i in constants for i in node.input[1:])
    ]
