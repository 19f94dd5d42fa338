"""The local MetricsProvider reads the gateway's exposition into per-variant counters."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from shipway.gateway.metrics import GatewayMetrics
from shipway.gateway.metrics_source import parse


def test_the_gateway_exposition_becomes_counters_per_variant() -> None:
    metrics = GatewayMetrics()
    for variant, code, seconds in (
        ("stable", "200", 0.004),
        ("stable", "200", 0.02),
        ("canary", "500", 0.003),
        ("canary", "200", 0.003),
    ):
        metrics.requests.labels("web", variant, "http://r", code).inc()
        metrics.latency.labels("web", variant).observe(seconds)
    metrics.requests.labels("other", "stable", "http://o", "200").inc(7)
    metrics.shadow.labels("web", "canary", "agree").inc(5)
    metrics.shadow.labels("web", "canary", "error").inc(1)
    snapshot = parse(generate_latest(metrics.registry).decode(), "web")
    assert set(snapshot) == {"stable", "canary"}
    assert (snapshot["stable"].requests, snapshot["stable"].errors) == (2, 0)
    assert (snapshot["canary"].requests, snapshot["canary"].errors) == (2, 1)
    assert snapshot["canary"].shadow == (5, 0, 1) and snapshot["stable"].shadow == (0, 0, 0)
    buckets = snapshot["stable"].buckets
    assert math.isinf(buckets[-1][0]) and buckets[-1][1] == 2
    assert next(n for le, n in buckets if le >= 0.004) == 1  # one request by 4 ms
