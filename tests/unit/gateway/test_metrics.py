"""The gateway's answer classes and its responses counter's series."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from shipway.gateway.metrics import RESPONSE_CLASSES, GatewayMetrics, status_class


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "2xx"),
        (204, "2xx"),
        (101, "2xx"),
        (304, "2xx"),
        (400, "4xx"),
        (404, "4xx"),
        (499, "4xx"),
        (500, "5xx"),
        (503, "5xx"),
        (504, "5xx"),
    ],
)
def test_status_classes(status: int, expected: str) -> None:
    assert status_class(status) == expected


def test_the_label_values_the_rollout_analysis_parses() -> None:
    assert RESPONSE_CLASSES == (
        "2xx",
        "4xx",
        "5xx",
        "no_ready_replica",
        "upstream_timeout",
        "connection_reset",
    )


def test_declared_variants_have_every_class_at_zero() -> None:
    metrics = GatewayMetrics()
    metrics.declare_variants({("web", "stable"), ("web", "canary")})
    metrics.responses.labels("web", "canary", "5xx").inc()
    lines = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("shipway_gateway_responses_total{")
    ]
    assert len(lines) == 2 * len(RESPONSE_CLASSES)
    series = "shipway_gateway_responses_total"
    assert f'{series}{{class="5xx",deployment="web",variant="canary"}} 1.0' in lines
    assert f'{series}{{class="2xx",deployment="web",variant="stable"}} 0.0' in lines
