"""The TensorRT module's pure parts; engine builds run where TensorRT and a GPU exist
(tests/integration/test_optimized_builds.py)."""

from __future__ import annotations

from pathlib import Path

from shipway.engines.tensorrt import Gpu, cache_key, profiles
from shipway.registry.signature import Signature, TensorSpec

SIG = Signature(
    (TensorSpec("ids", "int64", ("b", "s")), TensorSpec("fixed", "float32", ("b", 7))),
    (TensorSpec("y", "float32", ("b", 4)),),
)


def test_profiles_span_batch_and_sequence_and_keep_fixed_axes() -> None:
    ids, fixed = profiles(SIG, max_batch=8, opt_batch=4, seq=(1, 128, 512))
    assert (ids.min, ids.opt, ids.max) == ((1, 1), (4, 128), (8, 512))
    assert (fixed.min, fixed.opt, fixed.max) == ((1, 7), (4, 7), (8, 7))


def test_engine_cache_key_changes_with_model_recipe_version_and_gpu(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    ada, ampere = Gpu("L4", "8.9"), Gpu("A100", "8.0")
    key = cache_key(model, "int8", "10.7", ada)
    assert key == cache_key(model, "int8", "10.7", ada)
    assert (
        len({key, cache_key(model, "fp16", "10.7", ada), cache_key(model, "int8", "11.0", ada)})
        == 3
    )
    assert key != cache_key(model, "int8", "10.7", ampere)
    model.write_bytes(b"two")
    assert key != cache_key(model, "int8", "10.7", ada)
