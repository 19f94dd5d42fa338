"""Generate Triton ``config.pbtxt`` text from a model signature. Pure; no I/O.

The text format is protobuf text of Triton's ``ModelConfig``; see
https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_configuration.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

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


@dataclass(frozen=True)
class ServingOptions:
    """How Triton should serve a build; defaults suit a CPU replica on a small machine."""

    max_batch_size: int = 8
    instance_count: int = 1
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    warmup_length: int = 128  # free non-batch axes (sequence) in the warm-up request; 0: none


# Backend name -> (instance kind, model file). ``python`` is the local Triton's Python
# backend running ONNX Runtime; ``onnxruntime`` and ``tensorrt`` are the official
# image's backends.
BACKENDS = {
    "python": ("KIND_CPU", "model.onnx"),
    "onnxruntime": ("KIND_CPU", "model.onnx"),
    "tensorrt": ("KIND_GPU", "model.plan"),
}


def _dims(spec: TensorSpec, batched: bool) -> str:
    shape = spec.shape[1:] if batched else spec.shape
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape) + " ]"


def _tensor(spec: TensorSpec, batched: bool) -> str:
    try:
        dtype = TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise InvalidInput(
            f"tensor {spec.name!r} has dtype {spec.dtype}, which Triton cannot serve"
        ) from None
    dims = _dims(spec, batched)
    if dims == "[  ]":
        dims = "[ 1 ]"  # Triton wants at least one dimension; reshape keeps it scalar
        return (
            f"  {{ name: {json.dumps(spec.name)} data_type: {dtype} dims: {dims} "
            "reshape: { shape: [ ] } }"
        )
    return f"  {{ name: {json.dumps(spec.name)} data_type: {dtype} dims: {dims} }}"


def is_batchable(signature: Signature) -> bool:
    """Triton batches on the first axis only when every tensor has a free first axis."""
    return all(spec.has_batch_dim for spec in (*signature.inputs, *signature.outputs))


def render_config(
    model_name: str, signature: Signature, backend: str, options: ServingOptions
) -> str:
    batched = is_batchable(signature) and options.max_batch_size > 0
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
    if options.warmup_length:
        lines.append(_warmup(signature, batched, options.warmup_length))
    return "\n".join(lines) + "\n"


def _warmup(signature: Signature, batched: bool, length: int) -> str:
    """One zero-filled request at load time, so the first user request does not pay
    for lazy initialization (allocations, kernel selection)."""
    inputs = []
    for spec in signature.inputs:
        shape = spec.shape[1:] if batched else spec.shape
        dims = ", ".join(str(d) if isinstance(d, int) else str(length) for d in shape) or "1"
        inputs.append(
            f"    inputs {{ key: {json.dumps(spec.name)} value: {{ "
            f"data_type: {TRITON_DTYPES[spec.dtype]} dims: [ {dims} ] zero_data: true }} }}"
        )
    return (
        "model_warmup [ {\n"
        '    name: "zeros"\n'
        f"    batch_size: {1 if batched else 0}\n" + "\n".join(inputs) + "\n} ]"
    )
