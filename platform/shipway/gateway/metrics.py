"""Gateway metrics in the Prometheus format, on a registry of its own (not the global one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LABELS = ("deployment", "variant")


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "shipway_gateway_requests",
            "Inference requests",
            (*LABELS, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipway_gateway_request_seconds",
            "Inference latency seen by the gateway",
            LABELS,
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge(
            "shipway_gateway_in_flight", "Requests being served", LABELS, registry=self.registry
        )
