"""TensorRT engines from Q/DQ (or FP16) ONNX, as strongly typed networks.

TensorRT is imported lazily and only here: a CPU-only control plane and worker never
need it. Where TensorRT or a GPU is missing, ``require`` fails the build at once and
says which. Precision comes from the ONNX graph itself (Q/DQ for INT8, float16
tensors for FP16): TensorRT 10 builds it with the ``STRONGLY_TYPED`` flag, TensorRT
11 always does (the implicit INT8 calibrator and the precision flags are gone).

Engines are cached by (model digest, recipe, TensorRT version, GPU compute
capability); a serialized timing cache is kept per TensorRT version and GPU, so a
rebuild of a similar model reuses the tactic timings.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipway.errors import BuildFailed
from shipway.registry.signature import Signature

WORKSPACE_BYTES = 2 << 30


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "8.9"


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes of one input, for the optimization profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _import_tensorrt() -> Any:
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BuildFailed(
            "target 'tensorrt' needs the TensorRT Python package on the build worker "
            f"(pip install tensorrt), and it is not installed here: {exc}"
        ) from None
    return tensorrt


def detect_gpu() -> Gpu | None:
    """The first CUDA GPU, from ``nvidia-smi`` (no CUDA Python binding needed)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, capability = first.rpartition(",")
    return Gpu(name.strip(), capability.strip()) if capability.strip() else None


def require() -> tuple[Any, Gpu]:
    """TensorRT and a GPU, or a build failure that names what is missing."""
    gpu = detect_gpu()
    if gpu is None:
        raise BuildFailed(
            "target 'tensorrt' needs an NVIDIA GPU on the build worker, and none is "
            "visible here (nvidia-smi missing or lists no GPU); build for "
            "'onnxruntime-cpu' instead, or run the worker on a GPU node"
        )
    return _import_tensorrt(), gpu


def profiles(
    signature: Signature, max_batch: int, opt_batch: int, seq: tuple[int, int, int]
) -> list[ShapeProfile]:
    """Shapes from the signature: the batch axis over 1..max_batch, other free axes
    (sequence length) over ``seq`` = (min, opt, max); fixed axes as declared."""

    def span(axis: int, dim: int | str | None) -> tuple[int, int, int]:
        if isinstance(dim, int):
            return dim, dim, dim
        return (1, opt_batch, max_batch) if axis == 0 else seq

    result = []
    for spec in signature.inputs:
        spans = [span(axis, dim) for axis, dim in enumerate(spec.shape)]
        lo, mid, hi = (tuple(s[i] for s in spans) for i in range(3))
        result.append(ShapeProfile(spec.name, lo, mid, hi))
    return result


def cache_key(onnx_path: Path, recipe: str, trt_version: str, gpu: Gpu) -> str:
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    return hashlib.sha256(
        f"{digest}|{recipe}|{trt_version}|{gpu.compute_capability}".encode()
    ).hexdigest()[:32]


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    recipe: str,
    shapes: list[ShapeProfile],
    cache_dir: Path,
) -> dict[str, Any]:
    """Compile ``onnx_path`` into ``plan_path``; returns facts for the build report."""
    trt, gpu = require()
    key = cache_key(onnx_path, recipe, trt.__version__, gpu)
    cached = cache_dir / "engines" / f"{key}.plan"
    if cached.exists():
        shutil.copyfile(cached, plan_path)
        return {"engine_cache": "hit", "key": key, "tensorrt": trt.__version__, "gpu": gpu.name}

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strongly_typed) if strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildFailed(f"TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for shape in shapes:
        profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
    config.add_optimization_profile(profile)
    timing_path = cache_dir / "timing" / f"{trt.__version__}-sm{gpu.compute_capability}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailed("TensorRT could not build an engine for this model (see the worker log)")
    plan_path.write_bytes(bytes(serialized))
    for path, data in (
        (cached, bytes(serialized)),
        (timing_path, bytes(config.get_timing_cache().serialize())),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {"engine_cache": "miss", "key": key, "tensorrt": trt.__version__, "gpu": gpu.name}
