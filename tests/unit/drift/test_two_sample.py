"""The categorical test counts rows, not tokens; the non-finite share test; PSI with its
non-finite cell. Known answers on data built to have them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse, stats

from shipway.drift import profile as profiles
from shipway.drift import two_sample
from shipway.drift.detect import Verdict, detect

TOPICS = np.random.default_rng(0).permutation(np.arange(1000, 1400)).reshape(20, 20)


def topical(rows: int, seed: int, topic_zero: float | None = None) -> dict[str, np.ndarray]:
    """Token rows that are about one topic each (20 topics of 20 words of their own),
    as sentences are: a row's tokens are far from independent draws. ``topic_zero``:
    the share of rows about topic 0 (None: every topic alike)."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 20, size=rows)
    if topic_zero is not None:
        topics = np.where(rng.random(rows) < topic_zero, 0, rng.integers(1, 20, size=rows))
    lengths = rng.integers(8, 25, size=rows)
    ids = np.zeros((rows, 24), np.int64)
    mask = np.zeros((rows, 24), np.int64)
    for row in range(rows):
        ids[row, : lengths[row]] = TOPICS[topics[row]][rng.zipf(1.5, size=lengths[row]) % 20]
        mask[row, : lengths[row]] = 1
    return {"input_ids": ids, "attention_mask": mask}


def row_counts(per_row: np.ndarray) -> two_sample.RowCounts:
    matrix = sparse.csr_matrix(per_row)
    return two_sample.RowCounts(per_row.sum(axis=0), (matrix.T @ matrix).toarray(), len(per_row))


def test_same_topic_mix_is_not_drift_though_token_counts_say_so() -> None:
    reference = profiles.build(topical(2000, seed=1))
    cells = reference.categorical["input_ids"]
    token_test = row_test = 0
    for i in range(40):
        window = topical(300, seed=100 + i)
        tokens = profiles.features(window, kinds=reference.inputs).categorical["input_ids"]
        live = profiles.category_counts(cells, tokens.values)
        token_test += two_sample.chi_square_pvalue(cells.counts, live) < 0.01
        row_test += detect(reference, window).verdict is Verdict.DRIFT
    assert token_test >= 30  # tokens taken as independent: almost every window "drifts"
    assert row_test <= 2  # the row as the unit: alpha 0.01, an expected 0.4 of 40


def test_a_change_in_the_topic_mix_is_found() -> None:
    reference = profiles.build(topical(2000, seed=1))
    for i in range(5):  # topic 0 in 25 % of the rows instead of 5 %
        report = detect(reference, topical(300, seed=500 + i, topic_zero=0.25))
        assert report.verdict is Verdict.DRIFT
        assert [f.name for f in report.features if f.drifted] == ["input_ids"]


def test_saying_every_sentence_twice_is_no_new_evidence() -> None:
    """Each row's counts doubled on both sides: token counts double (so does X²), the
    rows stay as many. The row-unit test's p-value must not move."""
    rng = np.random.default_rng(7)
    ref = rng.multinomial(30, [0.4, 0.3, 0.2, 0.1], size=400)
    live = rng.multinomial(30, [0.37, 0.31, 0.21, 0.11], size=300)
    once = two_sample.rao_scott_pvalue(row_counts(ref), row_counts(live))
    twice = two_sample.rao_scott_pvalue(row_counts(2 * ref), row_counts(2 * live))
    assert twice == pytest.approx(once, rel=1e-9)
    naive = two_sample.chi_square_pvalue(2 * ref.sum(axis=0), 2 * live.sum(axis=0))
    assert naive < once / 10  # counted as tokens, the same rows look far more significant


def test_independent_tokens_keep_the_plain_chi_square() -> None:
    """One token per row: the design effect is 1, so Rao-Scott is Pearson's test up to
    the rows/(rows-1) of the variance estimate."""
    rng = np.random.default_rng(8)
    shares = [0.5, 0.3, 0.2]
    ref = np.eye(3, dtype=np.int64)[rng.choice(3, size=5000, p=shares)]
    live = np.eye(3, dtype=np.int64)[rng.choice(3, size=4000, p=[0.48, 0.31, 0.21])]
    plain = two_sample.chi_square_pvalue(ref.sum(axis=0), live.sum(axis=0))
    assert two_sample.rao_scott_pvalue(row_counts(ref), row_counts(live)) == pytest.approx(
        plain, rel=0.02
    )


def test_a_profile_without_row_statistics_borrows_the_windows() -> None:
    """Profiles written before ``gram`` existed: the window's per-row covariance stands
    for the reference's (equal under H0), so they are still judged row by row."""
    rng = np.random.default_rng(9)
    ref = rng.multinomial(20, [0.4, 0.3, 0.2, 0.1], size=1000)
    live = rng.multinomial(20, [0.4, 0.3, 0.2, 0.1], size=1000)
    full = two_sample.rao_scott_pvalue(row_counts(ref), row_counts(live))
    borrowed = two_sample.rao_scott_pvalue(
        two_sample.RowCounts(ref.sum(axis=0), None, 0), row_counts(live)
    )
    assert borrowed == pytest.approx(full, abs=0.05)


def test_rows_all_alike_are_certain() -> None:
    same = np.tile([3, 1], (50, 1))
    assert two_sample.rao_scott_pvalue(row_counts(same), row_counts(same)) == 1.0
    other = np.tile([1, 3], (50, 1))
    assert two_sample.rao_scott_pvalue(row_counts(same), row_counts(other)) == 0.0


def test_the_share_of_non_finite_values_is_fishers_exact_test() -> None:
    # One NaN in 500 live values, none in 5000 reference ones: the table has two
    # possible arrangements, and the observed one has probability 500/5500.
    assert two_sample.nonfinite_pvalue(5000, 0, 500, 1) == pytest.approx(500 / 5500)
    assert two_sample.nonfinite_pvalue(5000, 0, 500, 0) == 1.0
    p = two_sample.nonfinite_pvalue(5000, 500, 500, 5)
    assert p == pytest.approx(stats.fisher_exact([[500, 4500], [5, 495]]).pvalue) and p < 1e-6


def test_psi_counts_non_finite_values_in_a_cell_of_their_own() -> None:
    edges = np.array([0.0])
    values = np.array([-1.0, 1.0])
    assert two_sample.psi(edges, values, values) == 0
    assert two_sample.psi(edges, values, values, 0.1, 0.1) == pytest.approx(0.0)
    # Half the live values non-finite, none in the reference: the finite cells
    # shrink to 0.25 each, the non-finite one grows from the floor to 0.5.
    expected = 2 * (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.5 - two_sample.EPS) * np.log(
        0.5 / two_sample.EPS
    )
    assert two_sample.psi(edges, values, values, 0.0, 0.5) == pytest.approx(expected)
