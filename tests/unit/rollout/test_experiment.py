from __future__ import annotations

import math

import numpy as np
import pytest

from shipway.errors import Conflict, InvalidInput
from shipway.rollout import counts
from shipway.rollout.counts import VariantCounts
from shipway.rollout.experiment import (
    Arm,
    Decision,
    ExperimentSpec,
    advance_experiment,
    decide,
    promote_challenger,
    start_experiment,
    two_proportion_pvalue,
)
from shipway.rollout.state import Phase, Promote, Record, Rollback, SetWeight

INF = math.inf
RNG = np.random.default_rng(0)


def latencies(n: int, median: float) -> tuple[float, ...]:
    return tuple(RNG.lognormal(np.log(median), 0.3, n))


def test_two_proportion_z_test() -> None:
    assert two_proportion_pvalue(50, 1000, 50, 1000) == 1.0
    assert two_proportion_pvalue(10, 1000, 60, 1000) < 1e-6
    assert two_proportion_pvalue(0, 100, 0, 100) == 1.0


def test_no_decision_before_the_minimum_sample() -> None:
    verdict = decide(Arm("a", 100, 1), [Arm("b", 900, 1)], elapsed_s=10, min_requests=500)
    assert verdict.decision is Decision.CONTINUE
    late = decide(Arm("a", 100, 1), [Arm("b", 900, 1)], elapsed_s=4000, max_duration_seconds=3600)
    assert late.decision is Decision.NO_DIFFERENCE


def test_a_faster_equally_reliable_arm_wins() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    faster = Arm("b", 2000, 9, latencies(2000, 15.0))
    verdict = decide(control, [faster], elapsed_s=60)
    assert verdict.decision is Decision.WINNER and verdict.winner == "b"
    latency = next(c for c in verdict.comparisons if c.metric == "latency")
    assert latency.significant and latency.better and latency.test == "Mann-Whitney U"


def test_faster_but_failing_more_loses_to_the_control() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    risky = Arm("b", 2000, 80, latencies(2000, 15.0))
    verdict = decide(control, [risky], elapsed_s=60)
    assert verdict.decision is Decision.WINNER and verdict.winner == "a"
    assert {(c.metric, c.better, c.significant) for c in verdict.comparisons} == {
        ("error_rate", False, True),
        ("client_error_rate", False, False),
        ("latency", True, True),
    }


def test_a_faster_arm_that_refuses_requests_loses() -> None:
    control = Arm("a", 2000, 0, latencies(2000, 20.0), client_errors=20)
    refusing = Arm("b", 2000, 0, latencies(2000, 15.0), client_errors=200)
    verdict = decide(control, [refusing], elapsed_s=60)
    assert verdict.decision is Decision.WINNER and verdict.winner == "a"
    refused = next(c for c in verdict.comparisons if c.metric == "client_error_rate")
    assert refused.significant and not refused.better


def test_fast_failures_do_not_win_on_latency() -> None:
    # the challenger answers 30 % of requests with an error and the rest as quickly as
    # the control; timed on its good answers alone it would look no slower
    bounds = (0.001, 0.002, 0.02, 0.03, INF)
    control = VariantCounts(1000, 0, tuple(zip(bounds, (0, 0, 500, 1000, 1000), strict=True)))
    fast_failing = VariantCounts(1000, 300, tuple(zip(bounds, (0, 0, 350, 700, 700), strict=True)))
    verdict = decide(counts.arm("a", control), [counts.arm("b", fast_failing)], 60, 500)
    latency = next(c for c in verdict.comparisons if c.metric == "latency")
    assert not latency.better and verdict.winner == "a"


def test_same_arms_end_with_no_difference_at_the_deadline() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    same = Arm("b", 2000, 11, latencies(2000, 20.0))
    assert decide(control, [same], elapsed_s=60).decision is Decision.CONTINUE
    verdict = decide(control, [same], elapsed_s=3600, max_duration_seconds=3600)
    assert verdict.decision is Decision.NO_DIFFERENCE and verdict.winner is None


# ---- the experiment's state machine ------------------------------------------------

SPEC = ExperimentSpec(weight=50, interval_seconds=1.0, min_requests=500, max_duration_seconds=30.0)


def test_the_state_machine_waits_then_promotes_a_winning_challenger() -> None:
    state, actions = start_experiment(SPEC, 0.0)
    assert actions[0] == SetWeight(50) and state.phase is Phase.PROGRESSING
    small = (Arm("stable", 100, 0), Arm("candidate", 100, 0))
    assert advance_experiment(SPEC, state, small, 0.5) == (state, [])  # not an interval yet
    state, actions = advance_experiment(SPEC, state, small, 1.0)
    assert state.phase is Phase.PROGRESSING and actions[0].event == "experiment.check"
    state, actions = advance_experiment(SPEC, state, None, 2.0)
    assert state.phase is Phase.PROGRESSING and "unavailable" in actions[0].reason
    ended, actions = advance_experiment(SPEC, state, None, 31.0)  # no metrics, no time left
    assert ended.phase is Phase.ROLLED_BACK and Rollback() in actions
    fast = (
        Arm("stable", 2000, 10, latencies(2000, 20.0)),
        Arm("candidate", 2000, 9, latencies(2000, 15.0)),
    )
    state, actions = advance_experiment(SPEC, state, fast, 3.0)
    assert state.phase is Phase.SUCCEEDED and state.winner == "candidate"
    assert actions[:2] == [SetWeight(100), Promote()]
    decided = actions[2]
    assert isinstance(decided, Record) and decided.event == "experiment.decided"
    assert {c["test"] for c in decided.details["comparisons"]} == {  # type: ignore[attr-defined]
        "two-proportion z",
        "Mann-Whitney U",
    }


def test_a_losing_challenger_or_no_difference_rolls_back() -> None:
    state, _ = start_experiment(SPEC, 0.0)
    slow = (
        Arm("stable", 2000, 10, latencies(2000, 15.0)),
        Arm("candidate", 2000, 10, latencies(2000, 25.0)),
    )
    lost, actions = advance_experiment(SPEC, state, slow, 1.0)
    assert lost.phase is Phase.ROLLED_BACK and lost.winner == "stable"
    assert Rollback() in actions
    same = (
        Arm("stable", 2000, 10, latencies(2000, 20.0)),
        Arm("candidate", 2000, 10, latencies(2000, 20.0)),
    )
    tied, _ = advance_experiment(SPEC, state, same, 31.0)
    assert tied.phase is Phase.ROLLED_BACK and tied.winner is None
    assert tied.reason.startswith("no difference")
    promoted, actions = promote_challenger(state)
    assert promoted.phase is Phase.SUCCEEDED and Promote() in actions
    with pytest.raises(Conflict):
        promote_challenger(promoted)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"weight": 100}, "1..99"), ({"alpha": 1.5}, "alpha"), ({"min_requests": 0}, "positive")],
)
def test_bad_experiment_specs(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        ExperimentSpec(**kwargs)
