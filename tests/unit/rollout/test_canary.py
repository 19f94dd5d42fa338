"""The canary engine on its own: every transition, from data to decision."""

from __future__ import annotations

import pytest

from shipway.errors import Conflict, InvalidInput
from shipway.rollout import canary
from shipway.rollout.canary import CanarySpec, Phase, Promote, Record, Rollback, SetWeight
from shipway.rollout.checks import (
    Observation,
    Outcome,
    Thresholds,
    VariantStats,
    analyse,
    difference_low,
)
from shipway.rollout.shadow import ShadowCounts

STABLE = VariantStats(requests=1000, errors=0, p50_ms=10.0, p99_ms=20.0)
HEALTHY = Observation(VariantStats(200, 0, 10.5, 21.0), STABLE)
FAILING = Observation(VariantStats(200, 20, 10.0, 20.0), STABLE)  # 10 % errors
SLOW = Observation(VariantStats(200, 0, 30.0, 60.0), STABLE)
QUIET = Observation(VariantStats(10, 0, 10.0, 20.0), STABLE)  # too few requests
SPEC = CanarySpec(step_weights=(5, 25, 50, 100), interval_seconds=1.0, failure_limit=2)


def run(
    spec: CanarySpec, observations: list[Observation | None]
) -> tuple[canary.State, list[object]]:
    state, actions = canary.start(spec, 0.0)
    log: list[object] = list(actions)
    for i, obs in enumerate(observations, start=1):
        state, actions = canary.advance(spec, state, obs, float(i))
        log.extend(actions)
    return state, log


def weights(log: list[object]) -> list[int]:
    return [a.weight for a in log if isinstance(a, SetWeight)]


def test_a_healthy_candidate_walks_every_step_and_is_promoted() -> None:
    state, log = run(SPEC, [HEALTHY] * 4)
    assert state.phase is Phase.SUCCEEDED and state.weight == 100
    assert weights(log) == [5, 25, 50, 100]
    assert sum(isinstance(a, Promote) for a in log) == 1
    assert not any(isinstance(a, Rollback) for a in log)


def test_failed_analyses_in_a_row_roll_back_and_a_pass_resets_the_count() -> None:
    state, log = run(SPEC, [HEALTHY, FAILING, HEALTHY, FAILING, FAILING])
    assert state.phase is Phase.ROLLED_BACK and state.weight == 0
    assert weights(log) == [5, 25, 50, 0]  # one failure alone did not roll back
    rollback = [a for a in log if isinstance(a, Rollback)]
    assert rollback == [Rollback(after_promotion=False)]
    assert "error_rate" in state.reason


def test_a_latency_regression_rolls_back() -> None:
    state, _ = run(SPEC, [SLOW, SLOW])
    assert state.phase is Phase.ROLLED_BACK and "p50_ratio" in state.reason


def test_no_data_is_inconclusive_and_never_promotes() -> None:
    state, log = run(SPEC, [QUIET] * 9)
    assert state.phase is Phase.PROGRESSING and state.weight == 5
    assert [r.event for r in log if isinstance(r, Record)][1:] == ["rollout.check-inconclusive"] * 9
    assert analyse(QUIET, Thresholds())[0] is Outcome.INCONCLUSIVE


def test_a_canary_that_gets_no_traffic_ends_failed_with_stable_untouched() -> None:
    # issue: at 50 % with no requests it stayed progressing after 53 inconclusive analyses
    state, log = run(SPEC, [QUIET] * 10)
    assert state.phase is Phase.FAILED and state.weight == 0 and state.phase.finished
    assert "10 inconclusive analyses in a row" in state.reason and "requests" in state.reason
    assert log[-3:-1] == [SetWeight(0), Rollback(after_promotion=False)]
    assert isinstance(log[-1], Record) and log[-1].event == "rollout.failed"
    assert not any(isinstance(a, Promote) for a in log)
    # a pass starts the count over
    state, _ = run(SPEC, [QUIET] * 9 + [HEALTHY] + [QUIET] * 9)
    assert state.phase is Phase.PROGRESSING and state.weight == 25


