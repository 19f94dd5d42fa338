"""The analysis of one interval: candidate against stable, check by check.

A check without data (too few requests, no latency yet, no drift score) is
INCONCLUSIVE, never PASSED: a quiet canary must not be promoted for being quiet.

A check fails only when the candidate is worse beyond reasonable doubt, judged on a
one-sided lower confidence bound rather than on the point estimate: the error rate's
Wilson bound, and the latency quantile's order-statistic bound (the k-th fastest
request, k from the binomial distribution). One second of canary traffic is a few
dozen requests, whose raw p99 is their slowest one; rolling back on that alone would
roll back healthy builds on every hiccup of a shared machine. The point estimates are
reported alongside.

What counts as a failed request: every answer a client got from the gateway is
counted once, by class. 5xx answers and the gateway's own failures (no ready replica,
upstream timeout, connection reset) are errors, judged against ``max_error_rate`` as a
share of the requests not answered 4xx (bad requests must not dilute failures).
4xx answers are judged relative to stable's 4xx rate: clients that send bad requests
to both variants do not fail the candidate, a candidate that refuses requests stable
accepts (a renamed input, a changed shape) does. The yardstick is stable's traffic in
the same interval, or, when stable served too little alongside (the candidate at
100 %), stable's longer record (``Observation.stable_reference``); without either the
check does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scipy import stats

from shipway.errors import InvalidInput
from shipway.rollout.shadow import ShadowCounts, wilson


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    # latency against stable when stable served too little alongside (the candidate at
    # 100 %): no fair yardstick, so not judged; regressions are caught at lower steps
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 50  # candidate requests in the interval before anything is judged
    max_error_rate: float = 0.01  # absolute: 5xx and the gateway's own failures
    # 4xx rate above stable's, absolute (0.01: one more refused request in a hundred)
    max_client_error_increase: float = 0.01
    max_p50_ratio: float = 1.5  # candidate p50 / stable p50
    max_p99_ratio: float = 2.0
    max_drift_score: float | None = None  # PSI of candidate traffic vs stable; None: off
    confidence: float = 0.95  # one-sided, of the bounds a failure is judged on

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise InvalidInput(f"confidence must be within [0.5, 1), got {self.confidence}")
        if self.min_requests < 1 or not 0 <= self.max_error_rate <= 1:
            raise InvalidInput("min_requests must be >= 1 and max_error_rate within [0, 1]")
        if self.max_drift_score is not None and self.max_drift_score < 0:
            raise InvalidInput("max_drift_score (a PSI) cannot be negative")
        if not 0 <= self.max_client_error_increase < 1:
            raise InvalidInput("max_client_error_increase must be within [0, 1)")
        if self.max_p50_ratio <= 0 or self.max_p99_ratio <= 0:
            raise InvalidInput("latency ratio limits must be positive")


@dataclass(frozen=True)
class VariantStats:
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    # lower confidence bounds of the quantiles; None: only the point value is known
    p50_low_ms: float | None = None
    p99_low_ms: float | None = None
    client_errors: int = 0  # 4xx answers, part of ``requests``

    @property
    def accepted(self) -> int:
        """Requests not refused as the client's own (4xx): what errors are a share of."""
        return self.requests - self.client_errors

    @property
    def error_rate(self) -> float | None:
        """5xx and gateway failures over the requests not refused with a 4xx: clients
        sending bad requests must not dilute a candidate's failures."""
        return self.errors / self.accepted if self.accepted > 0 else None

    @property
    def client_error_rate(self) -> float | None:
        return self.client_errors / self.requests if self.requests else None


def wilson_low(successes: int, total: int, confidence: float) -> float:
    """One-sided lower Wilson bound: the two-sided interval at 2c - 1 has it as its low end."""
    return wilson(successes, total, 2 * confidence - 1)[0]


def difference_low(
    successes_a: int, total_a: int, successes_b: int, total_b: int, confidence: float
) -> float:
    """One-sided lower confidence bound of ``p_a - p_b`` for two independent proportions:
    Newcombe's hybrid score interval (method 10 of R. G. Newcombe, "Interval estimation
    for the difference between independent proportions", Statistics in Medicine 17,
    1998), built from each proportion's Wilson interval; well behaved at 0 and 1,
    where the Wald interval is not."""
    level = 2 * confidence - 1
    p_a, p_b = successes_a / total_a, successes_b / total_b
    low_a, _ = wilson(successes_a, total_a, level)
    _, high_b = wilson(successes_b, total_b, level)
    return (p_a - p_b) - ((p_a - low_a) ** 2 + (high_b - p_b) ** 2) ** 0.5


