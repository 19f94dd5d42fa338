"""Drift results as Prometheus gauges, on a registry of their own (not the global one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

LABELS = ("deployment", "variant")


@dataclass
class DriftMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.score = Gauge(
            "shipway_drift_score", "Largest PSI over the window's features", LABELS, registry=r
        )
        self.min_p = Gauge(
            "shipway_drift_min_p_adjusted",
            "Smallest adjusted p-value of the window's tests",
            LABELS,
            registry=r,
        )
        self.detected = Gauge(
            "shipway_drift_detected",
            "1 drift, 0 no drift, -1 insufficient data",
            LABELS,
            registry=r,
        )
        self.rows = Gauge("shipway_drift_window_rows", "Rows in the window", LABELS, registry=r)
        self.feature_p = Gauge(
            "shipway_drift_feature_p_adjusted",
            "Adjusted p-value per feature",
            (*LABELS, "feature", "test"),
            registry=r,
        )

    def record(self, deployment: str, variant: str, report: dict[str, object]) -> None:
        labels = (deployment, variant)
        verdict = report.get("verdict")
        self.detected.labels(*labels).set(
            1 if verdict == "drift" else 0 if verdict == "no-drift" else -1
        )
        self.rows.labels(*labels).set(float(report.get("rows", 0) or 0))  # type: ignore[arg-type]
        self.score.labels(*labels).set(float(report.get("score", 0.0) or 0.0))  # type: ignore[arg-type]
        p = report.get("min_p_adjusted")
        if p is not None:
            self.min_p.labels(*labels).set(float(p))  # type: ignore[arg-type]
        for feature in report.get("features", []) or []:  # type: ignore[union-attr]
            self.feature_p.labels(*labels, feature["name"], feature["test"]).set(
                float(feature["p_adjusted"])
            )
