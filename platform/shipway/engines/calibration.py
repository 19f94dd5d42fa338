"""Calibration data: where it comes from, that it fits the graph, how it is fed.

Ranges are computed once per build from this data and kept as a JSON cache artifact;
each target then encodes its own Q/DQ from the same ranges (U8S8 for ONNX Runtime on
CPU, symmetric S8S8 for TensorRT), so calibration is hardware independent.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def rows(arrays: Arrays) -> int:
    return int(next(iter(arrays.values())).shape[0])


def take(arrays: Arrays, index: slice | np.ndarray) -> Arrays:
    return {name: array[index] for name, array in arrays.items()}


def split(signature: Signature, sample: Arrays, calibration: Arrays | None) -> Split:
    """Calibration rows and held-out rows, never the same ones.

    With a calibration dataset, it calibrates and the reference sample is held out.
    Without one, the reference sample's rows alternate between the two sides.
    """
    check_sample(signature, sample)
    if calibration is not None:
        try:
            check_sample(signature, calibration)
        except InvalidInput as exc:
            raise InvalidInput(f"calibration dataset: {exc}") from None
        source = "calibration dataset; held out: reference sample"
        if rows(calibration) > MAX_CALIBRATION_ROWS:
            keep = np.linspace(0, rows(calibration) - 1, MAX_CALIBRATION_ROWS).round().astype(int)
            calibration = take(calibration, keep)
            source = f"calibration dataset, {MAX_CALIBRATION_ROWS} rows evenly spaced; " + (
                "held out: reference sample"
            )
        return Split(calibration, sample, source)
    count = rows(sample)
    if count < MIN_SPLIT_ROWS:
        raise InvalidInput(
            f"the reference sample has {count} rows; calibrating on it needs at least "
            f"{MIN_SPLIT_ROWS} (half calibrate, half are held out for the accuracy gate), "
            "or register a calibration dataset"
        )
    index = np.arange(count)
    calibrate = index[index % 2 == 0][:MAX_CALIBRATION_ROWS]
    return Split(
        take(sample, calibrate),
        take(sample, index % 2 == 1),
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
