"""The A/B experiment's decision: which arm wins, or "no difference", by stated tests.

Per metric, each challenger arm against the control arm:
- error rate: two-proportion z-test (pooled), H0: equal error rates;
- latency: Mann-Whitney U on per-request latencies, H0: neither arm's latencies tend
  to be larger (scipy).
Significance ``alpha`` is split over the comparisons (Bonferroni). No decision before
every arm has ``min_requests``; at ``max_duration_s`` without a significant
difference the experiment ends with "no difference" and the control stays.
A challenger wins when it is significantly better on a metric and significantly worse
on none; one significantly worse on any metric loses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import stats


class Decision(StrEnum):
    CONTINUE = "continue"  # not enough data yet, and time is left
    WINNER = "winner"
    NO_DIFFERENCE = "no-difference"


@dataclass(frozen=True)
class Arm:
    name: str
    requests: int
    errors: int
    latencies_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class Comparison:
    arm: str
    metric: str  # "error_rate" or "latency"
    test: str
    p_value: float
    better: bool  # the challenger's direction, whatever the significance
    significant: bool


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    winner: str | None
    comparisons: tuple[Comparison, ...]
    reason: str


def two_proportion_pvalue(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float:
    pooled = (errors_a + errors_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (errors_a / n_a - errors_b / n_b) / se
    return float(2 * stats.norm.sf(abs(z)))


def decide(
    control: Arm,
    challengers: list[Arm],
    elapsed_s: float,
    min_requests: int = 500,
    max_duration_s: float = 3600.0,
    alpha: float = 0.05,
) -> Verdict:
    arms = [control, *challengers]
    if any(a.requests < min_requests for a in arms):
        if elapsed_s >= max_duration_s:
            return Verdict(Decision.NO_DIFFERENCE, None, (), "time is up before the minimum sample")
        return Verdict(Decision.CONTINUE, None, (), f"fewer than {min_requests} requests per arm")
    tests = 2 * len(challengers)
    level = alpha / tests
    comparisons: list[Comparison] = []
    for arm in challengers:
        p = two_proportion_pvalue(arm.errors, arm.requests, control.errors, control.requests)
        better = arm.errors / arm.requests < control.errors / control.requests
        comparisons.append(
            Comparison(arm.name, "error_rate", "two-proportion z", p, better, p < level)
        )
        if arm.latencies_ms and control.latencies_ms:
            result = stats.mannwhitneyu(arm.latencies_ms, control.latencies_ms)
            better = float(np.median(arm.latencies_ms)) < float(np.median(control.latencies_ms))
            p = float(result.pvalue)
            comparisons.append(
                Comparison(arm.name, "latency", "Mann-Whitney U", p, better, p < level)
            )
    winners = []
    for arm in challengers:
        mine = [c for c in comparisons if c.arm == arm.name and c.significant]
        if mine and all(c.better for c in mine):
            winners.append(arm.name)
    if len(winners) == 1:
        return Verdict(Decision.WINNER, winners[0], tuple(comparisons), "significantly better")
    if elapsed_s >= max_duration_s:
        return Verdict(
            Decision.NO_DIFFERENCE, None, tuple(comparisons), "no arm significantly better in time"
        )
    return Verdict(Decision.CONTINUE, None, tuple(comparisons), "no significant difference yet")
