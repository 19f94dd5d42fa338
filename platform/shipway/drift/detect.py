"""One live window against a reference profile: the drift verdict and its evidence.

The decision: features are tested in three families — numeric (KS per feature,
Benjamini-Hochberg across them), categorical (chi-square per feature, BH across
them) and embeddings (MMD per output, BH across them). The window drifts when any
family's smallest adjusted p-value is below ``alpha / families`` (Bonferroni across
families), which keeps the false-alarm rate of a whole window at or below ``alpha``.
A window with too few rows is "insufficient data", never "no drift"; a feature the
profile has and the window lacks is reported as missing, not guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np

from shipway.drift import two_sample
from shipway.drift.profile import ReferenceProfile, build, category_counts, features

MAX_WINDOW_EMBEDDINGS = 200  # rows of a window's embeddings for the MMD test
MIN_EMBEDDING_ROWS = 30  # fewer sampled answers: the output test waits for more


class Verdict(StrEnum):
    DRIFT = "drift"
    NO_DRIFT = "no-drift"
    INSUFFICIENT_DATA = "insufficient-data"


@dataclass(frozen=True)
class FeatureResult:
    name: str
    test: str  # "ks", "chi-square", "mmd"
    p_value: float
    p_adjusted: float
    statistic: float | None = None  # PSI for numeric and categorical, MMD² for embeddings
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
    """``expected_outputs`` names the outputs the window can carry (None: all the
    profile has); one of them absent from ``outputs`` is reported missing."""
    rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    numeric, categorical, embeddings = features(inputs, outputs)
    missing = tuple(
        sorted(
            (set(profile.numeric) - set(numeric))
            | (set(profile.categorical) - set(categorical))
            | (
                (set(profile.embeddings) & (expected_outputs or set(profile.embeddings)))
                - set(embeddings)
                if outputs is not None
                else set()
            )
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
    names = [n for n in profile.numeric if n in numeric]
    if names:
        pvalues = two_sample.ks_pvalues(
            [profile.numeric[n].values for n in names], [numeric[n] for n in names]
        )
        for name, p in zip(names, pvalues, strict=True):
            value = two_sample.psi(
                profile.numeric[name].edges, profile.numeric[name].values, numeric[name]
            )
            num.add(name, "ks", p, value)
            psis.append(value)
        families.append(num)

    cat = _Family()
    for name, ref in profile.categorical.items():
        if name not in categorical:
            continue
        live = category_counts(ref, categorical[name])
        p = two_sample.chi_square_pvalue(ref.counts, live)
        value = two_sample.psi_counts(ref.counts, live)
        cat.add(name, "chi-square", p, value)
        psis.append(value)
    if cat.names:
        families.append(cat)

    emb = _Family()
    for name, ref in profile.embeddings.items():
        if name not in embeddings:
            continue
        live = embeddings[name]
        if len(live) < MIN_EMBEDDING_ROWS:
            continue
        if len(live) > MAX_WINDOW_EMBEDDINGS:
            live = live[np.linspace(0, len(live) - 1, MAX_WINDOW_EMBEDDINGS).round().astype(int)]
        statistic, p = two_sample.mmd_pvalue(ref, live.astype(np.float64), permutations)
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
) -> DriftReport:
    """The rollout check: does a candidate's traffic look like stable's? The stable
    window plays the reference profile's part."""
    return detect(build(stable), candidate, alpha=alpha, min_rows=min_rows)
