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
    assert len(categorical["input_ids"].values) == int(tokens(10)["attention_mask"].sum())
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


def test_an_integer_input_stays_categorical_when_its_window_holds_only_0_and_1() -> None:
    """50 categories in the reference, 2 in the window: the window is not a mask."""
    rng = np.random.default_rng(3)
    reference = profiles.build({"code": rng.integers(0, 50, size=2000)})
    calm = detect(reference, {"code": rng.integers(0, 50, size=500)})
    assert calm.verdict is Verdict.NO_DRIFT and calm.missing == ()
    collapsed = detect(reference, {"code": rng.integers(0, 2, size=500)})
    assert collapsed.missing == ()
    assert [(f.name, f.test, f.drifted) for f in collapsed.features] == [
        ("code", "chi-square", True)
    ]
    assert collapsed.verdict is Verdict.DRIFT


def test_one_nan_is_counted_and_the_rest_still_tested() -> None:
    reference = profiles.build(tabular(5000, seed=1))
    window = tabular(500, seed=2)
    window["x"][7, 1] = np.nan
    report = detect(reference, window)
    results = {(f.name, f.test): f for f in report.features}
    share = results[("x[1]", "non-finite")]
    assert share.statistic == pytest.approx(1 / 500)
    assert share.p_value == pytest.approx(500 / 5500)  # Fisher: 0 of 5000 against 1 of 500
    assert ("x[1]", "ks") in results and ("x[0]", "non-finite") not in results
    assert report.verdict is Verdict.NO_DRIFT  # one NaN in 500 is no evidence at 1 %


def test_a_window_of_nothing_but_nan_is_drift_not_an_error() -> None:
    reference = profiles.build(tabular(5000, seed=1))
    window = {"x": np.full((300, 5), np.nan, dtype=np.float32)}
    report = detect(reference, window)
    assert report.verdict is Verdict.DRIFT
    assert {(f.name, f.test) for f in report.features} == {
        (f"x[{j}]", "non-finite") for j in range(5)
    }
    assert all(f.drifted for f in report.features)
    assert report.score > 1  # PSI: all the window in the cell the reference never filled
    infinite = detect(reference, {"x": np.full((300, 5), np.inf, dtype=np.float32)})
    assert infinite.verdict is Verdict.DRIFT


def test_the_non_finite_share_is_judged_against_the_reference() -> None:
    def with_nan(rows: int, share: float, seed: int) -> dict[str, np.ndarray]:
        data = tabular(rows, seed=seed)
        data["x"][np.random.default_rng(seed + 99).random(rows) < share, 0] = np.nan
        return data

    reference = profiles.build(with_nan(5000, 0.1, seed=1))
    assert reference.numeric["x[0]"].nonfinite == pytest.approx(500, abs=60)
    assert detect(reference, with_nan(500, 0.1, seed=2)).verdict is Verdict.NO_DRIFT
    gone = detect(reference, with_nan(500, 0.0, seed=4))  # the NaNs stopped: a change too
    assert [(f.name, f.test) for f in gone.features if f.drifted] == [("x[0]", "non-finite")]
    more = detect(reference, with_nan(500, 0.3, seed=5))
    assert [(f.name, f.test) for f in more.features if f.drifted] == [("x[0]", "non-finite")]


def test_nan_in_higher_rank_inputs_and_in_embeddings() -> None:
    rng = np.random.default_rng(5)
    reference = profiles.build(
        {"image": rng.normal(size=(400, 2, 3, 3))}, {"emb": rng.normal(size=(400, 8))}
    )
    image, emb = rng.normal(size=(200, 2, 3, 3)), rng.normal(size=(200, 8))
    image[:60, 0, 1, 1] = np.nan  # 30 % of the rows hold a NaN pixel
    emb[:60, 3] = np.nan
    report = detect(reference, {"image": image}, {"emb": emb})
    drifted = {(f.name, f.test) for f in report.features if f.drifted}
    assert drifted == {
        ("image.mean", "non-finite"),
        ("image.std", "non-finite"),
        ("emb", "non-finite"),
    }
    assert ("emb", "mmd") in {(f.name, f.test) for f in report.features}  # on the finite rows


def test_the_rollout_check_takes_nan_without_raising() -> None:
    from shipway.drift.detect import between

    stable = tabular(400, seed=1)
    stable["x"][:4, 2] = np.nan
    same = tabular(300, seed=2)
    same["x"][:3, 2] = np.nan
    assert between(stable, same).verdict is Verdict.NO_DRIFT
    broken = tabular(300, seed=3)
    broken["x"][:150, 2] = np.nan
    report = between(stable, broken)
    assert report.verdict is Verdict.DRIFT and report.score > 0.25
    nothing = {"x": np.full((300, 5), np.nan, np.float32)}
    assert between(nothing, nothing).verdict is Verdict.NO_DRIFT
    assert between(stable, nothing).verdict is Verdict.DRIFT


def test_the_rollout_check_reads_inputs_with_the_versions_kinds() -> None:
    """Stable's window alone would call a 0/1-only integer input a mask."""
    from shipway.drift.detect import between

    rng = np.random.default_rng(6)
    kinds = profiles.build({"code": rng.integers(0, 50, size=1000)}).inputs
    stable = {"code": rng.integers(0, 2, size=400)}
    candidate = {"code": rng.integers(0, 50, size=400)}
    report = between(stable, candidate, kinds=kinds)
    assert [(f.name, f.test, f.drifted) for f in report.features] == [("code", "chi-square", True)]
