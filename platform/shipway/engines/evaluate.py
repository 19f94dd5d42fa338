"""Run an ONNX model on CPU over rows of inputs: the accuracy gate's raw material."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shipway.engines.calibration import Arrays, rows, take
from shipway.errors import BuildFailed


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BuildFailed(f"ONNX Runtime cannot load {path.name}: {exc}") from exc


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
