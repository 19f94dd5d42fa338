from __future__ import annotations

import pytest

from shipway.builds import recipes
from shipway.builds.triton_config import ServingOptions, is_batchable, render_config
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

MINILM = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ),
    outputs=(TensorSpec("onnx::Shape_422", "float32", ("b", "s", 384)),),
)


def test_batched_config_drops_the_batch_axis_and_enables_dynamic_batching() -> None:
    text = render_config("m-1", MINILM, "python", ServingOptions(max_batch_size=8))
    assert 'name: "m-1"' in text and 'backend: "python"' in text
    assert "max_batch_size: 8" in text
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in text
    assert '{ name: "onnx::Shape_422" data_type: TYPE_FP32 dims: [ -1, 384 ] }' in text
    assert "dynamic_batching { preferred_batch_size: [ 4, 8 ]" in text
    assert "instance_group [ { kind: KIND_CPU count: 1 } ]" in text


def test_warmup_request_and_backends() -> None:
    text = render_config("m", MINILM, "python", ServingOptions())
    assert "model_warmup [ {" in text and "batch_size: 1" in text
    assert (
        'inputs { key: "input_ids" value: { data_type: TYPE_INT64 dims: [ 128 ] '
        "zero_data: true } }" in text
    )
    assert "model_warmup" not in render_config(
        "m", MINILM, "python", ServingOptions(warmup_length=0)
    )
    trt = render_config("m", MINILM, "tensorrt", ServingOptions())
    assert 'backend: "tensorrt"' in trt and "kind: KIND_GPU" in trt
    assert "kind: KIND_CPU" in render_config("m", MINILM, "onnxruntime", ServingOptions())


def test_fixed_first_axis_means_no_batching() -> None:
    fixed = Signature((TensorSpec("x", "float32", (1, 3)),), (TensorSpec("y", "float32", (1, 3)),))
    assert not is_batchable(fixed)
    text = render_config("m", fixed, "python", ServingOptions())
    assert "max_batch_size: 0" in text
    assert "dims: [ 1, 3 ]" in text
    assert "dynamic_batching" not in text


def test_preferred_batch_sizes_never_exceed_the_maximum() -> None:
    text = render_config("m", MINILM, "python", ServingOptions(max_batch_size=4))
    assert "preferred_batch_size: [ 4 ]" in text


def test_unservable_dtype_is_refused() -> None:
    bad = Signature((TensorSpec("x", "complex64", ("n",)),), (TensorSpec("y", "float32", ("n",)),))
    with pytest.raises(InvalidInput, match="complex64"):
        render_config("m", bad, "python", ServingOptions())


def test_recipe_and_target_parsing() -> None:
    assert recipes.parse("fp32", "onnxruntime-cpu") == (
        recipes.Recipe.FP32,
        recipes.Target.ONNXRUNTIME_CPU,
    )
    with pytest.raises(InvalidInput, match="unknown recipe 'fp8'"):
        recipes.parse("fp8", "onnxruntime-cpu")
    with pytest.raises(InvalidInput, match="unknown target 'tpu'"):
        recipes.parse("fp32", "tpu")
    assert recipes.parse("int8", "tensorrt") == (recipes.Recipe.INT8, recipes.Target.TENSORRT)
    with pytest.raises(InvalidInput, match="no fast float16 kernels on CPU"):
        recipes.parse("fp16", "onnxruntime-cpu")
    with pytest.raises(InvalidInput, match="Q/DQ scales only"):
        recipes.parse("int8-dynamic", "tensorrt")


def test_build_options() -> None:
    options = recipes.BuildOptions.from_dict({"calibration": "entropy", "min_cosine": 0.995})
    assert options.to_dict() == {
        "calibration": "entropy",
        "min_cosine": 0.995,
        "max_fp32_layers": 4,
        "min_top1": 0.99,
        "min_row_cosine": None,
    }
    assert recipes.BuildOptions.from_dict(options.to_dict()) == options
    with pytest.raises(InvalidInput, match="unknown calibration method 'kl'"):
        recipes.BuildOptions.from_dict({"calibration": "kl"})
    with pytest.raises(InvalidInput, match="min_cosine must be within"):
        recipes.BuildOptions(min_cosine=1.5)
    with pytest.raises(InvalidInput, match="min_top1 must be within"):
        recipes.BuildOptions.from_dict({"min_top1": 1.2})
    assert recipes.BuildOptions.from_dict({"min_top1": 0.95}).min_top1 == 0.95
    with pytest.raises(InvalidInput, match="unknown build options"):
        recipes.BuildOptions.from_dict({"colour": "red"})
