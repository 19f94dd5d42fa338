"""Calibration data: where it comes from, that it fits the graph, how it is fed.

Ranges are computed once per build from this data and kept as a JSON cache artifact;
each target then encodes its own Q/DQ from the same ranges (U8S8 for ONNX Runtime on
CPU, symmetric S8S8 for TensorRT), so calibration is hardware independent.

Rows are as ``shipway.registry.signature`` defines them: inputs with the model's
batch axis are split into rows, the others are the same for every row and travel
whole with each slice; a model without a batch axis has one row, its whole sample.
``split`` returns ``Rows``, which remember which inputs are constants, so the
accuracy gate's runs (``evaluate.run``), the calibrator's batches and the benchmark
all slice the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import CalibrationMethod as OrtMethod

from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, check_sample

Arrays = dict[str, np.ndarray]
MIN_SPLIT_ROWS = 4  # a reference sample split in two needs a few rows on each side
# The calibrator keeps every calibrated activation of every row in memory (~15 MB a
# row for MiniLM at sequence 128), so larger datasets are thinned, evenly.
MAX_CALIBRATION_ROWS = 256


class Rows(dict[str, np.ndarray]):
    """Named input arrays, and which of them are the same for every row.

    A plain ``dict`` passed where ``Rows`` are expected is all rows: every array is
    split on its first axis.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], constants: Iterable[str] = ()) -> None:
        super().__init__(arrays)
        self.constants = frozenset(constants)

    @classmethod
    def of(cls, signature: Signature, arrays: Mapping[str, np.ndarray]) -> Rows:
        """The rows of a sample that ``check_sample`` accepted for ``signature``."""
        batched = signature.batched_inputs
        return cls(arrays, [name for name in arrays if name not in batched])


def _constants(arrays: Mapping[str, np.ndarray]) -> frozenset[str]:
    return arrays.constants if isinstance(arrays, Rows) else frozenset()


def rows(arrays: Mapping[str, np.ndarray]) -> int:
    """How many rows: the first axis of the split inputs; 1 when none is split."""
    constants = _constants(arrays)
    split_arrays = [a for name, a in arrays.items() if name not in constants]
    return int(split_arrays[0].shape[0]) if split_arrays else 1


def take(arrays: Mapping[str, np.ndarray], index: slice | np.ndarray) -> Arrays:
    """The rows at ``index`` (constants whole), as ``Rows`` when given ``Rows``."""
    constants = _constants(arrays)
    picked = {name: a if name in constants else a[index] for name, a in arrays.items()}
    return Rows(picked, constants) if isinstance(arrays, Rows) else picked


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    @property
    def ort(self) -> OrtMethod:
        return {
            CalibrationMethod.MINMAX: OrtMethod.MinMax,
            CalibrationMethod.ENTROPY: OrtMethod.Entropy,
            CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
        }[self]


def parse_method(value: str) -> CalibrationMethod:
    try:
        return CalibrationMethod(value)
    except ValueError:
        choices = ", ".join(m.value for m in CalibrationMethod)
        raise InvalidInput(
            f"unknown calibration method {value!r}; choose one of {choices}"
        ) from None


@dataclass(frozen=True)
class Split:
    calibration: Arrays
    held_out: Arrays
    source: str  # said in the build report: where each side came from


def split(
    signature: Signature, sample: Arrays, calibration: Arrays | None, calibrates: bool = True
) -> Split:
    """Calibration rows and held-out rows, never the same ones, as ``Rows``.

    With a calibration dataset, it calibrates and the reference sample is held out.
    Without one, the reference sample's rows alternate between the two sides (even
    rows calibrate, odd rows are held out); the inputs that are the same for every
    row go whole to both. A recipe that does not calibrate (``calibrates`` False:
    int8-dynamic, fp16) takes a sample too small to split whole, for the gate and the
    layer ranking both. Raises ``InvalidInput`` for data that does not fit the graph,
    or a sample too small to split for a recipe that calibrates.
    """
    check_sample(signature, sample)
    held = Rows.of(signature, sample)
    if calibration is not None:
        try:
            check_sample(signature, calibration)
        except InvalidInput as exc:
            raise InvalidInput(f"calibration dataset: {exc}") from None
        data = Rows.of(signature, calibration)
        source = "calibration dataset; held out: reference sample"
        if rows(data) > MAX_CALIBRATION_ROWS:
            keep = np.linspace(0, rows(data) - 1, MAX_CALIBRATION_ROWS).round().astype(int)
            data = take(data, keep)
            source = f"calibration dataset, {MAX_CALIBRATION_ROWS} rows evenly spaced; " + (
                "held out: reference sample"
            )
        return Split(data, held, source)
    count = rows(held)
    if count < MIN_SPLIT_ROWS and not calibrates:
        return Split(held, held, "reference sample, whole (nothing to calibrate)")
    if count < MIN_SPLIT_ROWS:
        what = (
            f"{count} rows"
            if signature.batch_dim is not None
            else "1 row (the model has no batch axis, so its sample is one request)"
        )
        raise InvalidInput(
            f"the reference sample has {what}; calibrating on it needs at least "
            f"{MIN_SPLIT_ROWS} (half calibrate, half are held out for the accuracy gate), "
            "or register a calibration dataset"
        )
    index = np.arange(count)
    calibrate = index[index % 2 == 0][:MAX_CALIBRATION_ROWS]
    return Split(
        take(held, calibrate),
        take(held, index % 2 == 1),
        "reference sample, even rows; held out: odd rows",
    )


class ArraysReader(CalibrationDataReader):
    """Feeds calibration rows to ONNX Runtime's calibrator in small batches.

    All batches have one size (the histogram calibrators stack them), so the batch is
    the largest divisor of the row count up to ``max_batch``.
    """

    def __init__(self, arrays: Arrays, max_batch: int = 16) -> None:
        self.arrays = arrays
        total = rows(arrays)
        self.batch = max(d for d in range(1, max_batch + 1) if total % d == 0)
        self._batches: Iterator[Arrays] | None = None

    def _iterate(self) -> Iterator[Arrays]:
        total = rows(self.arrays)
        for start in range(0, total, self.batch):
            yield take(self.arrays, slice(start, start + self.batch))

    def get_next(self) -> Arrays | None:
        if self._batches is None:
            self._batches = self._iterate()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = None
