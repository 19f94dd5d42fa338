"""How tensors become features: the kind of an input is the reference's, never a
window's; non-finite values are counted; the profile's file, old and new."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from shipway.drift import profile as profiles
from shipway.drift.detect import Verdict, detect
from shipway.drift.profile import InputKind, InputSpec, features
from shipway.drift.profile_io import from_bytes, to_bytes


def test_kinds_are_decided_once_from_the_reference() -> None:
    rng = np.random.default_rng(0)
    reference = {
        "ids": rng.integers(0, 50, size=(100, 6)),
        "attention_mask": np.ones((100, 6), np.int64),
        "price": rng.normal(size=100),
        "vec": rng.normal(size=(100, 3)).astype(np.float32),
        "image": rng.normal(size=(100, 2, 4, 4)).astype(np.float32),
    }
    assert profiles.input_kinds(reference) == {
        "ids": InputSpec(InputKind.CATEGORICAL),
        "attention_mask": InputSpec(InputKind.COUNT),
        "price": InputSpec(InputKind.COLUMNS, 0),
        "vec": InputSpec(InputKind.COLUMNS, 3),
        "image": InputSpec(InputKind.MOMENTS),
    }
    assert profiles.build(reference).inputs == profiles.input_kinds(reference)


def test_a_window_is_read_as_the_profile_says_not_as_it_looks() -> None:
    kinds = {
        "ids": InputSpec(InputKind.CATEGORICAL),
        "price": InputSpec(InputKind.COLUMNS, 0),
        "vec": InputSpec(InputKind.COLUMNS, 3),
    }
    window = {
        "ids": np.array([[0, 1], [1, 1]], np.int64),  # 0/1 only, yet token ids
        "price": np.array([[1.0], [2.0]], np.float32),  # [n, 1]: the same one column
        "vec": np.ones((2, 4), np.float32),  # another width: not guessed at
    }
    numeric, categorical, _ = profiles.features(window, kinds=kinds)
    assert set(numeric) == {"price"} and numeric["price"].tolist() == [1.0, 2.0]
    assert categorical["ids"].values.tolist() == [0, 1, 1, 1]
    assert categorical["ids"].row.tolist() == [0, 0, 1, 1]
    # Decided from the window alone, the same ids would have been a mask's length.
    assert set(profiles.features(window)[0]) >= {"ids.sum"}


def test_a_window_of_floats_for_an_integer_input_is_still_categorical() -> None:
    rng = np.random.default_rng(1)
    reference = profiles.build({"code": rng.integers(10, 60, size=3000)})
    cells = reference.categorical["code"]
    values = np.array([12.0, 12.5, np.nan, np.inf, 1e9, 59.0])
    counted = profiles.cells(cells, values)
    last = len(cells.counts) - 1
    # Non-integers and non-finite values fall outside the reference's span, the last cell.
    assert counted[[1, 2, 3, 4]].tolist() == [last] * 4
    assert counted[0] == profiles.cells(cells, np.array([12]))[0] != last
    report = detect(reference, {"code": rng.integers(10, 60, size=500).astype(np.float64)})
    assert report.verdict is Verdict.NO_DRIFT and report.missing == ()


def test_rows_of_batched_and_non_batched_inputs() -> None:
    assert profiles.row_count({"scale": np.float32(2.0), "x": np.ones((7, 2))}) == 7
    assert profiles.row_count({"scale": np.float32(2.0)}) == 1
    assert profiles.row_count({}) == 0
    profile = profiles.build({"scale": np.float32(2.0), "x": np.ones((7, 2), np.float32)})
    assert profile.rows == 7 and set(profile.numeric) == {"x[0]", "x[1]"}


def test_reference_values_keep_their_non_finite_count() -> None:
    values = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf])
    profile = profiles.build({"v": values}).numeric["v"]
    assert profile.count == 6 and profile.nonfinite == 3
    assert profile.values.tolist() == [1.0, 2.0, 3.0] and profile.mean == 2.0
    empty = profiles.build({"v": np.full(4, np.nan)}).numeric["v"]
    assert empty.nonfinite == 4 and len(empty.values) == 0 and len(empty.edges) == 0


def test_categories_are_chosen_and_counted_on_different_rows() -> None:
    """A word repeated inside one sentence must not sit on both sides of the split."""
    ids = np.tile(np.arange(100, 130), (40, 1))  # every row the same 30 words
    ids[1::2] = 7  # odd rows: one other word, 30 times
    profile = profiles.build({"ids": ids}).categorical["ids"]
    assert profile.categories.tolist() == list(range(100, 130))  # chosen on even rows
    assert profile.rows == 20 and int(profile.counts.sum()) == 600  # counted on odd rows
    assert profile.counts[: len(profile.categories)].sum() == 0
    assert profile.gram.shape == (len(profile.counts),) * 2
    assert int(profile.gram.sum()) == 20 * 30 * 30  # Σ_rows (row's count)²


def test_a_profile_survives_its_file_with_kinds_and_counts() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 2))
    x[:5, 1] = np.nan
    emb = rng.normal(size=(300, 4))
    emb[:3] = np.inf
    original = profiles.build(
        {"x": x, "ids": rng.integers(0, 90, size=(300, 8)), "flag": rng.integers(0, 2, 300)},
        {"emb": emb},
    )
    loaded = from_bytes(to_bytes(original))
    assert loaded.inputs == original.inputs
    assert loaded.numeric["x[1]"].nonfinite == 5 and loaded.numeric["x[1]"].count == 300
    assert loaded.embeddings["emb"].nonfinite == 3 and loaded.embeddings["emb"].rows == 300
    np.testing.assert_array_equal(loaded.categorical["ids"].gram, original.categorical["ids"].gram)
    assert loaded.categorical["ids"].rows == original.categorical["ids"].rows == 150


def legacy_bytes(profile: profiles.ReferenceProfile) -> bytes:
    """The file layout before kinds, non-finite counts and row statistics."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, object] | int] = {"rows": profile.rows}
    index["numeric"] = {}
    for i, (name, p) in enumerate(profile.numeric.items()):
        arrays[f"n{i}.values"], arrays[f"n{i}.edges"] = p.values, p.edges
        index["numeric"][name] = {"key": f"n{i}", "mean": p.mean, "std": p.std}
    index["categorical"] = {}
    for i, (name, c) in enumerate(profile.categorical.items()):
        arrays[f"c{i}.categories"], arrays[f"c{i}.edges"] = c.categories, c.edges
        arrays[f"c{i}.counts"] = c.counts
        index["categorical"][name] = {"key": f"c{i}", "low": c.low, "high": c.high}
    index["embeddings"] = {}
    for i, (name, e) in enumerate(profile.embeddings.items()):
        arrays[f"e{i}"] = e.sample
        index["embeddings"][name] = f"e{i}"
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_a_profile_written_before_kinds_existed_still_judges_windows() -> None:
    rng = np.random.default_rng(3)

    def sample(rows: int, shift: float = 0.0) -> dict[str, np.ndarray]:
        lengths = rng.integers(3, 9, size=rows)
        mask = (np.arange(8)[None, :] < lengths[:, None]).astype(np.int64)
        return {
            "input_ids": rng.integers(1000, 1100, size=(rows, 8)) * mask,
            "attention_mask": mask,
            "vec": (rng.normal(size=(rows, 2)) + shift).astype(np.float32),
            "image": rng.normal(size=(rows, 2, 2, 2)).astype(np.float32),
            "price": rng.normal(size=rows),
        }

    original = profiles.build(sample(2000), {"emb": rng.normal(size=(2000, 3))})
    old = from_bytes(legacy_bytes(original))
    assert old.inputs == original.inputs  # read back from the feature names
    assert old.categorical["input_ids"].gram is None
    assert old.embeddings["emb"].rows == len(old.embeddings["emb"].sample)
    calm = detect(old, sample(400), {"emb": rng.normal(size=(400, 3))})
    assert calm.verdict is Verdict.NO_DRIFT and calm.missing == ()
    moved = detect(old, sample(400, shift=0.5))
    assert {f.name for f in moved.features if f.drifted} == {"vec[0]", "vec[1]"}


