"""Run an ONNX model on CPU over rows of inputs: the accuracy gate's raw material."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shipway.engines.calibration import Arrays, rows, take
from shipway.errors import BuildFailed
from shipway.registry.signature import Signature


def session(model: Path | bytes, threads: int = 0) -> ort.InferenceSession:
    """A CPU session over a model file, or over the model's bytes."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        what = model.name if isinstance(model, Path) else "the model"
        raise BuildFailed(f"ONNX Runtime cannot load {what}: {exc}") from exc


def batch_size(signature: Signature, preferred: int = 16) -> int:
    """Rows per run: the model's fixed batch size when it has one."""
    first = {spec.shape[0] for spec in signature.inputs if spec.shape}
    fixed = [d for d in first if isinstance(d, int)]
    return fixed[0] if fixed else preferred


def run(sess: ort.InferenceSession, inputs: Arrays, batch: int = 16) -> Arrays:
    """All outputs for all rows, computed ``batch`` rows at a time."""
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, rows(inputs), batch):
        chunk = take(inputs, slice(start, start + batch))
        try:
            outputs = sess.run(names, chunk)
        except Exception as exc:
            raise BuildFailed(f"the model failed on held-out inputs: {exc}") from exc
        for name, value in zip(names, outputs, strict=True):
            parts[name].append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}
