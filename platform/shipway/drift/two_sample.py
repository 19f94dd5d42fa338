"""Two-sample tests, each with its null hypothesis stated. scipy where it has the test;
by hand only what it lacks (PSI, the kernel MMD with a permutation p-value)."""

from __future__ import annotations

import numpy as np
from scipy import stats

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


def psi(edges: np.ndarray, reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index over the reference's decile bins: a size of change,
    not a test (0.1 is read as moderate, 0.25 as major)."""
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    got = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(edges) + 1)
    return psi_counts(ref, got)


def psi_counts(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """PSI over cells already counted (bins, categories)."""
    p = np.maximum(reference_counts / reference_counts.sum(), EPS)
    q = np.maximum(live_counts / max(live_counts.sum(), 1), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_square_pvalue(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """Chi-square test of homogeneity on category counts. H0: reference and live
    values are drawn from one categorical distribution. Categories empty on both
    sides are dropped; ones rare in the reference pool into one, so that the expected
    counts the test relies on are not tiny."""
    table = np.vstack([reference_counts, live_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    expected_live = table[0] / table[0].sum() * table[1].sum()
    rare = expected_live < 5
    if rare.any() and (~rare).any():
        table = np.hstack([table[:, ~rare], table[:, rare].sum(axis=1, keepdims=True)])
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


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
