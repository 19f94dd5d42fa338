from __future__ import annotations

import pytest

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
