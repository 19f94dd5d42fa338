"""One live window against a reference profile: the drift verdict and its evidence.

The decision: features are tested in three families — numeric (KS per feature, and
a test of the share of non-finite values where either side has any;
Benjamini-Hochberg across them), categorical (Rao-Scott chi-square per feature, the
row as the unit; BH across them) and embeddings (MMD per output, and the share of
non-finite rows; BH across them). The window drifts when any family's smallest
adjusted p-value is below ``alpha / families`` (Bonferroni across families), which
keeps the false-alarm rate of a whole window at or below ``alpha``. A window with
too few rows is "insufficient data", never "no drift"; a feature the profile has and
the window lacks (or carries in another shape) is reported as missing, not guessed.
Non-finite values are evidence, never an error: the finite ones go on to KS, PSI and
MMD, and a window of nothing but NaN is judged on its non-finite share alone.

A non-finite test runs only where the reference or the window has a non-finite
value: Fisher's test has p = 1 on a table whose non-finite column is empty, and
leaving out tests that cannot reject keeps the family's error rate while not
diluting it (Tarone, "A modified Bonferroni method for discrete data", Biometrics
46, 1990).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np

from shipway.drift import two_sample
from shipway.drift.profile import (
    InputSpec,
    ReferenceProfile,
    build,
    features,
    row_cells,
    row_count,
)

MAX_WINDOW_EMBEDDINGS = 200  # rows of a window's embeddings for the MMD test
MIN_EMBEDDING_ROWS = 30  # fewer sampled answers: the output test waits for more


class Verdict(StrEnum):
    DRIFT = "drift"
    NO_DRIFT = "no-drift"
    INSUFFICIENT_DATA = "insufficient-data"


@dataclass(frozen=True)
class FeatureResult:
    name: str
    test: str  # "ks", "non-finite", "chi-square", "mmd"
    p_value: float
    p_adjusted: float
    # PSI for "ks" and "chi-square", MMD² for "mmd", the window's share for "non-finite"
    statistic: float | None = None
    drifted: bool = False


@dataclass(frozen=True)
class DriftReport:
    verdict: Verdict
    rows: int
    alpha: float
    score: float  # the largest PSI over numeric and categorical features (0 if none)
    features: tuple[FeatureResult, ...] = ()
    missing: tuple[str, ...] = ()
    message: str | None = None

    @property
    def min_p_adjusted(self) -> float | None:
        return min((f.p_adjusted for f in self.features), default=None)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["min_p_adjusted"] = self.min_p_adjusted
        return data


@dataclass
class _Family:
    names: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    pvalues: list[float] = field(default_factory=list)
    stats: list[float | None] = field(default_factory=list)

    def add(self, name: str, test: str, p_value: float, statistic: float | None) -> None:
        self.names.append(name)
        self.tests.append(test)
        self.pvalues.append(float(p_value))
        self.stats.append(statistic)


def detect(
    profile: ReferenceProfile,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray] | None = None,
    alpha: float = 0.01,
    min_rows: int = 100,
    permutations: int = 500,
    expected_outputs: set[str] | None = None,
) -> DriftReport:
    """``inputs``: ``[rows, ...]`` arrays, read as the profile's input kinds say;
    ``outputs`` likewise for embeddings. ``expected_outputs`` names the outputs the
    window can carry (None: all the profile has); one of them absent from ``outputs``
    is reported missing. Never raises on the values themselves (NaN, ±inf, an empty
    or all-NaN feature)."""
    rows = row_count(inputs)
    numeric, categorical, embeddings = features(inputs, outputs, profile.inputs or None)
    expected = set(profile.embeddings) & (expected_outputs or set(profile.embeddings))
    usable = {
        name
        for name, live in embeddings.items()
        if name in profile.embeddings
        and live.ndim == 2
        and live.shape[1] == profile.embeddings[name].sample.shape[1]
    }
    missing = tuple(
        sorted(
            (set(profile.numeric) - set(numeric))
            | (set(profile.categorical) - set(categorical))
            | (expected - usable if outputs is not None else set())
        )
    )
    if rows < min_rows:
        return DriftReport(
            Verdict.INSUFFICIENT_DATA,
            rows,
            alpha,
            0.0,
            missing=missing,
            message=f"{rows} rows in the window; the tests need at least {min_rows}",
        )

    families: list[_Family] = []
    psis: list[float] = []

    num = _Family()
    for name, ref in profile.numeric.items():
        if name not in numeric:
            continue
        values = numeric[name]
        finite = values[np.isfinite(values)]
        nonfinite = len(values) - len(finite)
        if ref.nonfinite or nonfinite:
            p = two_sample.nonfinite_pvalue(ref.count, ref.nonfinite, len(values), nonfinite)
            num.add(name, "non-finite", p, nonfinite / len(values))
        value = two_sample.psi(
            ref.edges,
            ref.values,
            finite,
            ref.nonfinite / max(ref.count, 1),
            nonfinite / len(values),
        )
        psis.append(value)
        if len(finite) and len(ref.values):
            num.add(name, "ks", float(two_sample.ks_pvalues([ref.values], [finite])[0]), value)
    if num.names:
        families.append(num)

    cat = _Family()
    for name, ref in profile.categorical.items():
        if name not in categorical:
            continue
        per_row = row_cells(ref, categorical[name])
        live = np.asarray(per_row.sum(axis=0)).ravel()
        gram = (per_row.T @ per_row).toarray()
        p = two_sample.rao_scott_pvalue(
            two_sample.RowCounts(ref.counts, ref.gram, ref.rows),
            two_sample.RowCounts(live, gram, per_row.shape[0]),
        )
        value = two_sample.psi_counts(ref.counts, live)
        cat.add(name, "chi-square", p, value)
        psis.append(value)
    if cat.names:
        families.append(cat)

    emb = _Family()
    for name in sorted(usable):
        ref_emb, live = profile.embeddings[name], embeddings[name]
        finite = np.isfinite(live).all(axis=1)
        bad = int((~finite).sum())
        if ref_emb.nonfinite or bad:
            p = two_sample.nonfinite_pvalue(ref_emb.rows, ref_emb.nonfinite, len(live), bad)
            emb.add(name, "non-finite", p, bad / len(live))
        live = live[finite]
        if len(live) < MIN_EMBEDDING_ROWS or len(ref_emb.sample) < 2:
            continue
        if len(live) > MAX_WINDOW_EMBEDDINGS:
            live = live[np.linspace(0, len(live) - 1, MAX_WINDOW_EMBEDDINGS).round().astype(int)]
        statistic, p = two_sample.mmd_pvalue(ref_emb.sample, live.astype(np.float64), permutations)
        emb.add(name, "mmd", p, statistic)
    if emb.names:
        families.append(emb)

    results: list[FeatureResult] = []
    threshold = alpha / max(len(families), 1)
    for family in families:
        adjusted = two_sample.adjust(np.array(family.pvalues))
        for name, test, p, q, stat in zip(
            family.names, family.tests, family.pvalues, adjusted, family.stats, strict=True
        ):
            results.append(FeatureResult(name, test, p, float(q), stat, bool(q < threshold)))
    drifted = any(r.drifted for r in results)
    return DriftReport(
        Verdict.DRIFT if drifted else Verdict.NO_DRIFT,
        rows,
        alpha,
        max(psis, default=0.0),
        tuple(results),
        missing,
    )


def between(
    stable: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    alpha: float = 0.01,
    min_rows: int = 100,
    kinds: dict[str, InputSpec] | None = None,
) -> DriftReport:
    """The rollout check: does a candidate's traffic look like stable's? The stable
    window plays the reference profile's part, its inputs read as ``kinds`` says (the
    stable version's profile; None: decided from the stable window)."""
    return detect(build(stable, kinds=kinds), candidate, alpha=alpha, min_rows=min_rows)
