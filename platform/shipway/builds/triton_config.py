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
- **Trimming padding** (``trim_plan``): for a batched model
  with an integer or bool mask input ``[batch, seq]`` (``seq`` symbolic) whose other
  tensors carry ``seq`` or a fixed size on axis 1 (``sequence_layout``), and whose built
  engine answers its reference sample trimmed as padded (``packaging.trim_decision``,
  ``trim_check``; an ``int8-dynamic`` engine does not), the config
  carries the parameter ``shipway_trim`` (JSON: the mask, the *sequence inputs* and the
  *token-level outputs* — the tensors whose axis 1 is that same symbolic ``seq``, read
  from the signature, never guessed from values — and the length buckets) and marks
  the sequence inputs ``allow_ragged_batch``. Triton's dynamic batcher otherwise
  batches only requests of equal shapes, so requests sent at their real lengths
  would rarely share a run; ragged, it hands the served model requests of any
  lengths together, and the model groups them by length bucket and runs each group
  trimmed to its longest real row (``triton_models/padding.py``). Answers keep each
  request's shape; token-level outputs are zeros wherever the request's mask is
  zero. The official image's ``onnxruntime`` backend stacks requests itself and
  cannot do either: a build for it that trims is packaged as an ensemble around the
  engine whose first step cuts each request to its length bucket, so equal buckets
  stack, and whose last restores token outputs (``shipway.builds.ensemble``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shipway.builds.accuracy import MASK_TAG
from shipway.builds.triton_models.padding import DEFAULT_BUCKETS, check_buckets
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
TRIM_TAG = "shipway.trim_padding"  # registration tag: "false" serves the model untrimmed


@dataclass(frozen=True)
class ServingOptions:
    """How Triton should serve a build; defaults suit a CPU replica on a small machine."""

    max_batch_size: int = 8
    instance_count: int = 1
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    warmup: bool = True  # send a reference row at load time, when a sample is given
    # trim each batch to its longest real row, by the mask input (see the module
    # docstring); only where the model has one and the backend is ``python``
    trim_padding: bool = True
    # tokens; requests are run together when their longest real rows share a bucket
    length_buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "length_buckets", check_buckets(self.length_buckets))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None


@dataclass(frozen=True)
class TrimPlan:
    """What the served model trims: the mask input, the inputs and outputs whose axis 1
    is the mask's sequence axis, and the length buckets."""

    mask: str
    sequence_inputs: tuple[str, ...]
    token_outputs: tuple[str, ...]
    buckets: tuple[int, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "mask": self.mask,
                "sequence_inputs": list(self.sequence_inputs),
                "token_outputs": list(self.token_outputs),
                "buckets": list(self.buckets),
            }
        )


# Backend name -> (instance kind, model file). ``python`` is the local Triton's Python
# backend running ONNX Runtime; ``onnxruntime`` and ``tensorrt`` are the official
# image's backends.
BACKENDS = {
    "python": ("KIND_CPU", "model.onnx"),
    "onnxruntime": ("KIND_CPU", "model.onnx"),
    "tensorrt": ("KIND_GPU", "model.plan"),
    "openvino": ("KIND_CPU", "model.xml"),  # and model.bin beside it
}

OPENVINO_PARAMETER = "shipway_openvino"  # the local Python-backend model's OpenVINO settings
INDEX_BOUNDS_PARAMETER = "shipway_index_bounds"  # its inputs' Gather bounds (JSON)


def openvino_parameters(
    backend: str, precision: str, index_bounds: Mapping[str, int] | None = None
) -> dict[str, str]:
    """The ``parameters`` of an openvino-cpu build's config, for the inference precision
    the build was gated with (``recipes.openvino_precision``: ``f32`` or ``bf16``).

    ``python`` (the local Triton): ``shipway_openvino``, JSON of the properties the
    Python-backend model compiles with (``triton_models/openvino_python.py``), the
    precision hint always explicit. ``openvino`` (Triton's OpenVINO backend, official
    image; its README's Parameters): ``PERFORMANCE_HINT`` ``LATENCY`` (a dynamic batch
    per instance) and, for bf16, ``HINT_BF16`` ``YES``. That backend takes no key that
    forces f32 (an unknown key fails the load), so on a CPU with bfloat16 an f32 build
    is computed in bf16 there, OpenVINO's default; ``openvino_notes`` says so in the
    config. ``index_bounds`` (``engines.graph.index_bounds`` of the registered model):
    the Python-backend model refuses token ids past their table, as ONNX Runtime does
    (OpenVINO's Gather answers zeros for them). Pure."""
    if backend == "python":
        hint = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        out = {OPENVINO_PARAMETER: json.dumps(hint)}
        if index_bounds:
            out[INDEX_BOUNDS_PARAMETER] = json.dumps(dict(sorted(index_bounds.items())))
        return out
    if backend == "openvino":
        out = {"PERFORMANCE_HINT": "LATENCY"}
        if precision == "bf16":
            out["HINT_BF16"] = "YES"
        return out
    raise ValueError(f"backend {backend!r} does not run OpenVINO")