def test_no_progress_within_the_deadline_ends_failed() -> None:
    spec = CanarySpec(
        step_weights=(5, 50, 100),
        interval_seconds=1.0,
        progress_deadline_seconds=4.0,
        failure_limit=3,
    )
    # failed and inconclusive analyses: never 3 failures or 10 quiet in a row, and never
    # a step forward either after the first
    state, log = run(spec, [HEALTHY, FAILING, QUIET, QUIET, FAILING])
    assert state.phase is Phase.FAILED and "no progress for 4s" in state.reason, state
    assert weights(log) == [5, 50, 0]
    # progress (a passed analysis) restarts the clock
    state, _ = run(spec, [QUIET, QUIET, QUIET, HEALTHY, QUIET, QUIET, QUIET])
    assert state.phase is Phase.PROGRESSING and state.weight == 50
    # paused time does not count, and resuming restarts the clock
    state, _ = canary.start(spec, 0.0)
    paused, _ = canary.pause(state)
    resumed, _ = canary.resume(paused, 100.0)
    state, _ = canary.advance(spec, resumed, QUIET, 101.0)
    assert state.phase is Phase.PROGRESSING
    state, _ = canary.advance(spec, state, QUIET, 104.0)
    assert state.phase is Phase.FAILED
    # the default is ten intervals
    assert CanarySpec(interval_seconds=30.0).deadline_seconds == 300.0
    with pytest.raises(InvalidInput, match="at least one analysis interval"):
        CanarySpec(interval_seconds=30.0, progress_deadline_seconds=10.0)


def test_a_metrics_provider_that_is_down_is_inconclusive_then_rolls_back() -> None:
    spec = CanarySpec(step_weights=(5, 100), interval_seconds=1.0, consecutive_error_limit=3)
    # two outages, then data again: the count starts over, nothing was promoted meanwhile
    state, log = run(spec, [None, None, HEALTHY, None, None])
    assert state.phase is Phase.PROGRESSING and state.unavailable_in_a_row == 2
    events = [r.event for r in log if isinstance(r, Record)]
    assert events.count("rollout.check-inconclusive") == 4 and "rollout.promoted" not in events
    state, log = run(spec, [None, None, None])
    assert state.phase is Phase.ROLLED_BACK and "no metrics for 3" in state.reason
    assert Rollback(after_promotion=False) in log and weights(log)[-1] == 0


def test_drift_check_without_a_score_is_inconclusive() -> None:
    limits = Thresholds(max_drift_score=0.2)
    assert analyse(HEALTHY, limits)[0] is Outcome.INCONCLUSIVE
    drifted = Observation(HEALTHY.candidate, STABLE, drift_score=0.5)
    assert analyse(drifted, limits)[0] is Outcome.FAILED
    calm = Observation(HEALTHY.candidate, STABLE, drift_score=0.01)
    assert analyse(calm, limits)[0] is Outcome.PASSED


def test_one_analysis_per_interval() -> None:
    spec = CanarySpec(interval_seconds=10.0)
    state, _ = canary.start(spec, 0.0)
    state, actions = canary.advance(spec, state, HEALTHY, 5.0)
    assert actions == [] and state.weight == 5
    state, actions = canary.advance(spec, state, HEALTHY, 10.0)
    assert state.weight == 25


def test_a_breach_while_baking_rolls_back_the_promotion() -> None:
    spec = CanarySpec(
        step_weights=(50, 100), interval_seconds=1.0, failure_limit=1, bake_seconds=5.0
    )
    state, log = run(spec, [HEALTHY, HEALTHY, HEALTHY, FAILING])
    assert state.phase is Phase.ROLLED_BACK
    assert [a for a in log if isinstance(a, Rollback)] == [Rollback(after_promotion=True)]
    baked, _ = run(spec, [HEALTHY] * 8)
    assert baked.phase is Phase.SUCCEEDED and baked.reason == "baked"
    # at 100 % stable may have no yardstick left: inconclusive checks do not keep the
    # bake going forever once its time is up, but do not end it early either
    state, _ = run(spec, [HEALTHY, HEALTHY, HEALTHY, QUIET])
    assert state.phase is Phase.BAKING
    state, _ = run(spec, [HEALTHY, HEALTHY, HEALTHY] + [QUIET] * 5)
    assert state.phase is Phase.SUCCEEDED and "inconclusive" in state.reason


