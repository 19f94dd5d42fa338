"""The local ``MetricsProvider``: the gateway's own Prometheus counters, read from its
``/metrics``. The Kubernetes provider asks Prometheus for the same series; the rollout
arithmetic after that (``rollout.counts``) is shared.
"""

from __future__ import annotations

from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shipway.rollout.counts import Snapshot, VariantCounts
from shipway.rollout.ports import MetricsUnavailable

REQUESTS = "shipway_gateway_requests_total"
BUCKETS = "shipway_gateway_request_seconds_bucket"
SHADOW = "shipway_gateway_shadow_total"
OUTCOMES = ("agree", "disagree", "error")


def parse(text: str, deployment: str) -> Snapshot:
    """Per variant: answered requests, those with a 5xx code, the latency histogram."""
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    shadow: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0.0))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("deployment") != deployment:
                continue
            variant = sample.labels["variant"]
            if sample.name == REQUESTS:
                requests[variant] += sample.value
                if sample.labels.get("code", "").startswith("5"):
                    errors[variant] += sample.value
            elif sample.name == BUCKETS:
                buckets[variant][float(sample.labels["le"])] = sample.value
            elif sample.name == SHADOW and sample.labels.get("outcome") in OUTCOMES:
                shadow[variant][sample.labels["outcome"]] += sample.value
    return {
        variant: VariantCounts(
            requests.get(variant, 0.0),
            errors.get(variant, 0.0),
            tuple(sorted(buckets.get(variant, {}).items())),
            _outcomes(shadow.get(variant, {})),
        )
        for variant in set(requests) | set(buckets) | set(shadow)
    }


def _outcomes(counted: dict[str, float]) -> tuple[float, float, float]:
    return (counted.get("agree", 0.0), counted.get("disagree", 0.0), counted.get("error", 0.0))


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
