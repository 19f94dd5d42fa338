"""Interval numbers from cumulative counters: increases, resets, quantiles, arms."""

from __future__ import annotations

import math

from shipway.rollout import counts
from shipway.rollout.counts import VariantCounts

INF = math.inf


def test_increase_over_an_interval_and_after_a_reset() -> None:
    before = VariantCounts(100, 2, ((0.01, 60), (0.1, 100), (INF, 100)))
    now = VariantCounts(150, 7, ((0.01, 80), (0.1, 149), (INF, 150)))
    delta = now.minus(before)
    assert (delta.requests, delta.errors) == (50, 5)
    assert delta.buckets == ((0.01, 20), (0.1, 49), (INF, 50))
    restarted = VariantCounts(10, 0, ((0.01, 10), (0.1, 10), (INF, 10)))
    assert restarted.minus(before) == restarted  # counters went down: all of it is new
    assert now.minus(None) == now
    snapshot = {"stable": now}
    assert counts.snapshot_from_dict(counts.snapshot_to_dict(snapshot)) == snapshot


def test_quantiles_interpolate_inside_buckets_like_prometheus() -> None:
    buckets = ((0.01, 50.0), (0.02, 100.0), (INF, 100.0))
    assert counts.quantile(buckets, 0.5) == 0.01
    assert math.isclose(counts.quantile(buckets, 0.75) or 0, 0.015)
    assert counts.quantile(((0.01, 0.0), (INF, 0.0)), 0.5) is None
    beyond = ((0.01, 10.0), (INF, 20.0))
    assert counts.quantile(beyond, 0.99) == 0.01  # the largest finite bound
    stats = counts.stats(VariantCounts(100, 3, buckets))
    assert (stats.requests, stats.errors) == (100, 3)
    assert math.isclose(stats.p50_ms or 0, 10.0) and stats.p99_ms is not None


def test_an_arm_places_each_request_in_the_middle_of_its_bucket() -> None:
    arm = counts.arm("b", VariantCounts(4, 0, ((0.01, 1.0), (0.03, 3.0), (INF, 4.0))))
    assert arm.latencies_ms == (5.0, 20.0, 20.0, 30.0)
    # a failed (5xx) or refused (4xx) request is slower than any answer (the histogram
    # times the good answers only)
    failed = counts.arm("b", VariantCounts(5, 1, ((0.01, 1.0), (0.03, 3.0), (INF, 4.0))))
    assert failed.latencies_ms == (5.0, 20.0, 20.0, 30.0, INF) and failed.errors == 1
    refused = VariantCounts(6, 0, ((0.01, 1.0), (0.03, 3.0), (INF, 4.0)), client_errors=2)
    assert counts.arm("b", refused).latencies_ms == (5.0, 20.0, 20.0, 30.0, INF, INF)
    assert counts.arm("b", refused).client_errors == 2
    capped = counts.arm("b", VariantCounts(10_000, 0, ((0.01, 10_000.0), (INF, 10_000.0))), 100)
    assert len(capped.latencies_ms) == 100 and capped.requests == 10_000


def test_quantile_bounds_come_from_order_statistics_of_the_histogram() -> None:
    # 29 requests near 5 ms and one at 110 ms: the point p99 is the slow one, its
    # lower bound (the 29th fastest request) is not
    one_slow = VariantCounts(30, 0, ((0.004, 0.0), (0.005, 29.0), (0.125, 30.0), (INF, 30.0)))
    stats = counts.stats(one_slow)
    assert stats.p99_ms is not None and stats.p99_ms > 80  # interpolated in its bucket
    assert stats.p99_low_ms == 4.0 and stats.p50_low_ms == 4.0
    # half of them slow: the bound of p99 is slow too
    half_slow = VariantCounts(30, 0, ((0.005, 15.0), (0.1, 15.0), (0.125, 30.0), (INF, 30.0)))
    assert counts.stats(half_slow).p99_low_ms == 100.0
    assert counts.rank_floor(half_slow.buckets, 31) is None
    assert counts.stats(VariantCounts()).p99_low_ms is None


def test_totals_add_up_interval_by_interval() -> None:
    a = VariantCounts(10, 1, ((0.01, 10.0), (INF, 10.0)), (3, 0, 1))
    b = VariantCounts(5, 0, ((0.005, 2.0), (0.01, 5.0), (INF, 5.0)), (1, 1, 0))
    assert a.plus(b) == VariantCounts(15, 1, ((0.005, 2.0), (0.01, 15.0), (INF, 15.0)), (4, 1, 1))
    total = counts.add({"stable": a}, {"stable": b, "canary": b})
    assert total["stable"].requests == 15 and total["canary"] == VariantCounts().plus(b)