def test_manual_gate_waits_for_an_approval() -> None:
    spec = CanarySpec(step_weights=(5, 50, 100), interval_seconds=1.0, gates=frozenset({1}))
    state, log = run(spec, [HEALTHY, HEALTHY, HEALTHY])
    assert state.phase is Phase.WAITING_GATE and weights(log) == [5]
    state, actions = canary.approve(spec, state, 10.0)
    assert state.phase is Phase.PROGRESSING and actions[0] == SetWeight(50)
    with pytest.raises(Conflict, match="not waiting for an approval"):
        canary.approve(spec, state, 11.0)


def test_operations() -> None:
    state, _ = canary.start(SPEC, 0.0)
    paused, _ = canary.pause(state)
    assert canary.advance(SPEC, paused, FAILING, 100.0) == (paused, [])  # frozen
    resumed, _ = canary.resume(paused, 100.0)
    assert resumed.phase is Phase.PROGRESSING
    promoted, actions = canary.promote_now(SPEC, resumed, 101.0)
    assert promoted.phase is Phase.SUCCEEDED and actions[:2] == [SetWeight(100), Promote()]
    with pytest.raises(Conflict):
        canary.abort(promoted)
    aborted, actions = canary.abort(resumed)
    assert aborted.phase is Phase.ROLLED_BACK and Rollback(after_promotion=False) in actions
    with pytest.raises(Conflict, match="not paused"):
        canary.resume(resumed, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_weights": (50, 25, 100)}, "rise strictly"),
        ({"step_weights": (5, 50)}, "end at 100"),
        ({"interval_seconds": 0}, r"interval must be within \(0, 86400\]"),
        ({"interval_seconds": 1e308}, r"interval must be within \(0, 86400\]"),
        ({"bake_seconds": 1e9}, r"the bake within \[0, 604800\]"),
        ({"progress_deadline_seconds": 1e9}, "at most 604800"),
        ({"thresholds": Thresholds(max_error_rate=0.01)}, None),
        ({"failure_limit": 0}, "must be >= 1"),
        ({"consecutive_error_limit": 0}, "must be >= 1"),
        ({"gates": frozenset({7})}, "step indices"),
        ({"inconclusive_limit": 0}, "inconclusive_limit must be >= 1"),
    ],
)
def test_bad_specs(kwargs: dict, message: str | None) -> None:  # type: ignore[type-arg]
    if message is None:  # a good one, for contrast
        CanarySpec(**kwargs)
        return
    with pytest.raises(InvalidInput, match=message):
        CanarySpec(**kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Thresholds(max_error_rate=2), r"max_error_rate within \[0, 1\]"),
        (lambda: Thresholds(max_drift_score=-1), "cannot be negative"),
        (lambda: canary.ShadowSpec(max_error_rate=5), r"max_error_rate within \[0, 1\]"),
    ],
)
def test_bad_thresholds(make: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        make()  # type: ignore[operator]


def test_failures_are_judged_on_lower_confidence_bounds_not_on_a_few_requests() -> None:
    # one error in 30 requests is a 3 % point rate, but not evidence of more than 1 %
    one_error = Observation(VariantStats(30, 1, 10.0, 20.0), STABLE)
    outcome, checks = analyse(one_error, Thresholds(min_requests=20))
    rate = next(c for c in checks if c.name == "error_rate")
    assert outcome is Outcome.PASSED and rate.value == 1 / 30 and rate.bound < 0.01  # type: ignore[operator]
    nine = Observation(VariantStats(30, 9, 10.0, 20.0), STABLE)
    assert analyse(nine, Thresholds(min_requests=20))[0] is Outcome.FAILED
    # one slow request of 30: the point p99 is that request; the bound is not
    hiccup = Observation(VariantStats(30, 0, 10.0, 120.0, 9.0, 15.0), STABLE)
    outcome, checks = analyse(hiccup, Thresholds(min_requests=20))
    p99 = next(c for c in checks if c.name == "p99_ratio")
    assert outcome is Outcome.PASSED and p99.value == 6.0 and p99.bound == 0.75
    slow = Observation(VariantStats(30, 0, 10.0, 120.0, 9.0, 100.0), STABLE)
    assert analyse(slow, Thresholds(min_requests=20))[0] is Outcome.FAILED
    with pytest.raises(InvalidInput, match="confidence"):
        Thresholds(confidence=1.0)


def test_a_shadow_phase_hands_over_to_the_first_step_or_rolls_back() -> None:
    spec = CanarySpec(
        step_weights=(10, 100), interval_seconds=1.0, shadow=canary.ShadowSpec(min_compared=100)
    )
    state, actions = canary.start(spec, 0.0)
    assert state.phase is Phase.SHADOWING and state.weight == 0 and not weights(actions)
    few = Observation(STABLE, STABLE, shadow=ShadowCounts(50, 0, 0))
    state, actions = canary.advance(spec, state, few, 1.0)
    assert state.phase is Phase.SHADOWING and actions[0].event == "rollout.shadow-check"
    quiet = Observation(STABLE, STABLE)  # nothing mirrored yet
    assert canary.advance(spec, state, quiet, 2.0)[1][0].event == "rollout.check-inconclusive"
    # the same 50 compared again is no progress; more compared is
    same = canary.advance(spec, state, few, 2.0)
    assert same[0].inconclusive_in_a_row == 1 and same[1][0].event == "rollout.check-inconclusive"
    more = Observation(STABLE, STABLE, shadow=ShadowCounts(80, 0, 0))
    grown = canary.advance(spec, same[0], more, 3.0)[0]
    assert grown.inconclusive_in_a_row == 0 and grown.progressed_at == 3.0
    agreeing = Observation(STABLE, STABLE, shadow=ShadowCounts(2000, 0, 0))
    state, actions = canary.advance(spec, state, agreeing, 3.0)
    assert state.phase is Phase.PROGRESSING and state.weight == 10
    assert [a.event for a in actions if isinstance(a, Record)] == [
        "rollout.handed-over",
        "rollout.step",
    ]
    shadowing, _ = canary.start(spec, 0.0)
    disagreeing = Observation(STABLE, STABLE, shadow=ShadowCounts(500, 500, 0))
    failed, actions = canary.advance(spec, shadowing, disagreeing, 1.0)
    assert failed.phase is Phase.ROLLED_BACK and "shadow: disagrees" in failed.reason
    gated = CanarySpec(step_weights=(10, 100), gates=frozenset({0}), shadow=canary.ShadowSpec())
    waiting, _ = canary.advance(gated, canary.start(gated, 0.0)[0], agreeing, 100.0)
    assert waiting.phase is Phase.WAITING_GATE and waiting.weight == 0
    with pytest.raises(InvalidInput, match="shadow share"):
        canary.ShadowSpec(share=0)


def test_latency_is_not_judged_without_stable_traffic_in_the_same_interval() -> None:
    alone = VariantStats(0, 0)  # the candidate at 100 %: stable served nothing
    slow = Observation(VariantStats(200, 0, 30.0, 60.0), alone)
    outcome, checks = analyse(slow, Thresholds())
    by_name = {c.name: c.outcome for c in checks}
    assert by_name["p50_ratio"] is by_name["p99_ratio"] is Outcome.NOT_APPLICABLE
    assert outcome is Outcome.PASSED  # errors and requests are still judged
    failing = Observation(VariantStats(200, 20, 30.0, 60.0), alone)
    assert analyse(failing, Thresholds())[0] is Outcome.FAILED


def test_4xx_are_judged_relative_to_stable_in_the_same_interval() -> None:
    # a candidate that refuses what stable accepts (a renamed input): every request 400
    refusing = Observation(VariantStats(20, 0, 1.0, 2.0, client_errors=20), STABLE)
    outcome, checks = analyse(refusing, Thresholds(min_requests=20))
    excess = next(c for c in checks if c.name == "client_error_excess")
    assert outcome is Outcome.FAILED and excess.outcome is Outcome.FAILED
    assert excess.value == 1.0 and excess.bound is not None and excess.bound > 0.8
    # clients sending garbage to both variants alike do not fail the candidate
    garbage_stable = VariantStats(1000, 0, 10.0, 20.0, client_errors=300)
    garbage = Observation(VariantStats(200, 0, 10.0, 20.0, client_errors=62), garbage_stable)
    outcome, checks = analyse(garbage, Thresholds())
    assert outcome is Outcome.PASSED
    assert next(c for c in checks if c.name == "client_error_excess").outcome is Outcome.PASSED
    # 4xx are not 5xx: they do not count against max_error_rate
    assert next(c for c in checks if c.name == "error_rate").value == 0


def test_4xx_without_stable_in_the_interval_are_judged_against_its_record() -> None:
    alone = VariantStats(0, 0)  # the candidate at 100 %
    refusing = VariantStats(200, 0, 10.0, 20.0, client_errors=200)
    record = VariantStats(5000, 0, client_errors=50)  # stable refused 1 % before
    failing = Observation(refusing, alone, stable_reference=record)
    assert analyse(failing, Thresholds())[0] is Outcome.FAILED
    usual = Observation(VariantStats(200, 0, client_errors=2), alone, stable_reference=record)
    assert analyse(usual, Thresholds())[0] is Outcome.PASSED
    # no yardstick at all (a gateway restart zeroed stable's counters, no record kept):
    # a candidate refusing every request cannot pass — inconclusive, never promoted
    outcome, checks = analyse(Observation(refusing, alone), Thresholds())
    excess = next(c for c in checks if c.name == "client_error_excess")
    assert excess.outcome is Outcome.INCONCLUSIVE and outcome is Outcome.INCONCLUSIVE
    clean = Observation(VariantStats(200, 0, 10.0, 20.0), alone)
    assert analyse(clean, Thresholds())[0] is Outcome.PASSED  # no 4xx: nothing to excuse
    with pytest.raises(InvalidInput, match="max_client_error_increase"):
        Thresholds(max_client_error_increase=1.0)


def test_newcombe_bound_of_a_difference_of_proportions() -> None:
    # Newcombe (1998), table II, example (a): 56/70 - 48/80, 95 % interval 0.0524..0.3339
    low = difference_low(56, 70, 48, 80, confidence=0.975)
    assert low == pytest.approx(0.0524, abs=1e-4)


def test_bad_requests_do_not_dilute_a_candidates_failures() -> None:
    # clients send 80 % garbage to both variants; of the 200 requests the candidate
    # could answer, 12 failed (6 %): judged over all 1,000 that would be 1.2 %, within
    # doubt of the 1 % limit
    garbage = VariantStats(1000, 0, 10.0, 20.0, client_errors=800)
    failing = Observation(VariantStats(1000, 12, 10.0, 20.0, client_errors=800), garbage)
    outcome, checks = analyse(failing, Thresholds())
    rate = next(c for c in checks if c.name == "error_rate")
    assert outcome is Outcome.FAILED and rate.value == pytest.approx(0.06)
    assert next(c for c in checks if c.name == "client_error_excess").outcome is Outcome.PASSED


def test_too_few_requests_still_show_the_4xx_seen() -> None:
    few = Observation(VariantStats(8, 0, 1.0, 2.0, client_errors=8), STABLE)
    outcome, checks = analyse(few, Thresholds())
    excess = next(c for c in checks if c.name == "client_error_excess")
    assert outcome is Outcome.INCONCLUSIVE and excess.outcome is Outcome.INCONCLUSIVE
    assert excess.value == 1.0  # 8 of 8 refused, stable none: shown, not judged yet
