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
    when binary tensors follow it; ``None`` when the whole body is JSON. ``BYTES``
    tensors come back as object arrays of ``bytes`` (binary: each element a 4-byte
    little-endian length and its bytes, per Triton's binary data extension; JSON:
    strings, UTF-8 encoded); tensors of other datatypes (``BF16``) are left out.
    """
    split = len(body) if header_length is None else header_length
    header: dict[str, Any] = json.loads(body[:split])
    offset = split
    tensors: dict[str, np.ndarray] = {}
    for spec in header.get(key, []):
        dtype = DTYPES.get(spec.get("datatype", ""))
        shape = spec.get("shape", [])
        size = (spec.get("parameters") or {}).get("binary_data_size")
        bytes_tensor = spec.get("datatype") == "BYTES"
        if size is not None:
            chunk = body[offset : offset + size]
            offset += size
            if bytes_tensor:
                tensors[spec["name"]] = _bytes_elements(chunk).reshape(shape)
            elif dtype is not None:
                tensors[spec["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        elif bytes_tensor and "data" in spec:
            elements = [v.encode() if isinstance(v, str) else v for v in _flat(spec["data"])]
            tensors[spec["name"]] = _objects(elements).reshape(shape)
        elif dtype is not None and "data" in spec:
            tensors[spec["name"]] = np.asarray(spec["data"], dtype=dtype).reshape(shape)
    return tensors


def _bytes_elements(chunk: bytes) -> np.ndarray:
    elements, at = [], 0
    while at < len(chunk):
        length = int.from_bytes(chunk[at : at + 4], "little")
        elements.append(chunk[at + 4 : at + 4 + length])
        at += 4 + length
    return _objects(elements)


def _objects(elements: list[Any]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [v for item in data for v in _flat(item)]
