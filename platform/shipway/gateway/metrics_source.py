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

RESPONSES = "shipway_gateway_responses_total"
BUCKETS = "shipway_gateway_request_seconds_bucket"
SHADOW = "shipway_gateway_shadow_total"
OUTCOMES = ("agree", "disagree", "error")
# the answer classes of RESPONSES: what is not a success or a client error is a failure
# (the replica's 5xx, and each of the gateway's own failures: no_ready_replica,
# upstream_timeout, connection_reset, and any class a newer gateway adds)
SUCCESS, CLIENT_ERROR = "2xx", "4xx"


def parse(text: str, deployment: str) -> Snapshot:
    """Per variant: every answer the gateway gave (one per request, after retries),
    failed ones, 4xx ones, the latency histogram, the shadow comparisons. Answers with
    no variant (the deployment had none serving) belong to no candidate and are left
    out."""
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    client_errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    shadow: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0.0))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("deployment") != deployment or not sample.labels.get("variant"):
                continue
            variant = sample.labels["variant"]
            if sample.name == RESPONSES:
                requests[variant] += sample.value
                kind = sample.labels.get("class", "")
                if kind == CLIENT_ERROR:
                    client_errors[variant] += sample.value
                elif kind != SUCCESS:
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
            client_errors.get(variant, 0.0),
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
