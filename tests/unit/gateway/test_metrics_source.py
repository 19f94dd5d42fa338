"""The local MetricsProvider reads the gateway's exposition into per-variant counters."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from shipway.gateway.metrics import GatewayMetrics
from shipway.gateway.metrics_source import parse


def test_the_gateway_exposition_becomes_counters_per_variant() -> None:
    metrics = GatewayMetrics()
    for variant, kind, seconds in (
        ("stable", "2xx", 0.004),
        ("stable", "2xx", 0.02),
        ("stable", "4xx", 0.002),
        ("canary", "5xx", 0.003),
        ("canary", "2xx", 0.003),
        ("canary", "4xx", 0.001),
        ("canary", "no_ready_replica", 0.0001),
        ("canary", "upstream_timeout", 9.0),
        ("canary", "connection_reset", 0.01),
    ):
        metrics.responses.labels("web", variant, kind).inc()
        metrics.latency.labels("web", variant).observe(seconds)
    metrics.responses.labels("web", "", "no_ready_replica").inc(3)  # no variant: nobody's
    metrics.responses.labels("other", "stable", "2xx").inc(7)
    metrics.shadow.labels("web", "canary", "agree").inc(5)
    metrics.shadow.labels("web", "canary", "error").inc(1)
    snapshot = parse(generate_latest(metrics.registry).decode(), "web")
    assert set(snapshot) == {"stable", "canary"}
    stable, canary = snapshot["stable"], snapshot["canary"]
    assert (stable.requests, stable.errors, stable.client_errors) == (3, 0, 1)
    # the replica's 5xx and each of the gateway's own failures are errors; 4xx are not
    assert (canary.requests, canary.errors, canary.client_errors) == (6, 4, 1)
    assert canary.shadow == (5, 0, 1) and stable.shadow == (0, 0, 0)
    buckets = stable.buckets
    assert math.isinf(buckets[-1][0]) and buckets[-1][1] == 3
    assert next(n for le, n in buckets if le >= 0.004) == 2  # two requests by 4 ms
