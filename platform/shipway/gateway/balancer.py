"""Replica choice within a variant: power of two choices on outstanding requests, with
passive outlier ejection and the verdicts of active health checks.

State per replica lives here, keyed by URL, so it survives routing-table swaps. Time
comes in as an argument; the class never reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EjectionPolicy:
    consecutive_failures: int = 3  # 5xx answers or connection errors in a row
    base_seconds: float = 2.0  # first ejection; doubles with each repeat
    max_seconds: float = 30.0


@dataclass
class ReplicaHealth:
    outstanding: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    healthy: bool = True  # the last active health check's verdict

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


@dataclass
class Balancer:
    policy: EjectionPolicy = field(default_factory=EjectionPolicy)
    rng: random.Random = field(default_factory=random.Random)
    replicas: dict[str, ReplicaHealth] = field(default_factory=dict)

    def health(self, url: str) -> ReplicaHealth:
        state = self.replicas.get(url)
        if state is None:
            state = self.replicas[url] = ReplicaHealth()
        return state

    def pick(self, urls: Sequence[str], now: float, exclude: str | None = None) -> str | None:
        """Two random candidates among available replicas; the less busy one wins.

        When no replica is available (all ejected or failing checks) every replica is a
        candidate again — better to try than to refuse all traffic (Envoy's panic mode).
        """
        candidates = [u for u in urls if u != exclude and self.health(u).available(now)]
        if not candidates:
            candidates = [u for u in urls if u != exclude]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.rng.sample(candidates, 2)
        return a if self.health(a).outstanding <= self.health(b).outstanding else b

    def started(self, url: str) -> None:
        self.health(url).outstanding += 1

    def finished(self, url: str, failed: bool, now: float) -> None:
        """Record an outcome: ``failed`` is a 5xx or a connection error (never a 4xx)."""
        state = self.health(url)
        state.outstanding = max(0, state.outstanding - 1)
        if not failed:
            state.consecutive_failures = 0
            if now >= state.ejected_until:
                state.ejections = 0
            return
        state.consecutive_failures += 1
        # A re-admitted replica is on probation until it answers well once: its first
        # failure ejects it again, so a still-broken replica costs one request, not N.
        threshold = 1 if state.ejections else self.policy.consecutive_failures
        if state.consecutive_failures >= threshold and now >= state.ejected_until:
            state.ejections += 1
            seconds = min(
                self.policy.max_seconds, self.policy.base_seconds * 2 ** (state.ejections - 1)
            )
            state.ejected_until = now + seconds
            state.consecutive_failures = 0

    def checked(self, url: str, healthy: bool) -> None:
        self.health(url).healthy = healthy

    def forget_except(self, urls: set[str]) -> None:
        """Drop state of replicas that left the routing table (busy ones stay until idle)."""
        for url in list(self.replicas):
            if url not in urls and self.replicas[url].outstanding == 0:
                del self.replicas[url]
