"""The A/B experiment's decision: which arm wins, or "no difference", by stated tests.

Per metric, each challenger arm against the control arm:
- error rate (5xx and the gateway's own failures): two-proportion z-test (pooled),
  H0: equal error rates;
- client error rate (4xx): the same test — a challenger that refuses requests the
  control accepts is worse, whatever its latency;
- latency: Mann-Whitney U on per-request time to a good answer, H0: neither arm's
  latencies tend to be larger (scipy). A failed or refused request counts as slower
  than any answer (``counts.arm``), so an arm cannot win on the latency of the
  requests it did answer.
Significance ``alpha`` is split over the comparisons (Bonferroni). No decision before
every arm has ``min_requests``; at ``max_duration_seconds`` without a significant
difference the experiment ends with "no difference" and the control stays.
A challenger wins when it is significantly better on a metric and significantly worse
on none; one significantly worse on any metric loses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from scipy import stats

from shipway.errors import Conflict, InvalidInput
from shipway.rollout.state import Action, Phase, Promote, Record, Rollback, SetWeight, State


class Decision(StrEnum):
    CONTINUE = "continue"  # not enough data yet, and time is left
    WINNER = "winner"
    NO_DIFFERENCE = "no-difference"


@dataclass(frozen=True)
class Arm:
    name: str
    requests: int
    errors: int  # 5xx and gateway failures
    latencies_ms: tuple[float, ...] = ()  # failed requests as +inf
    client_errors: int = 0  # 4xx

    @property
    def accepted(self) -> int:
        return self.requests - self.client_errors


@dataclass(frozen=True)
class Comparison:
    arm: str
    metric: str  # "error_rate", "client_error_rate" or "latency"
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
    max_duration_seconds: float = 3600.0,
    alpha: float = 0.05,
) -> Verdict:
    arms = [control, *challengers]
    if any(a.requests < min_requests for a in arms):
        if elapsed_s >= max_duration_seconds:
            return Verdict(Decision.NO_DIFFERENCE, None, (), "time is up before the minimum sample")
        return Verdict(Decision.CONTINUE, None, (), f"fewer than {min_requests} requests per arm")
    tests = 3 * len(challengers)
    level = alpha / tests
    comparisons: list[Comparison] = []
    for arm in challengers:
        for metric, mine, n_mine, theirs, n_theirs in (
            # failures as a share of the requests not refused as the client's own
            ("error_rate", arm.errors, arm.accepted, control.errors, control.accepted),
            (
                "client_error_rate",
                arm.client_errors,
                arm.requests,
                control.client_errors,
                control.requests,
            ),
        ):
            if n_mine <= 0 or n_theirs <= 0:
                continue
            p = two_proportion_pvalue(mine, n_mine, theirs, n_theirs)
            better = mine / n_mine < theirs / n_theirs
            comparisons.append(
                Comparison(arm.name, metric, "two-proportion z", p, better, p < level)
            )
        if arm.latencies_ms and control.latencies_ms:
            result = stats.mannwhitneyu(arm.latencies_ms, control.latencies_ms)
            better = float(np.median(arm.latencies_ms)) < float(np.median(control.latencies_ms))
            p = float(result.pvalue)
            comparisons.append(
                Comparison(arm.name, "latency", "Mann-Whitney U", p, better, p < level)
            )
    winners, losers = [], []
    for arm in challengers:
        mine = [c for c in comparisons if c.arm == arm.name and c.significant]
        if mine and all(c.better for c in mine):
            winners.append(arm.name)
        elif any(not c.better for c in mine):
            losers.append(arm.name)
    if len(winners) == 1:
        return Verdict(Decision.WINNER, winners[0], tuple(comparisons), "significantly better")
    if len(losers) == len(challengers):
        return Verdict(
            Decision.WINNER,
            control.name,
            tuple(comparisons),
            "every challenger significantly worse",
        )
    if elapsed_s >= max_duration_seconds:
        return Verdict(
            Decision.NO_DIFFERENCE, None, tuple(comparisons), "no arm significantly better in time"
        )
    return Verdict(Decision.CONTINUE, None, tuple(comparisons), "no significant difference yet")


# ---- the experiment as a state machine, in the canary's vocabulary ------------------


@dataclass(frozen=True)
class ExperimentSpec:
    """Control is the stable variant; the challenger takes ``weight`` percent, sticky by
    request key so one user stays in one arm for the whole experiment."""

    weight: int = 50
    interval_seconds: float = 30.0
    min_requests: int = 500
    max_duration_seconds: float = 3600.0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.weight <= 99:
            raise InvalidInput(f"the challenger's weight must be within 1..99, got {self.weight}")
        if (
            not 0 < self.interval_seconds <= 86_400
            or not 0 < self.max_duration_seconds <= 2_592_000
        ):
            raise InvalidInput(
                "the interval must be within (0, 86400] s and the maximum duration within "
                "(0, 2592000] s (30 days)"
            )
        if self.min_requests < 1:
            raise InvalidInput("the minimum sample must be positive")
        if not 0 < self.alpha < 1:
            raise InvalidInput(f"alpha must be within (0, 1), got {self.alpha}")


def start_experiment(spec: ExperimentSpec, now: float) -> tuple[State, list[Action]]:
    state = State(Phase.PROGRESSING, 0, spec.weight, now, now)
    return state, [
        SetWeight(spec.weight),
        Record("experiment.started", f"challenger at {spec.weight} %", {"alpha": spec.alpha}),
    ]


def advance_experiment(
    spec: ExperimentSpec,
    state: State,
    arms: tuple[Arm, Arm] | None,
    now: float,
) -> tuple[State, list[Action]]:
    """One tick with (control, challenger) counted since the start; decides once per
    interval. A winning challenger is promoted; a winning control, or no difference at
    the deadline, rolls the challenger back. ``arms`` None: no metrics this time."""
    if state.phase is not Phase.PROGRESSING or now - state.last_analysis_at < spec.interval_seconds:
        return state, []
    state = replace(state, last_analysis_at=now)
    if arms is None:
        if now - state.started_at >= spec.max_duration_seconds:
            reason = "no difference: time is up, and no metrics to decide on"
            done = replace(state, phase=Phase.ROLLED_BACK, weight=0, reason=reason)
            return done, [SetWeight(0), Rollback(), Record("experiment.decided", reason, {})]
        return state, [Record("experiment.check-inconclusive", "metrics unavailable", {})]
    control, challenger = arms
    verdict = decide(
        control, [challenger], now - state.started_at, spec.min_requests, spec.max_duration_seconds,
        spec.alpha,
    )  # fmt: skip
    numbers: dict[str, object] = {
        "arms": {
            a.name: {"requests": a.requests, "errors": a.errors, "client_errors": a.client_errors}
            for a in arms
        },
        "comparisons": [
            {
                "arm": c.arm,
                "metric": c.metric,
                "test": c.test,
                "p_value": c.p_value,
                "better": c.better,
                "significant": c.significant,
            }
            for c in verdict.comparisons
        ],
        "alpha": spec.alpha,
    }
    if verdict.decision is Decision.CONTINUE:
        return state, [Record("experiment.check", verdict.reason, numbers)]
    if verdict.winner == challenger.name:
        done = replace(
            state, phase=Phase.SUCCEEDED, weight=100, winner=challenger.name, reason=verdict.reason
        )
        return done, [
            SetWeight(100),
            Promote(),
            Record("experiment.decided", f"{challenger.name} wins: {verdict.reason}", numbers),
        ]
    winner = control.name if verdict.winner == control.name else None
    reason = verdict.reason if winner else f"no difference: {verdict.reason}"
    done = replace(state, phase=Phase.ROLLED_BACK, weight=0, winner=winner, reason=reason)
    summary = f"{winner} wins: {reason}" if winner else reason
    return done, [SetWeight(0), Rollback(), Record("experiment.decided", summary, numbers)]


def promote_challenger(state: State) -> tuple[State, list[Action]]:
    """An operator ends the experiment early in the challenger's favour."""
    if state.phase.finished:
        raise Conflict(f"the experiment already {state.phase}")
    done = replace(state, phase=Phase.SUCCEEDED, weight=100, reason="promoted by an operator")
    return done, [SetWeight(100), Promote(), Record("experiment.decided", done.reason, {})]
