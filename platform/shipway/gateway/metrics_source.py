"""The local ``MetricsProvider``: the gateway's own Prometheus counters, read from its
``/metrics``. The Kubernetes provider asks Prometheus for the same series; the rollout
arithmetic after that (``rollout.counts``) is shared, and so are the series' names and the
mapping of their labels (``rollout.series``).
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shipway.rollout import series
from shipway.rollout.counts import Snapshot
from shipway.rollout.ports import MetricsUnavailable


def parse(text: str, deployment: str) -> Snapshot:
    """Per variant: every answer the gateway gave (one per request, after retries),
    failed ones, 4xx ones, the latency histogram, the shadow comparisons
    (``series.snapshot``), from the gateway's exposition text."""
    return series.snapshot(
        series.Sample(sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("deployment") == deployment
    )


class GatewayMetricsSource:
    def __init__(self, gateway_url: str, timeout: float = 2.0) -> None:
        self._url = f"{gateway_url.rstrip('/')}/metrics"
        self._client = httpx.Client(timeout=timeout, trust_env=False)

    def snapshot(self, deployment: str) -> Snapshot:
        try:
            response = self._client.get(self._url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"gateway metrics at {self._url}: {exc}") from exc
        return parse(response.text, deployment)

    def close(self) -> None:
        self._client.close()
