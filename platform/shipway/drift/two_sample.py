"""Two-sample tests, each with its null hypothesis stated. scipy where it has the test;
by hand only what it lacks (PSI, the kernel MMD with a permutation p-value)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

EPS = 1e-4  # floor of a bin share in PSI, so an empty bin does not make it infinite


def ks_pvalues(reference: list[np.ndarray], live: list[np.ndarray]) -> np.ndarray:
    """Kolmogorov-Smirnov per feature. H0: live values come from the reference's
    distribution. Asymptotic p-values: exact ones cost O(n·m) and windows are large."""
    return np.array(
        [stats.ks_2samp(r, x, method="asymp").pvalue for r, x in zip(reference, live, strict=True)]
    )


def adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values across the features of one window."""
    if pvalues.size == 0:
        return pvalues
    return stats.false_discovery_control(pvalues, method="bh")


def psi(
    edges: np.ndarray,
    reference: np.ndarray,
    live: np.ndarray,
    reference_nonfinite: float = 0.0,
    live_nonfinite: float = 0.0,
) -> float:
    """Population stability index over the reference's decile bins, plus one cell for
    non-finite values (shares of all values, given apart because only finite values
    are binned): a size of change, not a test (0.1 is read as moderate, 0.25 as major)."""
    cells = len(edges) + 1

    def shares(values: np.ndarray, nonfinite: float) -> np.ndarray:
        binned = np.bincount(np.searchsorted(edges, values, side="right"), minlength=cells)
        return np.append(binned / max(len(values), 1) * (1 - nonfinite), nonfinite)

    return psi_counts(shares(reference, reference_nonfinite), shares(live, live_nonfinite))


