from __future__ import annotations

import numpy as np
import pytest

from shipway.engines.calibration import (
    ArraysReader,
    CalibrationMethod,
    Rows,
    parse_method,
    rows,
    split,
    take,
)
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec, load_model, read_signature
from tests.support.signatures import CASES

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
    assert parts.calibration.keys() == dataset.keys() and parts.held_out.keys() == sample.keys()
    for name in dataset:  # the very arrays, not copies
        assert parts.calibration[name] is dataset[name] and parts.held_out[name] is sample[name]


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


def signature_of(case: str) -> Signature:
    return read_signature(load_model(CASES[case]().onnx))


def test_inputs_the_same_for_every_row_go_whole_to_both_sides() -> None:
    signature, sample = signature_of("mixed-ranks"), CASES["mixed-ranks"]().sample(9)
    parts = split(signature, sample, None)
    for side, picked in ((parts.calibration, [0, 2, 4, 6, 8]), (parts.held_out, [1, 3, 5, 7])):
        assert rows(side) == len(picked)
        assert np.array_equal(side["x"], sample["x"][picked])
        assert np.array_equal(side["mask"], sample["mask"][picked])
        assert np.array_equal(side["w"], sample["w"]) and side["scale"].shape == ()
        assert float(side["scale"]) == float(sample["scale"])
    reader = ArraysReader(parts.calibration, max_batch=2)  # 5 rows: batches of 1
    batches = []
    while (batch := reader.get_next()) is not None:
        assert batch["scale"].shape == () and batch["w"].shape == (4,)
        batches.append(batch["x"])
    assert np.array_equal(np.concatenate(batches), sample["x"][[0, 2, 4, 6, 8]])


def test_rows_take_and_a_plain_dict() -> None:
    data = Rows({"x": np.arange(10).reshape(5, 2), "c": np.array(7)}, constants={"c"})
    assert rows(data) == 5
    picked = take(data, np.array([4, 0]))
    assert isinstance(picked, Rows) and picked.constants == {"c"}
    assert picked["x"].tolist() == [[8, 9], [0, 1]] and int(picked["c"]) == 7
    assert rows(Rows({"c": np.array(7)}, constants={"c"})) == 1  # one request, one row
    plain = {"x": np.arange(6).reshape(3, 2)}  # a plain dict is all rows
    assert rows(plain) == 3 and take(plain, slice(1, 2))["x"].tolist() == [[2, 3]]


def test_a_model_without_a_batch_axis_calibrates_on_a_dataset_only() -> None:
    signature, made = signature_of("column-mean"), CASES["column-mean"]()
    with pytest.raises(InvalidInput, match="has 1 row \\(the model has no batch axis"):
        split(signature, made.sample(32), None)
    parts = split(signature, made.sample(32), made.request)
    assert rows(parts.calibration) == rows(parts.held_out) == 1
    assert np.array_equal(parts.calibration["x"], made.request["x"])  # the whole request
    # a recipe that does not calibrate (int8-dynamic) holds the one request out whole
    dynamic = split(signature, made.sample(32), None, calibrates=False)
    assert rows(dynamic.held_out) == 1 and "nothing to calibrate" in dynamic.source
    assert np.array_equal(dynamic.held_out["x"], made.sample(32)["x"])