@pytest.mark.parametrize(("rows", "counted"), [(1, 1), (2, 1), (3, 1), (4, 2)])
def test_tiny_references_do_not_break_the_split(rows: int, counted: int) -> None:
    """One row cannot be split: it is both chosen and counted."""
    ids = np.arange(rows * 4).reshape(rows, 4) + 5
    profile = profiles.build({"ids": ids}).categorical["ids"]
    assert profile.rows == counted and int(profile.counts.sum()) == 4 * counted


def test_per_token_outputs_profile_alike_trimmed_or_not() -> None:
    """A build that trims padding answers zeros where the mask is 0; an untrimmed one
    the model's values: the profile reads both as the same embedding."""
    rng = np.random.default_rng(4)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=np.int64)
    inputs = {"input_ids": np.arange(8).reshape(2, 4) + 2, "attention_mask": mask}
    untrimmed = rng.normal(size=(2, 4)).astype(np.float32)
    trimmed = np.where(mask == 1, untrimmed, 0).astype(np.float32)
    a = features(inputs, {"logits": untrimmed}).embeddings["logits"]
    b = features(inputs, {"logits": trimmed}).embeddings["logits"]
    np.testing.assert_array_equal(a, b)
    pooled = rng.normal(size=(2, 3)).astype(np.float32)  # another width: as it is
    np.testing.assert_array_equal(features(inputs, {"p": pooled}).embeddings["p"], pooled)
