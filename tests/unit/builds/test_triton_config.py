from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipway.builds import recipes
from shipway.builds.packaging import package_repository
from shipway.builds.triton_config import (
    ServingOptions,
    is_batchable,
    render_config,
    warmup_bytes,
    warmup_file,
    warmup_request,
)
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec, load_model, read_signature
from tests.support.signatures import CASES

# As read_signature gives MiniLM: the outputs' first axes named from shape inference.
MINILM = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ),
    outputs=(TensorSpec("onnx::Shape_422", "float32", ("batch", "seq", 384)),),
)


def signature_of(case: str) -> Signature:
    return read_signature(load_model(CASES[case]().onnx))


def test_batched_config_drops_the_batch_axis_and_enables_dynamic_batching() -> None:
    text = render_config("m-1", MINILM, "python", ServingOptions(max_batch_size=8))
    assert 'name: "m-1"' in text and 'backend: "python"' in text
    assert "max_batch_size: 8" in text
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in text
    assert '{ name: "onnx::Shape_422" data_type: TYPE_FP32 dims: [ -1, 384 ] }' in text
    assert "dynamic_batching { preferred_batch_size: [ 4, 8 ]" in text
    assert "instance_group [ { kind: KIND_CPU count: 1 } ]" in text
    assert "reshape" not in text


# max_batch_size, then each tensor's dims, as config.pbtxt must declare them so that a
# request in the model's own shape is served (a rank-0 tensor travels as [1]).
CONFIGS = {
    "scalar-scale": (0, {"x": "-1, 4", "scale": "1", "y": "-1, 4"}),
    "vector": (0, {"x": "-1", "y": "-1"}),  # rank 1: batching would make it [rows, 1]
    "fixed": (0, {"x": "1, 4", "y": "1, 4"}),
    "shared-length": (0, {"x": "-1, -1", "a": "-1", "y": "-1, -1"}),
    "column-mean": (0, {"x": "-1, 4", "y": "4"}),
    "bias": (0, {"x": "-1, -1", "b": "4", "y": "-1, -1"}),
    "tokens": (8, {"ids": "-1", "mask": "-1", "y": "-1"}),
    "mixed-ranks": (
        0,
        {"x": "-1, -1, 4", "w": "4", "scale": "1", "mask": "-1, -1", "y": "-1, -1", "count": "-1"},
    ),
    "scalar-output": (0, {"x": "-1, 4", "y": "-1, 4", "total": "1"}),
    "scalar-only": (0, {"s": "1", "y": "1"}),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_config_for_every_kind_of_signature(case: str) -> None:
    max_batch_size, dims = CONFIGS[case]
    signature = signature_of(case)
    text = render_config(case, signature, "python", ServingOptions(max_batch_size=8))
    assert f"max_batch_size: {max_batch_size}\n" in text
    assert is_batchable(signature) is (max_batch_size > 0)
    assert ("dynamic_batching" in text) is (max_batch_size > 0)
    assert "reshape" not in text  # Triton refuses an empty reshape without batching
    specs = {s.name: s for s in (*signature.inputs, *signature.outputs)}
    assert set(specs) == set(dims)
    for name, expected in dims.items():
        dtype = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[specs[name].dtype]
        assert f'{{ name: "{name}" data_type: {dtype} dims: [ {expected} ] }}' in text


def test_max_batch_size_zero_in_the_options_turns_batching_off() -> None:
    text = render_config("m", MINILM, "python", ServingOptions(max_batch_size=0))
    assert "max_batch_size: 0" in text and "dynamic_batching" not in text
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1, -1 ] }' in text


