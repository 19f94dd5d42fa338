"""The shadow strategy's decision: mirrored traffic, outputs compared with stable.

The gateway counts the rows of each mirrored request as agree, disagree or error (a
row agrees when it passes the candidate build's gate test, ``gateway/shadow.py``). The
shadow hands over to a canary once enough rows were compared and the agreement rate's
lower confidence bound (Wilson score) clears the bar; it fails when even the upper
bound is below the bar, when its error rate exceeds the limit, or when no decision
came after ``max_compared`` rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats


class ShadowDecision(StrEnum):
    CONTINUE = "continue"
    HAND_OVER = "hand-over"  # start the canary
    FAIL = "fail"


@dataclass(frozen=True)
class ShadowCounts:
    agree: int
    disagree: int
    error: int


@dataclass(frozen=True)
class ShadowVerdict:
    decision: ShadowDecision
    agreement: float | None
    low: float | None
    high: float | None
    reason: str


def wilson(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if total == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def decide_shadow(
    counts: ShadowCounts,
    min_agreement: float = 0.98,
    min_compared: int = 200,
    max_error_rate: float = 0.01,
    max_compared: int | None = None,
) -> ShadowVerdict:
    """Counts are rows (a mirrored request of n rows is n comparisons). Past
    ``max_compared`` rows without a decision the shadow fails: its agreement sits at
    the bar, and watching longer cannot be told from hanging."""
    compared = counts.agree + counts.disagree
    total = compared + counts.error
    if total and counts.error / total > max_error_rate and total >= min_compared:
        return ShadowVerdict(
            ShadowDecision.FAIL, None, None, None, f"shadow error rate {counts.error / total:.3f}"
        )
    if compared < min_compared:
        return ShadowVerdict(
            ShadowDecision.CONTINUE, None, None, None, f"{compared} of {min_compared} compared"
        )
    low, high = wilson(counts.agree, compared)
    agreement = counts.agree / compared
    if low >= min_agreement:
        return ShadowVerdict(ShadowDecision.HAND_OVER, agreement, low, high, "agrees with stable")
    if high < min_agreement:
        return ShadowVerdict(ShadowDecision.FAIL, agreement, low, high, "disagrees with stable")
    if max_compared is not None and compared >= max_compared:
        reason = f"undecided after {compared} compared (agreement {agreement:.4f} at the bar)"
        return ShadowVerdict(ShadowDecision.FAIL, agreement, low, high, reason)
    return ShadowVerdict(ShadowDecision.CONTINUE, agreement, low, high, "not yet certain")