def psi_counts(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """PSI over cells already counted (bins, categories)."""
    p = np.maximum(reference_counts / max(reference_counts.sum(), 1e-300), EPS)
    q = np.maximum(live_counts / max(live_counts.sum(), 1e-300), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def nonfinite_pvalue(
    reference_total: int, reference_nonfinite: int, live_total: int, live_nonfinite: int
) -> float:
    """Fisher's exact test on the 2x2 table of non-finite / finite counts. H0: values
    are non-finite (NaN, ±inf) as often in the window as in the reference."""
    table = [
        [reference_nonfinite, reference_total - reference_nonfinite],
        [live_nonfinite, live_total - live_nonfinite],
    ]
    return float(stats.fisher_exact(table).pvalue)


@dataclass(frozen=True)
class RowCounts:
    """Category counts of a sample whose unit is the row (a sentence), not the token:
    ``counts`` = Σ_rows y and ``gram`` = Σ_rows y yᵀ over the rows' cell-count vectors
    y, ``rows`` how many. ``gram`` None: unknown (then the other sample's per-row
    covariance stands for both, which H0 makes equal)."""

    counts: np.ndarray  # [cells]
    gram: np.ndarray | None  # [cells, cells]
    rows: int


def _pooling(reference_counts: np.ndarray, live_counts: np.ndarray) -> sparse.csr_matrix:
    """[cells, kept] 0/1: cells empty on both sides dropped; cells rare in the
    reference (expected live count under 5) pooled into one, so that the expected
    counts the chi-square approximation relies on are not tiny."""
    kept = np.flatnonzero(reference_counts + live_counts > 0)
    expected_live = reference_counts[kept] / max(reference_counts.sum(), 1) * live_counts.sum()
    rare = expected_live < 5
    pool = bool(rare.any() and (~rare).any())
    target = np.arange(len(kept))
    if pool:
        target[~rare] = np.arange(int((~rare).sum()))
        target[rare] = int((~rare).sum())
    return sparse.csr_matrix(
        (np.ones(len(kept)), (kept, target)),
        shape=(len(reference_counts), int(target.max(initial=-1)) + 1),
    )


def _row_covariance(sample: RowCounts, pooling: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Σ_rows (y - m p̂)(y - m p̂)ᵀ / (rows - 1) in the pooled cells, and rows: the
    per-row covariance of cell counts about the ratio estimate p̂ (Taylor
    linearisation; Cochran, Sampling Techniques, 3rd ed., 1977, §6.11)."""
    if sample.gram is None or sample.rows < 2:
        return None
    gram = pooling.T @ (pooling.T @ sample.gram).T  # symmetric: Pᵀ G P
    total = pooling.T @ sample.counts
    p = total / max(total.sum(), 1e-300)
    by_length = gram.sum(axis=1)  # Σ m y, m = a row's total count
    squares = by_length.sum()  # Σ m²
    centred = gram - np.outer(p, by_length) - np.outer(by_length, p) + squares * np.outer(p, p)
    return centred / (sample.rows - 1), sample.rows


def rao_scott_pvalue(reference: RowCounts, live: RowCounts) -> float:
    """Chi-square test of homogeneity with the row as the sampling unit: Pearson's X²
    on the pooled 2 x cells table, with the Rao-Scott second-order correction. H0:
    reference and live rows draw their values from one categorical distribution.

    Tokens of one sentence are not independent draws (a topic brings its words
    together, a word recurs), so X² over token counts is far from χ²(cells-1) on real
    text: taken as independent, they made 15 % of same-corpus windows of CPython's
    documentation drift at alpha 0.01 (benchmarks/drift.py; 0.2 % with this test).
    Each sample's proportions are ratio estimates over rows with a linearised
    covariance V; X² is then asymptotically Σ λ_j χ²₁ with λ the eigenvalues of
    diag(1/p̄)(V_ref + V_live)/(1/M_ref + 1/M_live) (M: tokens, p̄: pooled shares).
    The second-order correction (Satterthwaite) matches that law's mean and variance:
    X²·tr/ss ~ χ²(tr²/ss), tr = Σλ, ss = Σλ². Rao & Scott, "On chi-squared tests for
    multiway contingency tables with cell proportions estimated from survey data",
    Annals of Statistics 12(1), 1984; the second-order test of SAS PROC SURVEYFREQ
    (``CHISQ(SECONDORDER)``). Second order rather than first (X²/mean λ): design
    effects vary across tokens, and the first-order test then rejects too often
    (Thomas & Rao, JASA 82, 1987) — here 3-6 % at 1 % on windows of 50-200 rows.
    Rows all alike on both sides (no variance) give p 0 for any difference, 1 for none."""
    pooling = _pooling(reference.counts.astype(np.float64), live.counts.astype(np.float64))
    table = np.vstack([pooling.T @ reference.counts, pooling.T @ live.counts]).astype(np.float64)
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return 1.0
    chi2 = float(stats.chi2_contingency(table, correction=False).statistic)
    totals = table.sum(axis=1)
    pooled = table.sum(axis=0) / totals.sum()
    known = [_row_covariance(sample, pooling) for sample in (reference, live)]
    if known[0] is None and known[1] is None:  # no rows to learn from: tokens independent
        return float(stats.chi2.sf(chi2, table.shape[1] - 1))
    covariance = np.zeros((table.shape[1], table.shape[1]))
    for side in (0, 1):
        # V = rows·Σ_row / M². A side without row data borrows the other's Σ_row, and
        # its rows from the other's rows per count (both equal under H0).
        source = side if known[side] is not None else 1 - side
        per_row, rows = known[source]  # type: ignore[misc]
        covariance += rows * totals[side] / totals[source] * per_row / totals[side] ** 2
    scale = 1 / np.sqrt(pooled)
    design = scale[:, None] * covariance * scale[None, :] / (1 / totals[0] + 1 / totals[1])
    trace, squares = float(np.trace(design)), float(np.sum(design**2))
    if squares <= 0 or trace <= 0:
        return 0.0 if chi2 > 0 else 1.0
    return float(stats.chi2.sf(chi2 * trace / squares, trace**2 / squares))


def chi_square_pvalue(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """Chi-square test of homogeneity on category counts, each count an independent
    draw (no row structure). H0: reference and live values are drawn from one
    categorical distribution. Cells pooled as in ``rao_scott_pvalue``."""
    return rao_scott_pvalue(RowCounts(reference_counts, None, 0), RowCounts(live_counts, None, 0))


def mmd_pvalue(
    reference: np.ndarray, live: np.ndarray, permutations: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Maximum mean discrepancy with a Gaussian kernel (median-distance bandwidth) and
    a permutation p-value. H0: the two sets of vectors share one distribution.
    Returns (unbiased MMD², p).

    All permutations are scored with one matrix product (kernel @ group indicators),
    so a thousand of them cost about as much as one pass of a Python loop would; the
    smallest p-value is 1 / (permutations + 1). Cost O((n+m)² · permutations): callers
    cap n and m."""
    pooled = np.vstack([reference, live]).astype(np.float64)
    total, n = len(pooled), len(reference)
    m = total - n
    sq = np.sum(pooled**2, axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    bandwidth = np.median(distances[np.triu_indices(total, 1)])
    kernel = np.exp(-distances / max(bandwidth, 1e-12))
    row_sums = kernel.sum(axis=1)
    everything = row_sums.sum()

    rng = np.random.default_rng(seed)
    groups = np.zeros((total, permutations + 1))
    groups[:n, 0] = 1.0  # column 0: the observed split
    for j in range(1, permutations + 1):
        groups[rng.permutation(total)[:n], j] = 1.0
    k_groups = kernel @ groups  # column j: each point's kernel sum over group A of split j
    within_a = np.einsum("ij,ij->j", groups, k_groups)
    across = groups.T @ row_sums - within_a
    within_b = everything - within_a - 2 * across
    # Unbiased estimate: the diagonals (each point with itself, kernel 1) left out.
    mmd = (within_a - n) / (n * (n - 1)) + (within_b - m) / (m * (m - 1)) - 2 * across / (n * m)
    observed = float(mmd[0])
    p_value = (1 + int(np.sum(mmd[1:] >= observed))) / (permutations + 1)
    return observed, p_value
