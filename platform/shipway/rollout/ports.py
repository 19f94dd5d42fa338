"""What a rollout controller needs from the world, as three ports.

Local mode implements them over the state store (which the runtime manager and the
gateway follow) and the gateway's Prometheus counters; the Kubernetes operator over
Deployments, HTTPRoutes and Prometheus. The engine itself never calls them: the
controller turns the engine's state into calls here.
"""

from __future__ import annotations

from typing import Protocol

from shipway.rollout.counts import Snapshot


class MetricsUnavailable(Exception):
    """The metrics source could not be read; that analysis is inconclusive."""


class MetricsProvider(Protocol):
    def snapshot(self, deployment: str) -> Snapshot:
        """Cumulative counters per variant of one deployment, now."""
        ...


class Router(Protocol):
    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        """Live traffic shares by variant, summing to 100."""
        ...

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        """Weighted draws per request, or sticky by a request-key header."""
        ...

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        """Mirror ``share`` of live requests to a variant that takes no live traffic."""
        ...


class Placement(Protocol):
    """The Runtime port as a rollout sees it: variants of builds, ready or not."""

    def place(self, deployment: str, variant: str, build_id: str) -> None:
        """Start the variant's replicas, taking no traffic yet."""
        ...

    def ready(self, deployment: str, variant: str, build_id: str) -> bool:
        """Every replica the variant needs serves ``build_id``, and no other build's."""
        ...

    def remove(self, deployment: str, variant: str) -> None: ...

    def make_stable(self, deployment: str, build_id: str) -> None:
        """Point the stable variant at ``build_id``; its old replicas go once it is ready."""
        ...
