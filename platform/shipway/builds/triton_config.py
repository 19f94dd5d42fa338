"""Generate Triton ``config.pbtxt`` text from a model signature. Pure; no I/O.

The text format is protobuf text of Triton's ``ModelConfig``; see
https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_configuration.md
and ``model_config.proto`` in triton-inference-server/common.

How a signature becomes ``max_batch_size``, ``dims`` and the warm-up, so that a
request in the model's own shape is served (rows and the batch axis as
``shipway.registry.signature`` defines them):

- **Batching** (``max_batch_size`` > 0, dynamic batching) needs every input and
  output to start with the model's batch axis *and* to have rank 2 or more. Triton
  then leaves the batch axis out of ``dims`` and clients send ``[rows, *dims]``. A
  rank-1 ``[batch]`` tensor would need ``dims: [1]`` with an empty ``reshape``, and
  clients would have to send ``[rows, 1]`` instead of ``[rows]``: such a model is not
  batched, so that its own shape stays the one on the wire.
- **Not batched** (``max_batch_size: 0``): ``dims`` is the whole shape, ``-1`` for a
  symbolic or unknown size.
- **Rank 0**: Triton has no rank-0 tensors on the wire. ``dims`` must name at least
  one axis ("must specify 'dims'"), an empty ``reshape`` is refused in a model that
  does not batch ("cannot have empty reshape for non-batching model"), and a request
  must match ``dims`` exactly ("Expected [1], got []"). A rank-0 tensor is therefore
  declared ``dims: [1]`` without ``reshape`` and travels as ``[1]``; the Python-backend
  model (``triton_models/onnxruntime_python.py``) gives ONNX Runtime the scalar and
  answers a rank-0 output as ``[1]``. This is the one case where the wire shape is not
  the model's own.
- **Warm-up**: one request built from the registered reference sample — its first
  row, with the inputs that are the same for every row whole — written as raw files
  under ``<model>/warmup/`` (``input_data_file``) and sent once per instance at load.
  Triton fails the load when it fails ("failed to run warmup sample ..."), so a model
  that cannot serve its own reference row never becomes ready, and says why. Triton
  skips a warm-up with ``batch_size: 0`` without a word, so it is always 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from shipway.errors import InvalidInput
from shipway.registry.signature import Dim, Signature, TensorSpec

# numpy dtype name -> Triton data type
TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "object": "TYPE_STRING",  # ONNX strings; KServe's BYTES
}

WARMUP_DIR = "warmup"  # Triton reads input_data_file from <model>/warmup/


@dataclass(frozen=True)
class ServingOptions:
    """How Triton should serve a build; defaults suit a CPU replica on a small machine."""

    max_batch_size: int = 8
    instance_count: int = 1
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    warmup: bool = True  # send a reference row at load time, when a sample is given


# Backend name -> (instance kind, model file). ``python`` is the local Triton's Python
# backend running ONNX Runtime; ``onnxruntime`` and ``tensorrt`` are the official
# image's backends.
BACKENDS = {
    "python": ("KIND_CPU", "model.onnx"),
    "onnxruntime": ("KIND_CPU", "model.onnx"),
    "tensorrt": ("KIND_GPU", "model.plan"),
}


def is_batchable(signature: Signature) -> bool:
    """Whether Triton may batch requests: every tensor starts with the batch axis
    and has rank 2 or more (see the module docstring for why not rank 1)."""
    batch = signature.batch_dim
    tensors = (*signature.inputs, *signature.outputs)
    return batch is not None and all(len(s.shape) >= 2 and s.shape[0] == batch for s in tensors)


def batches(signature: Signature, options: ServingOptions) -> bool:
    """Whether the configuration batches: the model allows it and the options ask."""
    return is_batchable(signature) and options.max_batch_size > 0


def dims(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    """Triton ``dims``: without the batch axis when batched, ``-1`` for a free size,
    ``[1]`` for rank 0."""
    shape: tuple[Dim, ...] = spec.shape[1:] if batched else spec.shape
    return tuple(d if isinstance(d, int) else -1 for d in shape) or (1,)


def _dtype(spec: TensorSpec) -> str:
    try:
        return TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise InvalidInput(
            f"tensor {spec.name!r} has dtype {spec.dtype}, which Triton cannot serve"
        ) from None


def _list(values: tuple[int, ...]) -> str:
    return "[ " + ", ".join(map(str, values)) + " ]"


def _tensor(spec: TensorSpec, batched: bool) -> str:
    return (
        f"  {{ name: {json.dumps(spec.name)} data_type: {_dtype(spec)} "
        f"dims: {_list(dims(spec, batched))} }}"
    )


def warmup_file(index: int, name: str) -> str:
    """The raw file of input ``index`` under ``<model>/warmup/``; names may hold ``/``."""
    return f"{index}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.bin"


def warmup_bytes(array: np.ndarray) -> bytes:
    """An ``input_data_file``'s content: the raw elements in row-major order; for
    ``TYPE_STRING`` each element as a 4-byte little-endian length and its bytes."""
    if array.dtype != np.object_:
        return np.ascontiguousarray(array).tobytes()
    items = (v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def warmup_request(
    signature: Signature, sample: Mapping[str, np.ndarray], batched: bool
) -> dict[str, np.ndarray]:
    """The warm-up request's inputs, in the shapes its ``dims`` declare.

    From the reference sample (checked against the signature at registration): its
    first row, the inputs that are the same for every row whole, and the whole
    sample for a model without a batch axis (its one request). Batched, the batch
    axis is left out, as Triton adds it. Rank 0 travels as ``[1]``.
    """
    split = signature.batched_inputs
    request = {}
    for spec in signature.inputs:
        array = np.asarray(sample[spec.name])
        if spec.name in split:
            array = array[0] if batched else array[:1]
        request[spec.name] = np.ascontiguousarray(array.reshape(array.shape or (1,)))
    return request


def render_config(
    model_name: str,
    signature: Signature,
    backend: str,
    options: ServingOptions,
    warmup: Mapping[str, np.ndarray] | None = None,
) -> str:
    """The ``config.pbtxt`` text. ``warmup`` (from ``warmup_request``) adds a warm-up
    that reads each input from ``warmup/<warmup_file(i, name)>``, which the caller
    writes as the array's raw bytes. Raises ``InvalidInput`` for a dtype Triton
    cannot serve."""
    batched = batches(signature, options)
    lines = [
        f"name: {json.dumps(model_name)}",
        f"backend: {json.dumps(backend)}",
        f"max_batch_size: {options.max_batch_size if batched else 0}",
        "input [",
        ",\n".join(_tensor(s, batched) for s in signature.inputs),
        "]",
        "output [",
        ",\n".join(_tensor(s, batched) for s in signature.outputs),
        "]",
        f"instance_group [ {{ kind: {BACKENDS[backend][0]} count: {options.instance_count} }} ]",
    ]
    if batched:
        sizes = [b for b in options.preferred_batch_sizes if b <= options.max_batch_size]
        lines.append(
            "dynamic_batching { "
            f"preferred_batch_size: [ {', '.join(map(str, sizes))} ] "
            f"max_queue_delay_microseconds: {options.max_queue_delay_us} }}"
        )
    if options.warmup and warmup is not None:
        lines.append(_warmup(signature, warmup))
    return "\n".join(lines) + "\n"


def _warmup(signature: Signature, request: Mapping[str, np.ndarray]) -> str:
    """One request at load time, so the first user request does not pay for lazy
    initialization (allocations, kernel selection) and a model that cannot serve its
    reference row fails its load with ONNX Runtime's words."""
    inputs = [
        f"    inputs {{ key: {json.dumps(spec.name)} value: {{ "
        f"data_type: {_dtype(spec)} dims: {_list(tuple(request[spec.name].shape))} "
        f"input_data_file: {json.dumps(warmup_file(i, spec.name))} }} }}"
        for i, spec in enumerate(signature.inputs)
    ]
    return (
        "model_warmup [ {\n"
        '    name: "reference-row"\n'
        "    batch_size: 1\n" + "\n".join(inputs) + "\n} ]"
    )
