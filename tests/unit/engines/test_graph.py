"""Graph normalization before quantization, and the quantizers on every graph shape:
the function is unchanged, every layer has a name and its own weight, and the layers
a build selects or keeps in FP32 are exactly the ones quantized or not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shipway.engines import graph, quantize
from shipway.engines.calibration import CalibrationMethod
from tests.support import graphs


def outputs(model: onnx.ModelProto | bytes, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed)


def sample(npz: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(npz)) as archive:
        return {k: archive[k] for k in archive.files}


@pytest.mark.parametrize(
    "builder",
    [graphs.gemm_classifier, graphs.unnamed_mlp, graphs.conv_net, graphs.tied_weights],
)
def test_normalize_keeps_the_function_and_gives_each_layer_a_name_and_its_own_weight(
    builder,  # type: ignore[no-untyped-def]
) -> None:
    model_bytes, npz = builder()
    model = onnx.load_from_string(model_bytes)
    normalized = graph.normalize(model)
    onnx.checker.check_model(normalized)
    feed = sample(npz)
    for before, after in zip(outputs(model, feed), outputs(normalized, feed), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    names = [n.name for n in normalized.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert not any(n.op_type in ("Gemm", "Constant") for n in normalized.graph.node)
    layers = graph.weighted_nodes(normalized)
    weights = [n.input[1] for n in normalized.graph.node if n.name in layers]
    assert len(set(weights)) == len(weights)  # no weight read by two layers
    assert onnx.load_from_string(model_bytes) == model  # normalize works on a copy


def test_gemm_attributes_fold_into_matmul_constants() -> None:
    rng = np.random.default_rng(0)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [6, 4])  # transposed input
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])
    gemm = helper.make_node(
        "Gemm", ["a", "B", "C"], ["y"], "g", alpha=0.5, beta=2.0, transA=1, transB=1
    )
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "C"),
    ]
    model = helper.make_model(
        helper.make_graph([gemm], "g", [a], [y], inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    normalized = graph.normalize(model)
    assert [n.op_type for n in normalized.graph.node] == ["Transpose", "MatMul", "Add"]
    assert graph.weighted_nodes(normalized) == ["g"]  # the layer keeps its name
    feed = {"a": rng.normal(size=(6, 4)).astype(np.float32)}
    np.testing.assert_allclose(outputs(normalized, feed)[0], outputs(model, feed)[0], rtol=1e-5)


def test_nodes_get_unique_names_and_only_real_layers_count() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], "dup"),
        helper.make_node("MatMul", ["r", "w"], ["m"], "dup"),  # weight is an input
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x, w], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    assert graph.name_nodes(model.graph) == 2
    assert [n.name for n in model.graph.node] == ["dup", "MatMul_1", "Relu_2"]
    # A MatMul whose second operand is a graph input has no constant weight: nothing to
    # quantize, and saying so is true.
    assert graph.weighted_nodes(model) == []


def test_static_and_dynamic_int8_keep_in_fp32_exactly_the_layers_asked(tmp_path: Path) -> None:
    # Tied weights: ONNX Runtime alone would quantize the shared weight for the kept
    # layer too. After normalize each layer has its own, so keeping mm1 keeps it float.
    model_bytes, npz = graphs.tied_weights()
    src = tmp_path / "tied.onnx"
    src.write_bytes(model_bytes)
    prepared = quantize.prepare(src, tmp_path / "prepared.onnx")
    layers = graph.weighted_nodes(onnx.load(str(prepared)))
    assert layers == ["mm1", "mm2", "g3"]
    options = quantize.QuantOptions(method=CalibrationMethod.MINMAX)
    cache = tmp_path / "ranges.json"
    quantize.calibrate(prepared, sample(npz), options, cache)

    def float_weight_layers(path: Path) -> set[str]:
        model = onnx.load(str(path))
        floats = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
        return {n.name for n in model.graph.node if n.name in layers and n.input[1] in floats}

    for make in (
        lambda keep, only, dst: quantize.static_qdq(
            prepared, dst, None, options, cache, keep, only
        ),
        lambda keep, only, dst: quantize.dynamic(prepared, dst, keep, only),
    ):
        full = make((), None, tmp_path / "full.onnx")
        assert graph.int8_weights(onnx.load(str(full))) == 3
        kept = make(("mm1",), None, tmp_path / "kept.onnx")
        assert graph.int8_weights(onnx.load(str(kept))) == 2
        assert float_weight_layers(kept) == {"mm1"}
        probe = make((), ("g3",), tmp_path / "probe.onnx")
        assert graph.int8_weights(onnx.load(str(probe))) == 1
        assert float_weight_layers(probe) == {"mm1", "mm2"}
