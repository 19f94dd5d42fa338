"""The drift tests on synthetic data with known answers: shifts that must be found,
same-distribution windows that must not be flagged, and bad windows reported as such."""

from __future__ import annotations

import numpy as np
import pytest

from shipway.drift import profile as profiles
from shipway.drift import two_sample
from shipway.drift.detect import Verdict, detect

RNG = np.random.default_rng(42)


def tabular(rows: int, shift: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    x[:, 2] += shift
    return {"x": x}


def tokens(rows: int, shifted: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids from a Zipf-like vocabulary; ``shifted`` of them from another range."""
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, size=(rows, 16)) % 5000 + 1000
    swap = rng.random(ids.shape) < shifted
    ids[swap] = rng.integers(20000, 21000, size=int(swap.sum()))
    lengths = rng.integers(4, 17, size=rows)
    mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids.astype(np.int64) * mask, "attention_mask": mask}


def test_features_follow_the_tensor_kinds() -> None:
    numeric, categorical, embeddings = profiles.features(
        tokens(10), {"pooled": np.ones((10, 4), np.float32), "ids": np.ones((10,), np.int64)}
    )
    assert set(numeric) == {"attention_mask.sum"}  # the mask becomes a length
    assert set(categorical) == {"input_ids"} and set(embeddings) == {"pooled"}
    # Token counts only where the mask keeps the position.
    assert len(categorical["input_ids"]) == int(tokens(10)["attention_mask"].sum())
    assert set(profiles.features(tabular(3))[0]) == {f"x[{j}]" for j in range(5)}


def test_a_mean_shift_in_one_feature_is_found_and_named() -> None:
    reference = profiles.build(tabular(5000, seed=1))
    report = detect(reference, tabular(1000, shift=0.5, seed=2))
    assert report.verdict is Verdict.DRIFT
    assert [f.name for f in report.features if f.drifted] == ["x[2]"]
    assert report.score > 0.1  # PSI of a half-sigma shift


def test_same_distribution_windows_are_rarely_flagged() -> None:
    reference = profiles.build(tabular(5000, seed=1))
    flagged = sum(
        detect(reference, tabular(500, seed=100 + i)).verdict is Verdict.DRIFT for i in range(40)
    )
    assert flagged <= 2  # alpha 0.01: an expected 0.4 of 40


def test_a_shifted_token_distribution_is_found() -> None:
    reference = profiles.build(tokens(2000, seed=1))
    assert detect(reference, tokens(300, seed=2)).verdict is Verdict.NO_DRIFT
    report = detect(reference, tokens(300, shifted=0.05, seed=3))
    assert report.verdict is Verdict.DRIFT
    assert {f.name for f in report.features if f.drifted} == {"input_ids"}


def test_embedding_drift_by_mmd() -> None:
    base = RNG.normal(size=(300, 8))
    reference = profiles.build(tabular(300), {"emb": base})
    same = detect(reference, tabular(200, seed=5), {"emb": RNG.normal(size=(200, 8))})
    moved = detect(reference, tabular(200, seed=6), {"emb": RNG.normal(size=(200, 8)) + 0.4})
    emb = lambda r: next(f for f in r.features if f.name == "emb")  # noqa: E731
    assert not emb(same).drifted and emb(moved).drifted and emb(moved).test == "mmd"


def test_too_few_rows_is_insufficient_data_not_no_drift() -> None:
    reference = profiles.build(tabular(1000))
    report = detect(reference, tabular(20, shift=5.0), min_rows=100)
    assert report.verdict is Verdict.INSUFFICIENT_DATA
    assert report.features == () and "at least 100" in (report.message or "")


def test_a_missing_feature_is_reported_not_crashed_on() -> None:
    reference = profiles.build({**tabular(1000), "age": RNG.normal(size=1000)})
    report = detect(reference, tabular(500, seed=9))
    assert report.missing == ("age",)
    assert report.verdict is Verdict.NO_DRIFT
    assert report.to_dict()["missing"] == ("age",)


def test_psi_and_chi_square_edge_cases() -> None:
    edges = np.array([0.0, 1.0])
    assert two_sample.psi(edges, np.array([-1.0, 0.5, 2.0]), np.array([-1.0, 0.5, 2.0])) == 0
    assert two_sample.psi(edges, np.array([-1.0, 0.5, 2.0]), np.array([5.0, 6.0])) > 1
    assert two_sample.chi_square_pvalue(np.array([10, 0]), np.array([10, 0])) == 1.0


def test_mmd_of_all_permutations_at_once_equals_the_direct_formula() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(20, 4)) + 0.3
    observed, p = two_sample.mmd_pvalue(a, b, permutations=200)
    pooled = np.vstack([a, b])
    sq = (pooled**2).sum(axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0)
    kernel = np.exp(-distances / np.median(distances[np.triu_indices(50, 1)]))
    kaa, kbb, kab = kernel[:30, :30], kernel[30:, 30:], kernel[:30, 30:]
    direct = (
        (kaa.sum() - np.trace(kaa)) / (30 * 29)
        + (kbb.sum() - np.trace(kbb)) / (20 * 19)
        - 2 * kab.mean()
    )
    assert observed == pytest.approx(direct, rel=1e-9)
    assert 1 / 201 <= p <= 1


def test_a_profile_survives_its_file() -> None:
    from shipway.drift.profile_io import from_bytes, to_bytes

    original = profiles.build({**tokens(300), **tabular(300)}, {"emb": RNG.normal(size=(300, 4))})
    loaded = from_bytes(to_bytes(original))
    window = {**tokens(200, shifted=0.05, seed=4), **tabular(200, shift=0.5, seed=4)}
    outputs = {"emb": RNG.normal(size=(200, 4))}
    assert detect(loaded, window, outputs) == detect(original, window, outputs)
    assert set(loaded.numeric) == set(original.numeric) and loaded.rows == 300


def test_candidate_traffic_against_stable_traffic() -> None:
    from shipway.drift.detect import between

    assert between(tokens(400, seed=1), tokens(300, seed=2)).verdict is Verdict.NO_DRIFT
    assert between(tokens(400, seed=1), tokens(300, shifted=0.05, seed=3)).verdict is Verdict.DRIFT
    assert between(tokens(400), tokens(50)).verdict is Verdict.INSUFFICIENT_DATA
