from __future__ import annotations

import numpy as np

from shipway.rollout.experiment import Arm, Decision, decide, two_proportion_pvalue

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
    late = decide(Arm("a", 100, 1), [Arm("b", 900, 1)], elapsed_s=4000, max_duration_s=3600)
    assert late.decision is Decision.NO_DIFFERENCE


def test_a_faster_equally_reliable_arm_wins() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    faster = Arm("b", 2000, 9, latencies(2000, 15.0))
    verdict = decide(control, [faster], elapsed_s=60)
    assert verdict.decision is Decision.WINNER and verdict.winner == "b"
    latency = next(c for c in verdict.comparisons if c.metric == "latency")
    assert latency.significant and latency.better and latency.test == "Mann-Whitney U"


def test_faster_but_failing_more_does_not_win() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    risky = Arm("b", 2000, 80, latencies(2000, 15.0))
    verdict = decide(control, [risky], elapsed_s=60)
    assert verdict.decision is Decision.CONTINUE and verdict.winner is None


def test_same_arms_end_with_no_difference_at_the_deadline() -> None:
    control = Arm("a", 2000, 10, latencies(2000, 20.0))
    same = Arm("b", 2000, 11, latencies(2000, 20.0))
    assert decide(control, [same], elapsed_s=60).decision is Decision.CONTINUE
    verdict = decide(control, [same], elapsed_s=3600, max_duration_s=3600)
    assert verdict.decision is Decision.NO_DIFFERENCE and verdict.winner is None