@pytest.mark.parametrize(
    ("case", "batched", "shapes"),
    [
        # Batched by Triton: one row without its batch axis (Triton adds it).
        ("tokens", True, {"ids": (7,), "mask": (7,)}),
        # Not batched: the first row, constants whole, rank 0 as [1].
        ("bias", False, {"x": (1, 4), "b": (4,)}),
        ("scalar-scale", False, {"x": (1, 4), "scale": (1,)}),
        ("mixed-ranks", False, {"x": (1, 6, 4), "w": (4,), "scale": (1,), "mask": (1, 6)}),
        # No batch axis: the sample is one request, sent whole.
        ("column-mean", False, {"x": (8, 4)}),
        ("fixed", False, {"x": (1, 4)}),
        ("scalar-only", False, {"s": (1,)}),
    ],
)
def test_warmup_request_is_the_reference_samples_first_row(
    case: str, batched: bool, shapes: dict[str, tuple[int, ...]]
) -> None:
    signature, sample = signature_of(case), CASES[case]().sample(8)
    request = warmup_request(signature, sample, batched)
    assert {name: a.shape for name, a in request.items()} == shapes
    for name, array in request.items():
        source = sample[name]
        if name in signature.batched_inputs:
            source = source[0] if batched else source[:1]
        assert np.array_equal(array.reshape(source.shape), source)  # real values
        assert array.dtype == source.dtype and array.flags.c_contiguous


def test_warmup_reads_the_reference_row_from_files_once_per_load() -> None:
    signature, sample = signature_of("bias"), CASES["bias"]().sample(8)
    request = warmup_request(signature, sample, batched=False)
    text = render_config("m", signature, "python", ServingOptions(), request)
    assert "model_warmup [ {" in text
    assert "batch_size: 1\n" in text  # Triton silently skips a warm-up of batch size 0
    assert (
        'inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1, 4 ] '
        'input_data_file: "0-x.bin" } }' in text
    )
    assert 'inputs { key: "b" value: { data_type: TYPE_FP32 dims: [ 4 ] ' in text
    assert "zero_data" not in text and "128" not in text
    assert "model_warmup" not in render_config("m", signature, "python", ServingOptions())
    off = ServingOptions(warmup=False)
    assert "model_warmup" not in render_config("m", signature, "python", off, request)


def test_warmup_bytes_are_raw_elements_and_length_prefixed_strings() -> None:
    assert warmup_bytes(np.array([[1, 2]], np.int64)) == np.array([1, 2], np.int64).tobytes()
    words = np.array([b"ab", "c"], dtype=object)  # Triton's TYPE_STRING layout
    assert warmup_bytes(words) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def test_warmup_file_names_are_safe_and_distinct() -> None:
    assert warmup_file(0, "onnx::Shape/422") == "0-onnx__Shape_422.bin"
    assert warmup_file(1, "a b") != warmup_file(2, "a b")


@pytest.mark.parametrize("case", ["tokens", "mixed-ranks", "scalar-only"])
def test_packaged_warmup_files_hold_the_rows_raw_bytes(case: str, tmp_path: Path) -> None:
    made = CASES[case]()
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(made.onnx)
    signature, sample = signature_of(case), made.sample(8)
    folder = package_repository(
        tmp_path / "repo",
        "m",
        onnx_path,
        signature,
        recipes.Target.ONNXRUNTIME_CPU,
        sample=sample,
    )
    text = (folder / "config.pbtxt").read_text()
    request = warmup_request(signature, sample, is_batchable(signature))
    for i, spec in enumerate(signature.inputs):
        raw = (folder / "warmup" / warmup_file(i, spec.name)).read_bytes()
        array = np.frombuffer(raw, dtype=spec.dtype).reshape(request[spec.name].shape)
        assert np.array_equal(array, request[spec.name])
        assert f'input_data_file: "{warmup_file(i, spec.name)}"' in text
    assert (folder / "1" / "model.onnx").read_bytes() == made.onnx
    assert (folder / "1" / "model.py").exists()


def test_no_sample_means_no_warmup(tmp_path: Path) -> None:
    made = CASES["bias"]()
    (tmp_path / "m.onnx").write_bytes(made.onnx)
    folder = package_repository(
        tmp_path / "repo",
        "m",
        tmp_path / "m.onnx",
        signature_of("bias"),
        recipes.Target.ONNXRUNTIME_CPU,
    )
    assert "model_warmup" not in (folder / "config.pbtxt").read_text()
    assert not (folder / "warmup").exists()


def test_backends() -> None:
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
        "quantize_embeddings": False,
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
