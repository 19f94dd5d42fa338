"""Run an ONNX model on CPU over rows of inputs: the accuracy gate's raw material.

Rows as ``shipway.registry.signature`` defines them (``calibration.Rows``): inputs
with the batch axis are fed ``batch`` rows at a time with the constant inputs whole,
and the outputs, which all carry the batch axis first, are concatenated back. A model
without a batch axis runs once, on its whole sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shipway.engines.calibration import Arrays, Rows, rows, take
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
    """Rows per run. A fixed first axis is not a batch axis (such a model's sample is
    one request, run whole), so every model with rows takes ``preferred`` at a time."""
    return preferred


def run(sess: ort.InferenceSession, inputs: Arrays, batch: int = 16) -> Arrays:
    """All outputs for all rows, computed ``batch`` rows at a time; ``Rows`` without a
    split input (no batch axis) run once, as the one request they are."""
    names = [o.name for o in sess.get_outputs()]
    if isinstance(inputs, Rows) and inputs.constants >= inputs.keys():
        return dict(zip(names, _run(sess, names, inputs), strict=True))
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, rows(inputs), batch):
        chunk = take(inputs, slice(start, start + batch))
        outputs = _run(sess, names, chunk)
        for name, value in zip(names, outputs, strict=True):
            if value.ndim == 0 or value.shape[0] != rows(chunk):
                raise BuildFailed(
                    f"output {name!r} has shape {list(value.shape)} for {rows(chunk)} input "
                    "rows: its first axis is not the batch axis the signature declares"
                )
            parts[name].append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}


def _run(sess: ort.InferenceSession, names: list[str], feed: Arrays) -> list[np.ndarray]:
    try:
        return list(sess.run(names, dict(feed)))
    except Exception as exc:
        raise BuildFailed(f"the model failed on held-out inputs: {exc}") from exc
