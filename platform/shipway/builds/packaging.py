"""Lay out a Triton model repository for a build.

::

    <repo>/<triton-model-name>/config.pbtxt
    <repo>/<triton-model-name>/1/model.onnx   (model.plan for TensorRT)
    <repo>/<triton-model-name>/1/model.py     (Python backend only)
    <repo>/<triton-model-name>/warmup/*.bin   (the warm-up request, raw, row-major)

The warm-up request comes from the registered reference sample (see
``triton_config``): real shapes and values the model is known to run on, since
registration ran it on them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from shipway.builds.recipes import Target
from shipway.builds.triton_config import (
    BACKENDS,
    WARMUP_DIR,
    ServingOptions,
    batches,
    render_config,
    warmup_bytes,
    warmup_file,
    warmup_request,
)
from shipway.registry.signature import Signature

_PYTHON_MODEL = Path(__file__).parent / "triton_models" / "onnxruntime_python.py"


def triton_model_name(model: str, build_id: str) -> str:
    """Unique per build, so two builds of one model can be loaded side by side."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{build_id}")


def backend_for(target: Target, onnx_backend: str = "python") -> str:
    """The Triton backend for a target. The local Triton from the nvidia-pytriton wheel
    has the Python backend only, with ONNX Runtime running inside it; the official
    Triton image serves the same ONNX with its ``onnxruntime`` backend."""
    if target is Target.TENSORRT:
        return "tensorrt"
    if onnx_backend not in ("python", "onnxruntime"):
        raise ValueError(f"unknown ONNX backend {onnx_backend!r}")
    return onnx_backend


def package_repository(
    repo: Path,
    model_name: str,
    engine_path: Path,
    signature: Signature,
    target: Target,
    options: ServingOptions | None = None,
    onnx_backend: str = "python",
    sample: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write the repository for one model under ``repo``; returns the model folder.

    ``sample`` is the version's reference sample; without it there is no warm-up.
    """
    backend = backend_for(target, onnx_backend)
    options = options or ServingOptions()
    folder = repo / model_name
    version_dir = folder / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    warmup = None
    if options.warmup and sample is not None:
        warmup = warmup_request(signature, sample, batches(signature, options))
        (folder / WARMUP_DIR).mkdir(exist_ok=True)
        for i, spec in enumerate(signature.inputs):
            (folder / WARMUP_DIR / warmup_file(i, spec.name)).write_bytes(
                warmup_bytes(warmup[spec.name])
            )
    (folder / "config.pbtxt").write_text(
        render_config(model_name, signature, backend, options, warmup)
    )
    shutil.copyfile(engine_path, version_dir / BACKENDS[backend][1])
    if backend == "python":
        shutil.copyfile(_PYTHON_MODEL, version_dir / "model.py")
    return folder
