"""Read a model's input/output signature from its ONNX graph and check samples against it.

Pure functions over bytes and arrays: the API calls them before anything is written,
so a bad upload leaves no trace in MLflow or the store.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from shipway.errors import InvalidInput

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "int64", "float32"
    shape: tuple[Dim, ...]

    @property
    def has_batch_dim(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(spec) for spec in self.inputs],
            "outputs": [asdict(spec) for spec in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(item["name"], item["dtype"], tuple(item["shape"])) for item in items
            )

        return cls(specs(data["inputs"]), specs(data["outputs"]))


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise InvalidInput(f"graph value {value.name!r} is not a tensor; only tensors are served")
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    return TensorSpec(value.name, dtype, tuple(dims))


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


def read_signature(model: onnx.ModelProto) -> Signature:
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    if not inputs:
        raise InvalidInput("the ONNX graph has no inputs")
    return Signature(inputs, tuple(_spec(v) for v in model.graph.output))


def load_sample(npz_bytes: bytes) -> dict[str, np.ndarray]:
    """Read an ``.npz`` file of named arrays without ever unpickling objects."""
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"the sample is not a readable .npz file: {exc}") from None


def check_sample(signature: Signature, sample: dict[str, np.ndarray]) -> int:
    """Check names, dtypes and shapes of a sample against the graph; return its row count."""
    expected = {spec.name for spec in signature.inputs}
    missing, extra = expected - sample.keys(), sample.keys() - expected
    if missing or extra:
        raise InvalidInput(
            "sample arrays do not match the model inputs: "
            f"missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    rows: set[int] = set()
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
                f"the model expects rank {len(spec.shape)} ({_show(spec.shape)})"
            )
        for axis, (size, dim) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if isinstance(dim, int) and size != dim:
                raise InvalidInput(
                    f"sample input {spec.name!r} has size {size} on axis {axis}, "
                    f"the model expects {dim} ({_show(spec.shape)})"
                )
        rows.add(int(array.shape[0]) if array.ndim else 1)
    if len(rows) != 1:
        raise InvalidInput(f"sample inputs disagree on the number of rows: {sorted(rows)}")
    (count,) = rows
    if count == 0:
        raise InvalidInput("the sample has no rows")
    return count


def _show(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
