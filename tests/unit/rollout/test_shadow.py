from __future__ import annotations

import pytest

from shipway.errors import InvalidInput
from shipway.rollout.shadow import ShadowCounts, ShadowDecision, decide_shadow, wilson


def test_wilson_interval() -> None:
    low, high = wilson(95, 100)
    assert low == pytest.approx(0.8883, abs=1e-3) and high == pytest.approx(0.9785, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("counts", "decision"),
    [
        (ShadowCounts(100, 0, 0), ShadowDecision.CONTINUE),  # too few compared
        (ShadowCounts(2000, 0, 0), ShadowDecision.HAND_OVER),
        (ShadowCounts(900, 100, 0), ShadowDecision.FAIL),  # 90 % agreement
        (ShadowCounts(495, 5, 0), ShadowDecision.CONTINUE),  # 99 %: not yet certain
        (ShadowCounts(2000, 0, 100), ShadowDecision.FAIL),  # errors
    ],
)
def test_decisions(counts: ShadowCounts, decision: ShadowDecision) -> None:
    assert decide_shadow(counts).decision is decision


def test_an_agreement_at_the_bar_is_not_watched_for_ever() -> None:
    at_the_bar = ShadowCounts(1970, 30, 0)  # 98.5 %: the bar (0.98) inside the interval
    assert decide_shadow(at_the_bar).decision is ShadowDecision.CONTINUE
    verdict = decide_shadow(at_the_bar, max_compared=2000)
    assert verdict.decision is ShadowDecision.FAIL and "undecided after 2000" in verdict.reason
    # the spec's default cap is ten times min_compared
    from shipway.rollout.canary import ShadowSpec

    assert ShadowSpec(min_compared=150).compared_limit == 1500
    with pytest.raises(InvalidInput, match="max_compared"):
        ShadowSpec(min_compared=150, max_compared=100)
