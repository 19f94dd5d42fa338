"""Read a model's input/output signature from its ONNX graph and check samples against it.

Pure functions over bytes and arrays: the API calls them before anything is written,
so a bad upload leaves no trace in MLflow or the store.

The batch axis, and what a row is
---------------------------------
A reference sample (like a calibration dataset, and like a request) holds one array
per model input. Its *rows* are what the model computes independently of each other,
and everything downstream — the sample checks, the calibration split (even rows
calibrate, odd rows are held out), the accuracy gate's runs, the drift profile, the
benchmark, Triton's batching and warm-up — uses this one definition:

- The model has a **batch axis** ``B`` when ``B`` is a symbolic dimension (an ONNX
  ``dim_param``) that is the first axis of *every output* and of at least one input,
  and appears nowhere else in the signature. Output dimensions the export left
  unknown or named on its own (``LayerNormalization_dim_0``) are first renamed from
  ONNX Runtime's symbolic shape inference, which carries the inputs' names through
  the graph; so MiniLM's outputs are ``[batch_size, sequence_length, 384]``.
- Inputs whose first axis is ``B`` are **split into rows**, and must agree on how
  many they hold.
- Every other input — rank 0, a fixed first axis (``[4]``), or a symbolic first axis
  that is not ``B`` (``[n]`` beside ``[batch, n]``) — is **the same for every row**:
  a constant of each request, passed whole with any slice of rows.
- A model without a batch axis (a fixed ``[1, 4]``, an output reduced over the first
  axis, a rank-0 output) takes its sample as **one request, one row**.

A symbolic name shared across axes says the sizes are equal, which is all a graph can
say: a model that mixes its rows (``x - x.mean(axis=0)``) while keeping their axis
looks batched. Triton's own configuration autocomplete makes the same assumption.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from shipway.errors import InvalidInput

log = logging.getLogger(__name__)

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "int64", "float32"
    shape: tuple[Dim, ...]  # () is rank 0


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batch_dim(self) -> str | None:
        """The batch axis's symbolic name, or ``None`` (see the module docstring)."""
        if not self.outputs or any(not spec.shape for spec in self.outputs):
            return None
        first = self.outputs[0].shape[0]
        if not isinstance(first, str):
            return None
        tensors = (*self.inputs, *self.outputs)
        if any(spec.shape[0] != first for spec in self.outputs):
            return None
        if not any(spec.shape and spec.shape[0] == first for spec in self.inputs):
            return None
        for spec in tensors:
            rest = spec.shape[1:] if spec.shape and spec.shape[0] == first else spec.shape
            if first in rest:  # also on another axis: rows are not independent
                return None
        return first

    @property
    def batched_inputs(self) -> frozenset[str]:
        """Inputs split into rows; the others are the same for every row."""
        batch = self.batch_dim
        if batch is None:
            return frozenset()
        return frozenset(s.name for s in self.inputs if s.shape and s.shape[0] == batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON for the store and ``signature.json``; ``batch_dim`` is for readers (it
        is recomputed from the shapes) and marks outputs renamed by shape inference."""
        return {
            "inputs": [asdict(spec) for spec in self.inputs],
            "outputs": [asdict(spec) for spec in self.outputs],
            "batch_dim": self.batch_dim,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(item["name"], item["dtype"], tuple(item["shape"])) for item in items
            )

        inputs, outputs = specs(data["inputs"]), specs(data["outputs"])
        if "batch_dim" not in data:  # stored before outputs were named by inference
            outputs = _stored_before_inference(inputs, outputs)
        return cls(inputs, outputs)


def _stored_before_inference(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> tuple[TensorSpec, ...]:
    """Signatures stored before shape inference named output axes kept the exporter's
    names (``LayerNormalization_dim_0``). When every input starts with one symbolic
    axis, an output's free first axis takes its name, as inference finds for such
    models, so versions registered then keep their rows."""
    firsts = {spec.shape[0] if spec.shape else None for spec in inputs}
    names = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    if len(firsts) != 1 or not isinstance(batch := next(iter(firsts)), str):
        return outputs

    def free(dim: Dim) -> bool:
        return dim is None or (isinstance(dim, str) and dim not in names)

    return tuple(
        TensorSpec(spec.name, spec.dtype, (batch, *spec.shape[1:]))
        if spec.shape and free(spec.shape[0])
        else spec
        for spec in outputs
    )


def _dims(shape: onnx.TensorShapeProto) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for dim in shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _spec(value: onnx.ValueInfoProto, kind: str) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        raise InvalidInput(f"graph value {value.name!r} is not a tensor; only tensors are served")
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):  # the checker requires it; never read it as rank 0
        raise InvalidInput(f"{kind} {value.name!r} declares no shape; export it with its shape")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(
            f"{kind} {value.name!r} has ONNX element type {tensor.elem_type}, "
            "which has no numpy equivalent"
        ) from None
    return TensorSpec(value.name, dtype, _dims(tensor.shape))


def load_model(onnx_bytes: bytes) -> onnx.ModelProto:
    """Parse and check an ONNX model, or raise ``InvalidInput`` saying what is wrong."""
    if not onnx_bytes:
        raise InvalidInput("the ONNX file is empty")
    try:
        model = onnx.load_from_string(onnx_bytes)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidInput(f"not a valid ONNX model: {exc}") from None
    if not model.graph.node or not model.graph.output:
        raise InvalidInput("not a valid ONNX model: the graph has no nodes or no outputs")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise InvalidInput(f"ONNX model failed validation: {first_line}") from None
    return model


def _inferred_outputs(model: onnx.ModelProto) -> dict[str, tuple[Dim, ...]]:
    """Output shapes from ONNX Runtime's symbolic shape inference (``auto_merge``, as
    the quantizer's pre-processing runs it); empty when it cannot follow the graph."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # an op it does not know: keep the declared shapes
        log.info("symbolic shape inference failed, using declared output shapes: %s", exc)
        return {}
    if inferred is None:
        return {}
    return {
        v.name: _dims(v.type.tensor_type.shape)
        for v in inferred.graph.output
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }


def _merge(
    declared: tuple[Dim, ...], inferred: tuple[Dim, ...], names: set[str]
) -> tuple[Dim, ...]:
    """Declared dims, with a free one (unknown, or a name no input carries) replaced
    by what inference found: an input's dimension name, or a size where none was
    declared. Different ranks: the declaration wins."""
    if len(declared) != len(inferred):
        return declared

    def pick(mine: Dim, found: Dim) -> Dim:
        free = mine is None or (isinstance(mine, str) and mine not in names)
        named = isinstance(found, str) and found in names
        sized = mine is None and isinstance(found, int)
        return found if (free and named) or sized else mine

    return tuple(pick(m, f) for m, f in zip(declared, inferred, strict=True))


def read_signature(model: onnx.ModelProto) -> Signature:
    """Inputs (initializers excluded) and outputs with their dtypes and shapes; output
    axes named from shape inference where the export left them free (see above)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v, "input") for v in model.graph.input if v.name not in initializers)
    if not inputs:
        raise InvalidInput("the ONNX graph has no inputs")
    names = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    inferred = _inferred_outputs(model)
    outputs = []
    for value in model.graph.output:
        spec = _spec(value, "output")
        if spec.name in inferred:
            spec = TensorSpec(spec.name, spec.dtype, _merge(spec.shape, inferred[spec.name], names))
        outputs.append(spec)
    return Signature(inputs, tuple(outputs))


def load_sample(npz_bytes: bytes) -> dict[str, np.ndarray]:
    """Read an ``.npz`` file of named arrays without ever unpickling objects."""
    if not npz_bytes.startswith(b"PK"):  # an .npz is a zip archive of .npy files
        raise InvalidInput(
            "the sample is not an .npz file (a zip of named arrays: make it with numpy.savez)"
        )
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # numpy's hint to load it unsafely is not for users
            raise InvalidInput(
                "the sample holds Python objects (a pickle), not plain arrays: save it "
                "with numpy.savez from numeric or string arrays"
            ) from None
        raise InvalidInput(f"the sample is not a readable .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"the sample is not a readable .npz file: {exc}") from None


def check_sample(signature: Signature, sample: dict[str, np.ndarray]) -> int:
    """Check a sample against the graph; return its number of rows.

    Checks names, dtypes, ranks, fixed sizes, and that a symbolic dimension has one
    size across inputs (``sequence_length`` of ``input_ids`` and ``attention_mask``;
    the batch axis, whose size is the row count). A model without a batch axis takes
    its sample as one request: one row. Raises ``InvalidInput`` saying what differs.
    """
    expected = {spec.name for spec in signature.inputs}
    missing, extra = expected - sample.keys(), sample.keys() - expected
    if missing or extra:
        raise InvalidInput(
            "sample arrays do not match the model inputs: "
            f"missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    batch = signature.batch_dim
    seen: dict[str, tuple[str, int, int]] = {}  # dim name -> (input, axis, size)
    row_counts: set[int] = set()
    for spec in signature.inputs:
        array = sample[spec.name]
        if array.dtype.name != spec.dtype:
            raise InvalidInput(
                f"sample input {spec.name!r} has dtype {array.dtype.name}, "
                f"the model expects {spec.dtype}"
            )
        if array.ndim != len(spec.shape):
            raise InvalidInput(
                f"sample input {spec.name!r} has shape {list(array.shape)}, "
                f"the model expects rank {len(spec.shape)} ({show(spec.shape)})"
            )
        for axis, (size, dim) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if isinstance(dim, int) and size != dim:
                raise InvalidInput(
                    f"sample input {spec.name!r} has size {size} on axis {axis}, "
                    f"the model expects {dim} ({show(spec.shape)})"
                )
            if isinstance(dim, str):
                if dim == batch:
                    row_counts.add(int(size))
                    continue
                other = seen.setdefault(dim, (spec.name, axis, int(size)))
                if other[2] != size:
                    raise InvalidInput(
                        f"sample inputs disagree on dimension {dim!r}: {other[0]!r} has "
                        f"{other[2]} on axis {other[1]}, {spec.name!r} has {size} on axis {axis}"
                    )
    if len(row_counts) > 1:
        raise InvalidInput(
            f"sample inputs disagree on the number of rows (axis {batch!r}): {sorted(row_counts)}"
        )
    if batch is None:
        return 1
    (count,) = row_counts
    if count == 0:
        raise InvalidInput("the sample has no rows")
    return count


def show(shape: Iterable[Dim]) -> str:
    """A shape as people write it: ``[batch, 128]``, ``?`` for an unknown size."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
