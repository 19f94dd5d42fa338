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
        self.latency = Histogram(
            "shipway_gateway_request_seconds",
            "Inference latency seen by the gateway",
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
