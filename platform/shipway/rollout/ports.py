"""What a rollout controller needs from the world: three ports, and two narrow ones.

Local mode implements them over the state store (which the runtime manager and the
gateway follow), the gateway's Prometheus counters and MLflow; the Kubernetes operator
over Deployments, HTTPRoutes and Prometheus. The engine never calls them; the
controller (``shipway.rollout.controller``) turns the engine's state into calls here.
In-memory fakes of each are in ``shipway.rollout.testing``, and one contract suite
(tests/unit/rollout/test_port_contracts.py) holds every implementation to the same
behaviour.

Calls are idempotent: the controller converges level-triggered and calls again with the
same arguments after a failure or a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shipway.rollout.counts import Snapshot


class MetricsUnavailable(Exception):
    """The metrics source could not be read; that analysis is inconclusive."""


class MetricsProvider(Protocol):
    def snapshot(self, deployment: str) -> Snapshot:
        """Cumulative counters per variant of one deployment, now; counters only grow
        (a reset, e.g. a restarted gateway, is seen as a decrease). Raises
        ``MetricsUnavailable`` when the source cannot be read."""
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


class ReleaseAliases(Protocol):
    """Names for builds that clients of the model registry follow: ``candidate`` while a
    rollout runs, ``production`` for what serves. Locally MLflow aliases on the build's
    model version; on Kubernetes whatever the operator chooses (or nothing)."""

    def set_alias(self, build_id: str, alias: str) -> None: ...

    def delete_alias(self, build_id: str, alias: str) -> None:
        """Drop ``alias`` from the build's model if it has it; no error when absent."""
        ...


class DriftScores(Protocol):
    def score(self, deployment: str, reference: str, variant: str) -> float | None:
        """The drift score (PSI) of ``variant``'s inputs against ``reference``'s; None
        when it cannot be computed yet (too few samples, source unreachable). Never
        raises: a missing score makes the drift check inconclusive, nothing more."""
        ...


@dataclass(frozen=True)
class Ports:
    """Everything the controller calls. ``drift`` None: drift checks stay inconclusive
    (a spec with ``max_drift_score`` then never passes its drift check)."""

    router: Router
    placement: Placement
    metrics: MetricsProvider
    aliases: ReleaseAliases
    drift: DriftScores | None = None
