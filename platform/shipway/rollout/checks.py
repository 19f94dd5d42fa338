"""The analysis of one interval: candidate against stable, check by check.

A check without data (too few requests, no latency yet, no drift score) is
INCONCLUSIVE, never PASSED: a quiet canary must not be promoted for being quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 50  # candidate requests in the interval before anything is judged
    max_error_rate: float = 0.01  # absolute, 5xx and connection failures
    max_p50_ratio: float = 1.5  # candidate p50 / stable p50
    max_p99_ratio: float = 2.0
    max_drift_score: float | None = None  # PSI of candidate traffic vs stable; None: off


@dataclass(frozen=True)
class VariantStats:
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Observation:
    """What the MetricsProvider saw over one interval."""

    candidate: VariantStats
    stable: VariantStats
    drift_score: float | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    value: float | None
    limit: float | None


def analyse(obs: Observation, limits: Thresholds) -> tuple[Outcome, tuple[CheckResult, ...]]:
    c, s = obs.candidate, obs.stable
    results = [
        CheckResult(
            "requests",
            Outcome.PASSED if c.requests >= limits.min_requests else Outcome.INCONCLUSIVE,
            float(c.requests),
            float(limits.min_requests),
        )
    ]
    enough = c.requests >= limits.min_requests
    rate = c.error_rate
    results.append(
        CheckResult(
            "error_rate",
            Outcome.INCONCLUSIVE
            if not enough or rate is None
            else Outcome.PASSED
            if rate <= limits.max_error_rate
            else Outcome.FAILED,
            rate,
            limits.max_error_rate,
        )
    )
    for name, mine, theirs, limit in (
        ("p50_ratio", c.p50_ms, s.p50_ms, limits.max_p50_ratio),
        ("p99_ratio", c.p99_ms, s.p99_ms, limits.max_p99_ratio),
    ):
        ratio = mine / theirs if enough and mine is not None and theirs else None
        results.append(
            CheckResult(
                name,
                Outcome.INCONCLUSIVE
                if ratio is None
                else Outcome.PASSED
                if ratio <= limit
                else Outcome.FAILED,
                ratio,
                limit,
            )
        )
    if limits.max_drift_score is not None:
        score = obs.drift_score
        results.append(
            CheckResult(
                "drift_score",
                Outcome.INCONCLUSIVE
                if score is None
                else Outcome.PASSED
                if score <= limits.max_drift_score
                else Outcome.FAILED,
                score,
                limits.max_drift_score,
            )
        )
    outcomes = {r.outcome for r in results}
    overall = (
        Outcome.FAILED
        if Outcome.FAILED in outcomes
        else Outcome.INCONCLUSIVE
        if Outcome.INCONCLUSIVE in outcomes
        else Outcome.PASSED
    )
    return overall, tuple(results)
