"""Replica-count decisions, in the manner of the Kubernetes HPA and its behaviour settings.

Pure functions: the observed load and the clock come in, a replica count (and the
recommendation history to keep) goes out. Scale-up follows a recommendation at once
(bounded per step); scale-down follows the highest recommendation of the last
``scale_down_stabilization_window_seconds`` seconds (the HPA's
``behavior.scaleDown.stabilizationWindowSeconds``), so a brief lull does not shed
replicas that the next burst needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

History = tuple[tuple[float, int], ...]  # (time, recommended replicas), oldest first


@dataclass(frozen=True)
class AutoscalePolicy:
    min_replicas: int
    max_replicas: int
    target_inflight: float  # mean requests in flight per replica we aim for
    scale_down_stabilization_window_seconds: float = 30.0
    tolerance: float = 0.1  # no change while within ±10 % of the target (as the HPA)
    max_step_up: int = 4  # at most double, or add this many, per decision (as the HPA)

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.target_inflight <= 0:
            raise ValueError("target_inflight must be positive")


def recommend(current: int, inflight: float, policy: AutoscalePolicy) -> int:
    """Replicas that would bring in-flight requests per replica to the target."""
    current = max(current, 1)
    ratio = inflight / (current * policy.target_inflight)
    if abs(ratio - 1.0) <= policy.tolerance:
        wanted = current
    else:
        wanted = math.ceil(inflight / policy.target_inflight)
    ceiling = current + max(current, policy.max_step_up)
    return max(policy.min_replicas, min(policy.max_replicas, wanted, ceiling))


def stabilize(
    history: History, now: float, recommendation: int, current: int, policy: AutoscalePolicy
) -> tuple[int, History]:
    """Apply the scale-down window; returns the replica count and the history to keep."""
    kept = tuple(
        (t, r) for t, r in history if now - t < policy.scale_down_stabilization_window_seconds
    )
    kept = (*kept, (now, recommendation))
    if recommendation >= current:
        return recommendation, kept
    return max(r for _, r in kept), kept


def decide(
    history: History, now: float, current: int, inflight: float, policy: AutoscalePolicy
) -> tuple[int, History]:
    return stabilize(history, now, recommend(current, inflight, policy), current, policy)
