from __future__ import annotations

import numpy as np

from shipway.drift.window import assemble


def request(rows: int, length: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((rows, length), 7, dtype=np.int64),
        "attention_mask": np.ones((rows, length), dtype=np.int64),
    }


def test_token_requests_of_different_lengths_are_padded_with_masked_zeros() -> None:
    window = assemble([request(1, 5), request(2, 9), request(1, 3)])
    assert window.rows == 4 and window.requests == 3 and window.skipped == 0
    assert window.inputs["input_ids"].shape == (4, 9)
    assert window.inputs["attention_mask"].sum(axis=1).tolist() == [5, 9, 9, 3]
    assert window.inputs["input_ids"][0, 5:].tolist() == [0, 0, 0, 0]


def test_float_requests_of_another_shape_are_left_out_whole() -> None:
    good = {"x": np.zeros((2, 4), np.float32), "ids": np.ones((2, 3), np.int64)}
    odd = {"x": np.zeros((1, 5), np.float32), "ids": np.ones((1, 3), np.int64)}
    window = assemble([good, good, odd])
    assert window.skipped == 1 and window.rows == 4
    assert window.inputs["x"].shape == (4, 4) and window.inputs["ids"].shape == (4, 3)


def test_empty_and_partial_requests() -> None:
    assert assemble([]).rows == 0
    window = assemble([request(1, 4), {"input_ids": np.ones((1, 4), np.int64)}])
    assert set(window.inputs) == {"input_ids"} and window.rows == 2
