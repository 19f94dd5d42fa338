"""From cumulative counters to one interval's numbers: what a MetricsProvider returns
(counters that only grow) and what the engine judges (requests, errors and latency
quantiles over an interval). Pure; the same arithmetic as Prometheus' ``increase`` and
``histogram_quantile``, so local mode and Kubernetes judge alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shipway.rollout.checks import VariantStats, quantile_rank
from shipway.rollout.experiment import Arm
from shipway.rollout.shadow import ShadowCounts

Snapshot = dict[str, "VariantCounts"]  # by variant name


@dataclass(frozen=True)
class VariantCounts:
    """Totals since the counters started, over every answer a client got:

    - ``requests``: all answers;
    - ``errors``: failed answers — the replica's 5xx and the gateway's own failures (no
      ready replica, upstream timeout, connection reset);
    - ``client_errors``: 4xx answers, which the analysis judges relative to stable's
      (a client's bad request is not the candidate's fault; a request stable accepts
      and the candidate refuses is);
    - ``buckets``: the latency histogram as (upper bound in seconds, cumulative count);
    - ``shadow``: mirrored requests compared with stable's answers.
    """

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()
    shadow: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mirrored: agree, disagree, error
    client_errors: float = 0.0

    def minus(self, before: VariantCounts | None) -> VariantCounts:
        """The increase since ``before``. Counters that went down were reset (the gateway
        restarted): then everything counted now is the increase, as in Prometheus."""
        if before is None or any(
            now < then
            for now, then in zip(
                (self.requests, self.errors, self.client_errors, *self.shadow),
                (before.requests, before.errors, before.client_errors, *before.shadow),
                strict=True,
            )
        ):
            return self
        return self._combine(before, -1.0, [le for le, _ in self.buckets])

    def plus(self, other: VariantCounts) -> VariantCounts:
        bounds = sorted({le for le, _ in self.buckets} | {le for le, _ in other.buckets})
        return self._combine(other, 1.0, bounds)

    def _combine(self, other: VariantCounts, sign: float, bounds: list[float]) -> VariantCounts:
        mine, theirs = dict(self.buckets), dict(other.buckets)
        return VariantCounts(
            self.requests + sign * other.requests,
            self.errors + sign * other.errors,
            tuple((le, max(0.0, mine.get(le, 0.0) + sign * theirs.get(le, 0.0))) for le in bounds),
            _triple([a + sign * b for a, b in zip(self.shadow, other.shadow, strict=True)]),
            self.client_errors + sign * other.client_errors,
        )

    def shadow_counts(self) -> ShadowCounts | None:
        agree, disagree, error = (int(n) for n in self.shadow)
        return ShadowCounts(agree, disagree, error) if agree + disagree + error else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "buckets": [[("+Inf" if math.isinf(le) else le), n] for le, n in self.buckets],
            "shadow": list(self.shadow),
            "client_errors": self.client_errors,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantCounts:
        return cls(
            float(data["requests"]),
            float(data["errors"]),
            tuple((float(le), float(n)) for le, n in data["buckets"]),
            _triple(data.get("shadow", (0, 0, 0))),
            float(data.get("client_errors", 0.0)),  # rows saved before 4xx were counted
        )


def _triple(values: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    agree, disagree, error = (float(n) for n in values)
    return agree, disagree, error


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {name: counts.to_dict() for name, counts in snapshot.items()}


def snapshot_from_dict(data: dict[str, Any] | None) -> Snapshot:
    return {name: VariantCounts.from_dict(d) for name, d in (data or {}).items()}


def increase(now: Snapshot, before: Snapshot) -> Snapshot:
    return {name: counts.minus(before.get(name)) for name, counts in now.items()}


def add(total: Snapshot, more: Snapshot) -> Snapshot:
    names = set(total) | set(more)
    empty = VariantCounts()
    return {name: total.get(name, empty).plus(more.get(name, empty)) for name in names}


def quantile(buckets: tuple[tuple[float, float], ...], q: float) -> float | None:
    """Linear interpolation inside the bucket that holds the q-th request (seconds)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # beyond the largest finite bound: that bound is all we know
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


def rank_floor(buckets: tuple[tuple[float, float], ...], rank: int) -> float | None:
    """The least value the rank-th fastest request can have: its bucket's lower bound."""
    lower = 0.0
    for le, count in buckets:
        if count >= rank:
            return lower
        if not math.isinf(le):
            lower = le
    return None


def stats(counts: VariantCounts, confidence: float = 0.95) -> VariantStats:
    """Point quantiles, and their lower confidence bounds from the histogram."""
    ms = {}
    total = int(counts.buckets[-1][1]) if counts.buckets else 0
    for q in (0.5, 0.99):
        point = quantile(counts.buckets, q)
        low = rank_floor(counts.buckets, quantile_rank(total, q, confidence)) if total else None
        ms[q] = (None if point is None else point * 1000, None if low is None else low * 1000)
    return VariantStats(
        int(counts.requests),
        int(counts.errors),
        ms[0.5][0],
        ms[0.99][0],
        ms[0.5][1],
        ms[0.99][1],
        int(counts.client_errors),
    )


def arm(name: str, counts: VariantCounts, cap: int = 5000) -> Arm:
    """An experiment arm, its per-request latencies known to the histogram's resolution:
    each good answer sits at the middle of its bucket (ties are what Mann-Whitney's tie
    correction is for). Above ``cap`` requests, everything is scaled down alike.

    Latency is time to a good answer: the histogram times good answers only (the
    gateway's), and every failed or refused request (5xx, gateway failure, 4xx) is
    added as slower than any answer (+inf), so an arm cannot win on the speed of the
    requests it did answer."""
    good = counts.buckets[-1][1] if counts.buckets else 0.0
    failed = counts.errors + counts.client_errors
    scale = min(1.0, cap / (good + failed)) if good + failed else 1.0
    latencies: list[float] = []
    lower, below = 0.0, 0.0
    for le, cumulative in counts.buckets:
        value = lower if math.isinf(le) else (lower + le) / 2
        latencies.extend([value * 1000] * round((cumulative - below) * scale))
        if not math.isinf(le):
            lower = le
        below = cumulative
    latencies.extend([math.inf] * round(failed * scale))
    return Arm(
        name,
        int(counts.requests),
        int(counts.errors),
        tuple(latencies),
        int(counts.client_errors),
    )
