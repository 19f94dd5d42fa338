"""In-memory fakes of every rollout port, for tests of the controller here and in the
operator. They keep the semantics the contract suite (tests/unit/rollout/
test_port_contracts.py) holds every real adapter to, so a controller test against
them says something about the real thing:

- ``FakeWorld``: deployments with variants (build, weight, shadow share, split); a
  variant's replicas are ready only once the test says so (``serve``), like the
  runtime manager writing ready replicas, and placing another build makes them unready;
- ``FakeRouter`` / ``FakePlacement``: the Router and Placement ports over a world;
  weights for variants a deployment does not have are ignored;
- ``FakeMetrics``: cumulative counters per deployment and variant that the test grows,
  or ``down`` (raises ``MetricsUnavailable``);
- ``FakeAliases``, ``FakeDrift``.

Every port call is appended to ``FakeWorld.calls`` (name and arguments), so a test can
prove what was, or was not, carried out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shipway.rollout.counts import Snapshot, VariantCounts
from shipway.rollout.ports import MetricsUnavailable, Ports
from shipway.rollout.status import STABLE


@dataclass
class FakeVariant:
    build_id: str
    weight: int = 0
    shadow_share: float = 0.0
    ready_build: str | None = None  # the build its replicas serve ready; None: starting


@dataclass
class FakeDeployment:
    variants: dict[str, FakeVariant]
    sticky: bool = False
    header: str | None = None


@dataclass
class FakeWorld:
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def create(self, name: str, build_id: str) -> None:
        """A deployment whose stable variant serves ``build_id``, ready, all traffic."""
        stable = FakeVariant(build_id, weight=100, ready_build=build_id)
        self.deployments[name] = FakeDeployment({STABLE: stable})

    def serve(self, deployment: str, variant: str, build_id: str) -> None:
        """The variant's replicas answer ready with ``build_id``."""
        self.deployments[deployment].variants[variant].ready_build = build_id

    def weights(self, deployment: str) -> dict[str, int]:
        return {n: v.weight for n, v in self.deployments[deployment].variants.items()}

    def build(self, deployment: str, variant: str) -> str | None:
        found = self.deployments[deployment].variants.get(variant)
        return None if found is None else found.build_id


class FakeRouter:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        self.world.calls.append(("set_weights", (deployment, dict(weights))))
        variants = self.world.deployments[deployment].variants
        for name, weight in weights.items():
            if name in variants:
                variants[name].weight = weight

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        self.world.calls.append(("set_split", (deployment, sticky, header)))
        found = self.world.deployments[deployment]
        found.sticky = sticky
        if header:
            found.header = header.lower()

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        self.world.calls.append(("set_shadow", (deployment, variant, share)))
        found = self.world.deployments[deployment].variants.get(variant)
        if found is not None:
            found.shadow_share = share


class FakePlacement:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def place(self, deployment: str, variant: str, build_id: str) -> None:
        self.world.calls.append(("place", (deployment, variant, build_id)))
        variants = self.world.deployments[deployment].variants
        if variant not in variants or variants[variant].build_id != build_id:
            variants[variant] = FakeVariant(build_id)  # no traffic; its weight to stable
            others = sum(v.weight for n, v in variants.items() if n != STABLE)
            variants[STABLE].weight = 100 - others

    def ready(self, deployment: str, variant: str, build_id: str) -> bool:
        found = self.world.deployments.get(deployment)
        wanted = None if found is None else found.variants.get(variant)
        return wanted is not None and wanted.build_id == build_id == wanted.ready_build

    def remove(self, deployment: str, variant: str) -> None:
        self.world.calls.append(("remove", (deployment, variant)))
        variants = self.world.deployments[deployment].variants
        gone = variants.pop(variant, None) if variant != STABLE else None
        if gone is not None:
            variants[STABLE].weight += gone.weight  # its weight returns to stable

    def make_stable(self, deployment: str, build_id: str) -> None:
        self.world.calls.append(("make_stable", (deployment, build_id)))
        stable = self.world.deployments[deployment].variants[STABLE]
        if stable.build_id != build_id:
            stable.build_id, stable.ready_build = build_id, None


@dataclass
class FakeMetrics:
    """``totals[deployment][variant]``: requests, errors (5xx, gateway failures), client
    errors (4xx); every good answer took ``latency_s`` (one histogram bucket)."""

    totals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    shadow: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    latency_s: float = 0.005
    down: bool = False

    def add(
        self,
        deployment: str,
        variant: str,
        requests: int,
        errors: int = 0,
        client_errors: int = 0,
    ) -> None:
        now = self.totals.setdefault(deployment, {}).setdefault(variant, [0.0, 0.0, 0.0])
        now[0] += requests
        now[1] += errors
        now[2] += client_errors

    def mirror(self, deployment: str, variant: str, agree: int, disagree: int = 0) -> None:
        now = self.shadow.setdefault(deployment, {}).setdefault(variant, [0.0, 0.0, 0.0])
        now[0] += agree
        now[1] += disagree

    def reset(self) -> None:
        """Counters back at zero, like a restarted gateway."""
        self.totals.clear()
        self.shadow.clear()

    def snapshot(self, deployment: str) -> Snapshot:
        if self.down:
            raise MetricsUnavailable("metrics source down (fake)")
        totals = self.totals.get(deployment, {})
        mirrored = self.shadow.get(deployment, {})
        out: Snapshot = {}
        for variant in set(totals) | set(mirrored):
            n, e, client = totals.get(variant, [0.0, 0.0, 0.0])
            good = n - e - client
            # one histogram bucket, (0.8 x latency, latency], as a gateway's would hold it
            low, high = 0.8 * self.latency_s, self.latency_s
            buckets = ((low, 0.0), (high, good), (math.inf, good)) if n else ()
            agree, disagree, error = mirrored.get(variant, [0.0, 0.0, 0.0])
            out[variant] = VariantCounts(n, e, buckets, (agree, disagree, error), client)
        return out


@dataclass
class FakeAliases:
    """Aliases by build id (the registry's model-version aliases, one model)."""

    aliases: dict[str, str] = field(default_factory=dict)  # alias -> build id

    def set_alias(self, build_id: str, alias: str) -> None:
        self.aliases[alias] = build_id

    def delete_alias(self, build_id: str, alias: str) -> None:
        self.aliases.pop(alias, None)


@dataclass
class FakeDrift:
    scores: dict[tuple[str, str], float] = field(default_factory=dict)  # (deployment, variant)

    def score(self, deployment: str, reference: str, variant: str) -> float | None:
        return self.scores.get((deployment, variant))


@dataclass
class FakePorts:
    """A world and every port over it, ready for ``Controller(fakes.ports)``."""

    world: FakeWorld = field(default_factory=FakeWorld)
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    aliases: FakeAliases = field(default_factory=FakeAliases)
    drift: FakeDrift = field(default_factory=FakeDrift)

    @property
    def ports(self) -> Ports:
        return Ports(
            FakeRouter(self.world),
            FakePlacement(self.world),
            self.metrics,
            self.aliases,
            self.drift,
        )
