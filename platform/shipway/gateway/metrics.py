"""Gateway metrics in the Prometheus format, on a registry of its own (not the global one)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

VARIANT = ("deployment", "variant")
# 1 ms to ~10 s, each bound 25 % above the last: fine enough that a rollout's latency
# check (p50/p99 against stable, interpolated inside a bucket) sees a 25 % regression
LATENCY_BUCKETS = tuple(float(f"{0.001 * 1.25**k:.4g}") for k in range(42))
REPLICA = ("deployment", "variant", "replica")

# The ``class`` label of ``shipway_gateway_responses_total``: what the gateway answered a
# client, once per inference request of a known deployment, after any retry. The
# rollout analysis parses these values: keep them as they are.
OK, CLIENT_ERROR, SERVER_ERROR = "2xx", "4xx", "5xx"  # a replica's (or our 4xx) answer
NO_READY_REPLICA = "no_ready_replica"  # 503: no variant serves, or none of its replicas
UPSTREAM_TIMEOUT = "upstream_timeout"  # 504: the replica did not answer in time
CONNECTION_RESET = "connection_reset"  # 502: no replica reached, after the retry
RESPONSE_CLASSES = (
    OK,
    CLIENT_ERROR,
    SERVER_ERROR,
    NO_READY_REPLICA,
    UPSTREAM_TIMEOUT,
    CONNECTION_RESET,
)
NO_VARIANT = ""  # the variant label of an answer given before a variant was chosen


def status_class(status: int) -> str:
    """The class of an HTTP answer: ``4xx``, ``5xx``, else ``2xx``. 1xx and 3xx fold
    into ``2xx``: RFC 9110 (section 15) makes only 4xx and 5xx error classes, and
    neither is a final answer Triton gives to an inference request."""
    if status >= 500:
        return SERVER_ERROR
    if status >= 400:
        return CLIENT_ERROR
    return OK


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # (deployment, variant, replica) label sets in use: prometheus-client cannot list them
    replica_labels: set[tuple[str, str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "shipway_gateway_requests",
            "Inference requests answered, by HTTP code",
            (*REPLICA, "code"),
            registry=r,
        )
        self.errors = Counter(
            "shipway_gateway_errors",
            "Failed upstream attempts: kind is 5xx, connect or timeout",
            (*REPLICA, "kind"),
            registry=r,
        )
        self.responses = Counter(
            "shipway_gateway_responses",
            "Answers to inference requests of a known deployment, one per request after "
            "retries; class is 2xx, 4xx, 5xx, no_ready_replica, upstream_timeout or "
            'connection_reset; variant "" when none was chosen',
            (*VARIANT, "class"),
            registry=r,
        )
        self.latency = Histogram(
            "shipway_gateway_request_seconds",
            "Inference latency seen by the gateway, of good answers: the 2xx of the "
            "responses counter (same labels), and each mirrored request a shadow "
            "answered, under its shadow variant",
            VARIANT,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "shipway_gateway_in_flight", "Requests being served", REPLICA, registry=r
        )
        self.retries = Counter(
            "shipway_gateway_retries", "Requests retried on another replica", VARIANT, registry=r
        )
        self.no_route = Counter(
            "shipway_gateway_no_route",
            "Requests refused for want of a ready replica",
            ("deployment",),
            registry=r,
        )
        self.available = Gauge(
            "shipway_gateway_replica_available",
            "1 when a replica takes traffic (healthy, not ejected)",
            REPLICA,
            registry=r,
        )
        self.shadow = Counter(
            "shipway_gateway_shadow",
            "Mirrored requests; outcome is agree, disagree or error",
            (*VARIANT, "outcome"),
            registry=r,
        )

    def declare_variants(self, variants: set[tuple[str, str]]) -> None:
        """Create every class of the responses counter at zero for these (deployment,
        variant) pairs, so that a series exists before its first increment and a rate
        over it starts from 0, not from the first error (Prometheus' advice on missing
        metrics)."""
        for labels in variants:
            for answer_class in RESPONSE_CLASSES:
                self.responses.labels(*labels, answer_class)

    def forget_replicas(self, urls: set[str]) -> None:
        """Drop the gauges of replicas that left the routes, so that a replica churning
        through ports does not grow the exposition forever. Counters stay: they are
        totals that rate() queries over the variant still need."""
        if not urls:
            return
        for labels in [k for k in self.replica_labels if k[2] in urls]:
            self.replica_labels.discard(labels)
            for gauge in (self.in_flight, self.available):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
