"""Decode KServe v2 inference bodies (JSON, with Triton's binary tensor extension).

Used off the request path only: for sampled requests kept for drift monitoring and
for comparing shadow answers with stable ones.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def decode(body: bytes, header_length: int | None, key: str) -> dict[str, np.ndarray]:
    """Tensors of a request (``key="inputs"``) or response (``key="outputs"``).

    ``header_length`` is ``Inference-Header-Content-Length``: the size of the JSON part
    when binary tensors follow it; ``None`` when the whole body is JSON.
    """
    split = len(body) if header_length is None else header_length
    header: dict[str, Any] = json.loads(body[:split])
    offset = split
    tensors: dict[str, np.ndarray] = {}
    for spec in header.get(key, []):
        dtype = DTYPES.get(spec.get("datatype", ""))
        shape = spec.get("shape", [])
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = body[offset : offset + size]
            offset += size
            if dtype is not None:
                tensors[spec["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        elif dtype is not None and "data" in spec:
            tensors[spec["name"]] = np.asarray(spec["data"], dtype=dtype).reshape(shape)
    return tensors


def agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tolerance: float = 1e-3) -> bool:
    """Same outputs, within ``tolerance`` absolute and relative, on the names both carry."""
    common = a.keys() & b.keys()
    if not common:
        return False
    return all(
        a[n].shape == b[n].shape and np.allclose(a[n], b[n], rtol=tolerance, atol=tolerance)
        for n in common
    )
