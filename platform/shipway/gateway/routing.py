"""The routing table: which replicas serve a deployment. Pure; swapped whole on change."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    url: str
    triton_model_name: str
    variant: str = "stable"


@dataclass
class RoutingTable:
    """An immutable-by-convention snapshot; the gateway replaces it atomically."""

    routes: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    _counters: dict[str, itertools.count[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, rows: Iterable[tuple[str, Endpoint]]) -> RoutingTable:
        grouped: dict[str, list[Endpoint]] = {}
        for deployment, endpoint in rows:
            grouped.setdefault(deployment, []).append(endpoint)
        return cls({name: tuple(sorted(eps, key=lambda e: e.url)) for name, eps in grouped.items()})

    def pick(self, deployment: str) -> Endpoint | None:
        """Round robin over ready replicas; ``None`` when the deployment has none."""
        endpoints = self.routes.get(deployment)
        if not endpoints:
            return None
        counter = self._counters.setdefault(deployment, itertools.count())
        return endpoints[next(counter) % len(endpoints)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoutingTable) and self.routes == other.routes