def quantile_rank(n: int, q: float, confidence: float) -> int:
    """The rank k (1-based) whose order statistic is a lower bound of the q-quantile:
    P(X_(k) <= quantile) >= confidence."""
    return max(1, int(stats.binom.ppf(1 - confidence, n, q)))


@dataclass(frozen=True)
class Observation:
    """What the MetricsProvider saw over one interval."""

    candidate: VariantStats
    stable: VariantStats
    drift_score: float | None = None
    shadow: ShadowCounts | None = None  # mirrored answers since the shadow began
    # stable over a longer span (its record up to now): the 4xx yardstick when stable
    # served too little in the interval itself
    stable_reference: VariantStats | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    value: float | None  # the point estimate
    limit: float | None
    bound: float | None = None  # the lower confidence bound the outcome was judged on


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
    rate_low = wilson_low(c.errors, c.accepted, limits.confidence) if c.accepted > 0 else None
    results.append(
        CheckResult(
            "error_rate",
            Outcome.INCONCLUSIVE
            if not enough or rate is None or rate_low is None
            else Outcome.PASSED
            if rate_low <= limits.max_error_rate
            else Outcome.FAILED,
            rate,
            limits.max_error_rate,
            rate_low,
        )
    )
    results.append(_client_errors(obs, limits, enough))
    for name, mine, low, theirs, limit in (
        ("p50_ratio", c.p50_ms, c.p50_low_ms, s.p50_ms, limits.max_p50_ratio),
        ("p99_ratio", c.p99_ms, c.p99_low_ms, s.p99_ms, limits.max_p99_ratio),
    ):
        ratio = mine / theirs if enough and mine is not None and theirs else None
        judged = ratio if low is None or ratio is None or not theirs else low / theirs
        results.append(
            CheckResult(
                name,
                Outcome.NOT_APPLICABLE
                if s.requests < limits.min_requests
                else Outcome.INCONCLUSIVE
                if judged is None
                else Outcome.PASSED
                if judged <= limit
                else Outcome.FAILED,
                ratio,
                limit,
                judged,
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
    outcomes = {r.outcome for r in results} - {Outcome.NOT_APPLICABLE}
    overall = (
        Outcome.FAILED
        if Outcome.FAILED in outcomes
        else Outcome.INCONCLUSIVE
        if Outcome.INCONCLUSIVE in outcomes
        else Outcome.PASSED
    )
    return overall, tuple(results)


def _client_errors(obs: Observation, limits: Thresholds, enough: bool) -> CheckResult:
    """4xx beyond stable's: the candidate's 4xx rate minus stable's, judged on the lower
    confidence bound of the difference."""
    c = obs.candidate
    yardstick = next(
        (
            s
            for s in (obs.stable, obs.stable_reference)
            if s is not None and s.requests >= limits.min_requests
        ),
        None,
    )
    name, limit = "client_error_excess", limits.max_client_error_increase
    if not enough:  # the point value all the same: the timeline shows what is seen
        seen = c.client_error_rate
        if seen is not None and yardstick is not None:
            seen -= yardstick.client_errors / yardstick.requests
        return CheckResult(name, Outcome.INCONCLUSIVE, seen, limit)
    if yardstick is None:
        # nothing to tell the clients' own 4xx from the candidate's: few enough 4xx
        # pass, more cannot be judged (inconclusive, never a pass)
        rate = c.client_errors / c.requests
        low = wilson_low(c.client_errors, c.requests, limits.confidence)
        outcome = Outcome.INCONCLUSIVE if low > limit else Outcome.PASSED
        return CheckResult(name, outcome, rate, limit, low)
    value = c.client_errors / c.requests - yardstick.client_errors / yardstick.requests
    low = difference_low(
        c.client_errors, c.requests, yardstick.client_errors, yardstick.requests, limits.confidence
    )
    outcome = Outcome.FAILED if low > limit else Outcome.PASSED
    return CheckResult(name, outcome, value, limit, low)
