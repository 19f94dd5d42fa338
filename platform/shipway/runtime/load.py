"""Read the load of each deployment variant from the gateway's Prometheus metrics.

The gateway's latency histogram sums the seconds requests spent in flight; its rise
over an interval divided by the interval is the mean number of requests in flight
(Little's law), which is what the autoscaler targets.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

LATENCY_SUM = "shipway_gateway_request_seconds_sum"


def read_inflight_seconds(gateway_url: str, timeout: float = 2.0) -> dict[tuple[str, str], float]:
    """Cumulative in-flight seconds per (deployment, variant), as the gateway reports."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=timeout, trust_env=False).text
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LATENCY_SUM:
                key = (sample.labels["deployment"], sample.labels["variant"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


class LoadMeter:
    """Turns successive cumulative readings into mean in-flight requests per interval."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, float]] = {}

    def update(
        self, now: float, totals: dict[tuple[str, str], float]
    ) -> dict[tuple[str, str], float]:
        rates: dict[tuple[str, str], float] = {}
        for key, total in totals.items():
            previous = self._last.get(key)
            self._last[key] = (now, total)
            if previous and now > previous[0]:
                rates[key] = max(0.0, (total - previous[1]) / (now - previous[0]))
        return rates
