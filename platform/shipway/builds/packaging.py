"""Lay out a Triton model repository for a build.

::

    <repo>/<triton-model-name>/config.pbtxt
    <repo>/<triton-model-name>/1/model.onnx
    <repo>/<triton-model-name>/1/model.py     (Python backend only)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from shipway.builds.recipes import Target
from shipway.builds.triton_config import ServingOptions, render_config
from shipway.registry.signature import Signature

_PYTHON_MODEL = Path(__file__).parent / "triton_models" / "onnxruntime_python.py"


def triton_model_name(model: str, build_id: str) -> str:
    """Unique per build, so two builds of one model can be loaded side by side."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{build_id}")


def backend_for(target: Target) -> str:
    # The local Triton from the nvidia-pytriton wheel has the Python backend only;
    # ONNX Runtime runs inside it. The official image's onnxruntime backend and the
    # TensorRT plan backend come with their own targets.
    return {Target.ONNXRUNTIME_CPU: "python"}[target]


def package_repository(
    repo: Path,
    model_name: str,
    onnx_path: Path,
    signature: Signature,
    target: Target,
    options: ServingOptions | None = None,
) -> Path:
    """Write the repository for one model under ``repo``; returns the model folder."""
    backend = backend_for(target)
    folder = repo / model_name
    version_dir = folder / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(
        render_config(model_name, signature, backend, options or ServingOptions())
    )
    shutil.copyfile(onnx_path, version_dir / "model.onnx")
    if backend == "python":
        shutil.copyfile(_PYTHON_MODEL, version_dir / "model.py")
    return folder