def openvino_notes(backend: str, precision: str) -> list[str]:
    """Comment lines for the config text: what the official backend cannot be told."""
    if backend == "openvino" and precision == "f32":
        return [
            "# Triton's OpenVINO backend has no parameter forcing f32: on a CPU with",
            "# bfloat16 it computes in bf16 (OpenVINO's default), unlike the gated build.",
        ]
    return []


# Backends a build may trim on: the Python backend trims inside the served model; the
# official image's ``onnxruntime`` and ``openvino`` backends stack requests themselves,
# so an ensemble around the engine trims (``ensemble``). All run the engine the check
# ran (ONNX Runtime, or OpenVINO for openvino-cpu); a TensorRT engine was not checked.
TRIMMING_BACKENDS = ("python", "onnxruntime", "openvino")


def is_batchable(signature: Signature) -> bool:
    """Whether Triton may batch requests: every tensor starts with the batch axis
    and has rank 2 or more (see the module docstring for why not rank 1)."""
    batch = signature.batch_dim
    tensors = (*signature.inputs, *signature.outputs)
    return batch is not None and all(len(s.shape) >= 2 and s.shape[0] == batch for s in tensors)


def batches(signature: Signature, options: ServingOptions) -> bool:
    """Whether the configuration batches: the model allows it and the options ask."""
    return is_batchable(signature) and options.max_batch_size > 0


def trims_padding(tags: Mapping[str, str], enabled: bool = True) -> bool:
    """Whether a registered version's builds trim padding: never when the server's
    setting ``SHIPWAY_SERVING_TRIM_PADDING`` (``enabled``) is false — a kill switch over
    every tag —, else unless its tag says ``shipway.trim_padding=false``. Raises
    ``InvalidInput`` for a tag value other than true or false (checked either way)."""
    value = tags.get(TRIM_TAG)
    if value is not None and value.lower() not in ("true", "false"):
        raise InvalidInput(f"tag {TRIM_TAG!r} must be true or false, got {value!r}")
    return enabled and (value is None or value.lower() == "true")


def trim_off_reason(tags: Mapping[str, str], enabled: bool = True) -> str | None:
    """Why ``trims_padding`` is false for these tags and setting (for the build report);
    ``None`` when it is true."""
    if not enabled:
        return "SHIPWAY_SERVING_TRIM_PADDING=false: no build trims (the kill switch)"
    if not trims_padding(tags, enabled):
        return f"the version's tag {TRIM_TAG}=false opts it out"
    return None


@dataclass(frozen=True)
class SequenceLayout:
    """Where a model carries the mask's sequence axis: the mask input, the inputs and
    the *token-level* outputs whose axis 1 is it (``sequence_layout``)."""

    mask: str
    sequence_inputs: tuple[str, ...]
    token_outputs: tuple[str, ...]


def _integer_or_bool(dtype: str) -> bool:
    return dtype == "bool" or dtype.startswith(("int", "uint"))


