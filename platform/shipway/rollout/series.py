"""The gateway's metric series as the rollout analysis reads them, whoever reads them.

Both ``MetricsProvider``s turn the same three series of the gateway
(``shipway.gateway.metrics``) into the same ``Snapshot``: the local one from the
gateway's own ``/metrics`` text (``shipway.gateway.metrics_source``), the Kubernetes one
from Prometheus (``shipway_operator.prometheus``). The names and the mapping of the
``class`` label live here, pure and free of ``prometheus_client`` (a server extra the
operator image does not carry), so the two cannot drift apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shipway.rollout.counts import Snapshot, VariantCounts

RESPONSES = "shipway_gateway_responses_total"
BUCKETS = "shipway_gateway_request_seconds_bucket"
SHADOW = "shipway_gateway_shadow_total"
OUTCOMES = ("agree", "disagree", "error")
# the answer classes of RESPONSES: what is not a success or a client error is a failure
# (the replica's 5xx, and each of the gateway's own failures: no_ready_replica,
# upstream_timeout, connection_reset, and any class a newer gateway adds)
SUCCESS, CLIENT_ERROR = "2xx", "4xx"


@dataclass(frozen=True)
class Sample:
    """One value of one of the series: its metric name, labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


def snapshot(samples: Iterable[Sample]) -> Snapshot:
    """Per variant: every answer the gateway gave (one per request, after retries),
    failed ones, 4xx ones, the latency histogram, the shadow comparisons.

    ``samples`` are one deployment's (the caller filters by deployment); samples of other
    metrics are ignored. Samples of one variant, name and (for buckets) ``le`` add up:
    one per ``class``, or one per gateway replica. Answers with no variant (the
    deployment had none serving) belong to no candidate and are left out.
    Raises ``KeyError``/``ValueError`` for a bucket without a numeric ``le``."""
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    client_errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    shadow: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0.0))
    for sample in samples:
        variant = sample.labels.get("variant")
        if not variant:
            continue
        if sample.name == RESPONSES:
            requests[variant] += sample.value
            kind = sample.labels.get("class", "")
            if kind == CLIENT_ERROR:
                client_errors[variant] += sample.value
            elif kind != SUCCESS:
                errors[variant] += sample.value
        elif sample.name == BUCKETS:
            le = float(sample.labels["le"])
            buckets[variant][le] = buckets[variant].get(le, 0.0) + sample.value
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
