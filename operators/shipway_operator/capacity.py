"""How many replicas each variant runs: its share of the traffic, of the spec's range. Pure.

Users of Argo Rollouts report HPAs fighting canaries: one HPA over both ReplicaSets
scales stable to its maximum while a canary runs (argoproj/argo-rollouts#2857), and
scaling stable down by the canary's weight before the traffic has moved starves it
(#4347). Here each variant has its own HPA measuring its own pods, so each scales on
the load it actually gets, and the range each HPA may move in follows its share:

- ``min = max(1, ceil(spec_min * share))`` and ``max = max(1, ceil(spec_max * share))``:
  a candidate at 5 % cannot grow to the whole fleet, and its range grows with its
  weight; stable at 95 % keeps 95 % of the room it had, so it is never pinned at a
  maximum meant for all of the load;
- a floor from ``baseline``, the replicas stable ran when the rollout began (what all
  of the load needed then, as its HPA had found). The candidate's floor is its share of
  it: a lull mid-rollout does not starve it. Stable's floor is all of it, for as long as
  the rollout runs: a rollback moves every request back to stable at once, and an HPA
  adds pods in tens of seconds, far slower than the traffic moves (Argo Rollouts keeps
  stable at full size by default for the same reason, ``dynamicStableScale: false``).
  Its maximum still shrinks with its share, but never below that floor.

A candidate's range grows before its weight does (``rollout_ports.StatusRouter``): the
traffic moves once the candidate's replicas for the new share are available.

Without autoscaling the spec's fixed count is both bounds. Shares are percents
(``0..100``); a variant at 0 % keeps one warm replica (a candidate waiting to be
shadowed or stepped, or a new stable starting behind the candidate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from shipway_operator.spec import InvalidSpec, Spec

Range = tuple[int, int]  # (min, max) replicas


def share_of(count: int | None, percent: int) -> int:
    """``percent`` of ``count`` replicas, rounded up, at least one."""
    return max(1, math.ceil((count or 0) * percent / 100))


def replica_range(
    spec: Spec, percent: int, baseline: int | None = None, floor_percent: int | None = None
) -> Range:
    """(min, max) replicas of a variant sized for ``percent`` of the traffic, at least
    ``floor_percent`` (default ``percent``) of ``baseline``; equal bounds without
    autoscaling. ``InvalidSpec`` for a share outside 0..100."""
    if not 0 <= percent <= 100:
        raise InvalidSpec(f"a variant's weight is a percent, got {percent}")
    floor = share_of(baseline, percent if floor_percent is None else floor_percent)
    if spec.autoscaling is None:
        fixed = share_of(spec.replicas or 1, percent)
        if baseline:
            fixed = max(fixed, floor)
        return fixed, fixed
    low = share_of(spec.autoscaling.min_replicas, percent)
    high = share_of(spec.autoscaling.max_replicas, percent)
    if baseline:
        low = max(low, floor)
        high = max(high, low)
    return low, high


def variant_range(spec: Spec, stable: bool, percent: int, baseline: int | None = None) -> Range:
    """The range of stable (floored at all of ``baseline`` while a rollout runs) or of
    the candidate (floored at its share of it) for ``percent`` of the traffic."""
    return replica_range(spec, percent, baseline, 100 if stable else None)


def replica_ranges(
    spec: Spec, shares: Mapping[str, int], baseline: int | None = None
) -> dict[str, Range]:
    """Each variant's range for its share (``{"stable": 95, "candidate": 5}``)."""
    return {
        variant: variant_range(spec, variant == "stable", share, baseline)
        for variant, share in shares.items()
    }
