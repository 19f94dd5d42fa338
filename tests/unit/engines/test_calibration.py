from __future__ import annotations

import numpy as np
import pytest

from shipway.engines.calibration import ArraysReader, CalibrationMethod, parse_method, split
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

SIG = Signature(
    (TensorSpec("ids", "int64", ("b", "s")), TensorSpec("mask", "int64", ("b", "s"))),
    (TensorSpec("y", "float32", ("b", 4)),),
)


def arrays(n: int, dtype: str = "int64") -> dict[str, np.ndarray]:
    return {
        "ids": np.arange(n * 3, dtype=dtype).reshape(n, 3),
        "mask": np.ones((n, 3), dtype=dtype),
    }


def test_the_sample_alone_splits_into_disjoint_halves() -> None:
    parts = split(SIG, arrays(9), None)
    calib, held = parts.calibration["ids"][:, 0], parts.held_out["ids"][:, 0]
    assert len(calib) == 5 and len(held) == 4
    assert not set(calib) & set(held)


def test_a_calibration_dataset_calibrates_and_the_sample_is_held_out() -> None:
    sample, dataset = arrays(4), arrays(12)
    parts = split(SIG, sample, dataset)
    assert parts.calibration is dataset and parts.held_out is sample


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"ids": np.zeros((4, 3), np.int64)}, "calibration dataset: .*missing \\['mask'\\]"),
        (arrays(4, "int32"), "calibration dataset: .*dtype int32"),
        ({**arrays(4), "mask": np.ones((4, 3, 1), np.int64)}, "calibration dataset: .*rank 2"),
    ],
)
def test_calibration_data_that_does_not_fit_the_graph_is_refused(
    calibration: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        split(SIG, arrays(4), calibration)


def test_too_small_a_sample_without_a_dataset_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"has 3 rows; .* at least 4"):
        split(SIG, arrays(3), None)


def test_reader_batches_are_equal_and_cover_every_row_once() -> None:
    reader = ArraysReader(arrays(30), max_batch=16)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch["ids"])
    assert {len(b) for b in batches} == {15}  # the largest divisor of 30 up to 16
    assert np.array_equal(np.concatenate(batches), arrays(30)["ids"])
    reader.rewind()
    assert reader.get_next() is not None


def test_calibration_methods() -> None:
    assert parse_method("entropy") is CalibrationMethod.ENTROPY
    with pytest.raises(InvalidInput, match="choose one of minmax, entropy, percentile"):
        parse_method("kl")


def test_a_large_calibration_dataset_is_thinned_evenly() -> None:
    parts = split(SIG, arrays(4), arrays(1000))
    first = parts.calibration["ids"][:, 0] // 3  # the row numbers kept
    assert len(first) == 256 and first[0] == 0 and first[-1] == 999
    assert len(set(first)) == 256 and "256 rows evenly spaced" in parts.source