def sequence_layout(
    signature: Signature, mask_input: str | None, fixed: Mapping[str, int] | None = None
) -> SequenceLayout | None:
    """The tensors a trimmed run cuts (inputs) and re-pads (outputs) on axis 1, read from
    the signature only; ``None`` when trimming would not be a plain cut of axis 1.

    The mask must be an integer or bool input ``[batch, seq]`` with ``seq`` symbolic (a
    float additive mask, 0 where real, would read inverted). Every other tensor of rank
    2 or more must carry, on axis 1, that same ``seq`` or a fixed size, and ``seq``
    nowhere else: a tensor with another symbolic name or an unknown size on axis 1 (a
    torch export's per-tensor names, ``["batch", "seq_ids"]``) may or may not follow the
    mask, and the signature cannot say which, so such a model is left untouched.
    ``fixed`` gives outputs whose axis 1 the signature leaves free (shape inference
    names it ``Concat461_dim_1``: MiniLM's pooled output) the size a run of the model at
    two sequence lengths found it to keep (``packaging.probe_fixed_outputs``).
    String (BYTES) tensors on ``seq`` are refused too (no zero to pad with), and so is a
    model Triton does not batch (``is_batchable``), whose requests are never stacked.
    Used by the packaging (``trim_plan``) and by the shadow comparison, which must
    judge a trimmed answer against an untrimmed one (``AgreementRule.token_outputs``).
    """
    mask = next((s for s in signature.inputs if s.name == mask_input), None)
    if not is_batchable(signature) or mask is None or len(mask.shape) != 2:
        return None  # is_batchable: every tensor starts with the batch axis
    seq = mask.shape[1]
    if not isinstance(seq, str) or seq == signature.batch_dim or not _integer_or_bool(mask.dtype):
        return None
    fixed = fixed or {}
    outputs = {s.name for s in signature.outputs}
    for spec in (*signature.inputs, *signature.outputs):
        if len(spec.shape) < 2:
            continue
        axis = spec.shape[1]
        if spec.name in outputs and axis != seq and not isinstance(axis, int):
            axis = fixed.get(spec.name, axis)
        if not (axis == seq or (isinstance(axis, int) and not isinstance(axis, bool))):
            return None  # None or another symbolic name: may follow the mask or not
        if seq in spec.shape[:1] + spec.shape[2:]:
            return None  # the sequence axis elsewhere than axis 1: not a cut of axis 1
        if axis == seq and spec.dtype == "object":
            return None  # strings: no zero to pad a cut input or a masked answer with
    return SequenceLayout(
        mask.name,
        tuple(s.name for s in signature.inputs if s.shape[1:2] == (seq,)),
        tuple(s.name for s in signature.outputs if s.shape[1:2] == (seq,)),
    )


def free_outputs(signature: Signature, mask_input: str | None) -> tuple[str, ...]:
    """Outputs of rank 2 or more whose axis 1 the signature leaves free (unknown, or a
    symbolic name other than the mask's): trimming must know whether they follow the
    sequence length (``sequence_layout``'s ``fixed``)."""
    mask = next((s for s in signature.inputs if s.name == mask_input), None)
    seq = mask.shape[1] if mask is not None and len(mask.shape) == 2 else None
    return tuple(
        o.name
        for o in signature.outputs
        if len(o.shape) >= 2 and o.shape[1] != seq and not isinstance(o.shape[1], int)
    )


def token_outputs(signature: Signature, mask_input: str | None) -> tuple[str, ...]:
    """The outputs a trimmed build answers with zeros where the mask is zero, whether or
    not this build trims (its shadow may be compared with one that does): those whose
    axis 1 is the mask's symbolic ``seq`` (and nowhere else), the mask an integer or
    bool ``[batch, seq]`` input; ``()`` when there is no such mask."""
    mask = next((s for s in signature.inputs if s.name == mask_input), None)
    if mask is None or len(mask.shape) != 2 or not _integer_or_bool(mask.dtype):
        return ()
    batch, seq = mask.shape
    if not isinstance(seq, str) or seq == batch:
        return ()
    return tuple(
        o.name
        for o in signature.outputs
        if o.shape[:2] == (batch, seq) and seq not in o.shape[2:] and o.dtype != "object"
    )


def check_mask_tag(signature: Signature, tags: Mapping[str, str]) -> None:
    """Refuse (``InvalidInput``, HTTP 422) a ``shipway.mask_input`` tag naming an input
    that is not an integer or bool ``[batch, seq]`` mask: a float (additive) mask or a
    tensor of another rank would be trimmed by the wrong positions. The untagged default
    (``attention_mask``) is not checked: a model whose input of that name is not such a
    mask is simply not trimmed (``sequence_layout``)."""
    name = tags.get(MASK_TAG)
    spec = next((s for s in signature.inputs if s.name == name), None)
    if spec is None:
        return  # no tag, "none", or a name ``accuracy.mask_input`` refuses
    batch = signature.batch_dim
    if len(spec.shape) != 2 or batch is None or spec.shape[0] != batch:
        problem = f"has shape {list(spec.shape)}"
    elif not _integer_or_bool(spec.dtype):
        problem = f"has dtype {spec.dtype}"
    else:
        return
    raise InvalidInput(
        f"tag {MASK_TAG!r} names input {name!r}, which {problem}; a mask input must be an "
        "integer or bool [batch, seq] tensor (non-zero where a token is real)"
    )


