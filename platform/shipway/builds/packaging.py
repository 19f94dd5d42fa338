"""Lay out a Triton model repository for a build.

::

    <repo>/<triton-model-name>/config.pbtxt
    <repo>/<triton-model-name>/1/model.onnx   (model.plan for TensorRT)
    <repo>/<triton-model-name>/1/model.py     (Python backend only)
    <repo>/<triton-model-name>/1/shipway_padding.py  (its trimming arithmetic; trimmed only)
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
import onnxruntime as ort

from shipway.builds.accuracy import MASK
from shipway.builds.recipes import Target
from shipway.builds.triton_config import (
    BACKENDS,
    WARMUP_DIR,
    ServingOptions,
    batches,
    free_outputs,
    render_config,
    trim_plan,
    warmup_bytes,
    warmup_file,
    warmup_request,
)
from shipway.builds.triton_models import padding
from shipway.registry.signature import Signature

_PYTHON_MODEL = Path(__file__).parent / "triton_models" / "onnxruntime_python.py"
_PADDING = Path(__file__).parent / "triton_models" / "padding.py"


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


def probe_fixed_outputs(
    engine_path: Path,
    signature: Signature,
    mask_input: str | None,
    sample: Mapping[str, np.ndarray] | None,
) -> dict[str, int]:
    """The outputs whose axis 1 the signature leaves free (``triton_config.free_outputs``)
    that keep one size when the model runs (ONNX Runtime, CPU) on the sample's first row
    at its length and one token longer (padding: mask 0): name -> that size.

    Shape inference often cannot name a pooled output's width (MiniLM's is
    ``Concat461_dim_1``); trimming needs to know that it does not follow the sequence
    length. Empty (nothing is trusted, the model is not trimmed) without a sample, or
    when either run fails.
    """
    names = free_outputs(signature, mask_input)
    if not names or sample is None or mask_input not in sample:
        return {}
    mask = next(s for s in signature.inputs if s.name == mask_input)
    seq = mask.shape[1] if len(mask.shape) == 2 else None
    batched = set(signature.batched_inputs)
    request = {
        spec.name: np.asarray(sample[spec.name])[:1]
        if spec.name in batched
        else np.asarray(sample[spec.name])
        for spec in signature.inputs
    }
    sequence = {s.name for s in signature.inputs if seq is not None and s.shape[1:2] == (seq,)}
    length = request[mask_input].shape[1] if request[mask_input].ndim == 2 else 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sizes: list[tuple[int, ...]] = []
    try:
        session = ort.InferenceSession(str(engine_path), options, ["CPUExecutionProvider"])
        for run_length in (length, length + 1):
            feeds = {
                name: padding.fit(value, run_length) if name in sequence else value
                for name, value in request.items()
            }
            outputs = session.run(list(names), feeds)
            sizes.append(tuple(int(np.shape(o)[1]) if np.ndim(o) >= 2 else -1 for o in outputs))
    except Exception:
        return {}
    return {n: a for n, a, b in zip(names, *sizes, strict=True) if a == b and a >= 0}


def package_repository(
    repo: Path,
    model_name: str,
    engine_path: Path,
    signature: Signature,
    target: Target,
    options: ServingOptions | None = None,
    onnx_backend: str = "python",
    sample: Mapping[str, np.ndarray] | None = None,
    mask_input: str | None = MASK,
) -> Path:
    """Write the repository for one model under ``repo``; returns the model folder.

    ``sample`` is the version's reference sample; without it there is no warm-up.
    ``mask_input`` names the attention mask the served model trims padding by
    (``triton_config.trim_plan``; ``None``: no mask, nothing trimmed); outputs whose
    axis 1 the signature leaves free are probed on the sample (``probe_fixed_outputs``).
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
    trim = None
    if options.trim_padding and backend == "python" and batches(signature, options):
        fixed = probe_fixed_outputs(engine_path, signature, mask_input, sample)
        trim = trim_plan(signature, mask_input, options, backend, fixed)
    (folder / "config.pbtxt").write_text(
        render_config(model_name, signature, backend, options, warmup, trim)
    )
    shutil.copyfile(engine_path, version_dir / BACKENDS[backend][1])
    if backend == "python":
        shutil.copyfile(_PYTHON_MODEL, version_dir / "model.py")
    if trim is not None:  # any other model is packaged as before
        shutil.copyfile(_PADDING, version_dir / "shipway_padding.py")
    return folder