def trim_plan(
    signature: Signature,
    mask_input: str | None,
    options: ServingOptions,
    backend: str = "python",
    fixed: Mapping[str, int] | None = None,
) -> TrimPlan | None:
    """Whether and how the served model trims padding; ``None`` leaves it untouched.

    It trims when the options ask, the backend is one of ``TRIMMING_BACKENDS``, the
    model batches, and ``sequence_layout`` (``fixed``: its probed output sizes) finds
    the mask's sequence axis on axis 1 only, named the same wherever it is: then
    cutting and re-padding axis 1 is all trimming does. The *token-level* outputs are
    the outputs with ``seq`` on axis 1 (``last_hidden_state``); the others (a pooled
    ``[batch, hidden]``, class scores) are answered as computed.
    """
    if not (options.trim_padding and backend in TRIMMING_BACKENDS and batches(signature, options)):
        return None
    layout = sequence_layout(signature, mask_input, fixed)
    if layout is None:
        return None
    return TrimPlan(
        layout.mask, layout.sequence_inputs, layout.token_outputs, options.length_buckets
    )


def dims(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    """Triton ``dims``: without the batch axis when batched, ``-1`` for a free size,
    ``[1]`` for rank 0."""
    shape: tuple[Dim, ...] = spec.shape[1:] if batched else spec.shape
    return tuple(d if isinstance(d, int) else -1 for d in shape) or (1,)


def triton_dtype(spec: TensorSpec) -> str:
    try:
        return TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise InvalidInput(
            f"tensor {spec.name!r} has dtype {spec.dtype}, which Triton cannot serve"
        ) from None


def _list(values: tuple[int, ...]) -> str:
    return "[ " + ", ".join(map(str, values)) + " ]"


def _tensor(spec: TensorSpec, batched: bool, ragged: bool = False) -> str:
    return (
        f"  {{ name: {json.dumps(spec.name)} data_type: {triton_dtype(spec)} "
        f"dims: {_list(dims(spec, batched))}{' allow_ragged_batch: true' if ragged else ''} }}"
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
    trim: TrimPlan | None = None,
    trim_decision: str | None = None,
    parameters: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The ``config.pbtxt`` text. ``warmup`` (from ``warmup_request``) adds a warm-up
    that reads each input from ``warmup/<warmup_file(i, name)>``, which the caller
    writes as the array's raw bytes; ``trim`` (from ``trim_plan``) the trimming
    parameter and ragged sequence inputs; ``trim_decision`` (JSON: whether the build
    trims and why, ``packaging.TrimDecision``) the parameter ``shipway_trim_decision``,
    for whoever reads the config (the served model does not); ``parameters`` more
    string parameters (``openvino_parameters``), ``notes`` comment lines at the top.
    Raises ``InvalidInput``
    for a dtype Triton cannot serve."""
    batched = batches(signature, options)
    ragged = set(trim.sequence_inputs) if trim else set()
    lines = [
        *notes,
        f"name: {json.dumps(model_name)}",
        f"backend: {json.dumps(backend)}",
        f"max_batch_size: {options.max_batch_size if batched else 0}",
        "input [",
        ",\n".join(_tensor(s, batched, s.name in ragged) for s in signature.inputs),
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
    if trim is not None:
        lines.append(
            'parameters { key: "shipway_trim" '
            f"value: {{ string_value: {json.dumps(trim.to_json())} }} }}"
        )
    if trim_decision is not None:
        lines.append(
            'parameters { key: "shipway_trim_decision" '
            f"value: {{ string_value: {json.dumps(trim_decision)} }} }}"
        )
    for key, value in (parameters or {}).items():
        value_text = json.dumps(value)
        lines.append(
            f"parameters {{ key: {json.dumps(key)} value: {{ string_value: {value_text} }} }}"
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
        f"data_type: {triton_dtype(spec)} dims: {_list(tuple(request[spec.name].shape))} "
        f"input_data_file: {json.dumps(warmup_file(i, spec.name))} }} }}"
        for i, spec in enumerate(signature.inputs)
    ]
    return (
        "model_warmup [ {\n"
        '    name: "reference-row"\n'
        "    batch_size: 1\n" + "\n".join(inputs) + "\n} ]"
    )
