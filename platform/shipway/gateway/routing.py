"""Which variant and which replica a request goes to. Pure: no I/O, no clock of its own.

A ``RoutingTable`` is a snapshot built from the store; the gateway swaps the whole
table in one assignment, so a request sees either the old routes or the new ones,
never a mix, and requests in flight finish where they started.

Versions: a deployment is the KServe model; the version in a KServe path
(``/v2/models/{deployment}/versions/{v}``) is the *registered model version* (MLflow's)
of the build a replica serves. It is kept per replica, not per variant, because while
a variant changes build its replicas of the old build serve until the new ones are
ready: for that while one variant serves two versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shipway.builds.accuracy import AgreementRule

BUCKETS = 10_000  # sticky assignment resolution: 0.01 % of traffic


@dataclass(frozen=True)
class ReplicaRoute:
    url: str
    triton_model_name: str  # the model's name inside that replica's Triton (version "1")
    version: int | None = None  # the registered model version it serves; None: unknown


@dataclass(frozen=True)
class VariantRoute:
    name: str
    weight: int
    replicas: tuple[ReplicaRoute, ...]
    shadow_share: float = 0.0
    # how a shadow's answers are judged against the live answer: its build's accuracy
    # gate rule (threshold, class-score outputs, mask input), so that a build that
    # passed its gate agrees in shadow on the same kind of traffic
    agreement: AgreementRule = field(default_factory=AgreementRule)
    # output kinds declared at registration (``shipway.output.<name>`` tags)
    output_kinds: tuple[tuple[str, str], ...] = ()
    # rank-0 inputs and outputs of its model: shape [] at the gateway, [1] in Triton
    scalar_inputs: frozenset[str] = frozenset()
    scalar_outputs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DeploymentRoute:
    name: str
    variants: tuple[VariantRoute, ...]
    sticky: bool = False
    sticky_header: str = "x-shipway-key"

    def serving(self) -> tuple[VariantRoute, ...]:
        """Variants that take live traffic: a weight above zero and a ready replica."""
        return tuple(v for v in self.variants if v.weight > 0 and v.replicas)

    def shadows(self) -> tuple[VariantRoute, ...]:
        return tuple(v for v in self.variants if v.shadow_share > 0 and v.replicas)

    def versions(self) -> tuple[int, ...]:
        """The registered versions that take live traffic, ascending."""
        return tuple(
            sorted({r.version for v in self.serving() for r in v.replicas if r.version is not None})
        )

    def pinned(self, version: int) -> DeploymentRoute:
        """This route as a request pinned to ``version`` sees it: each variant keeps only
        its replicas of that version, so only variants serving it can be chosen, split
        among themselves by their weights (or by the sticky key, as unpinned)."""
        return replace(
            self,
            variants=tuple(
                replace(v, replicas=tuple(r for r in v.replicas if r.version == version))
                for v in self.variants
            ),
        )

    def choose(self, key: str | None, draw: float) -> VariantRoute | None:
        """Pick the variant for one request.

        Sticky deployments hash the request key into one of ``BUCKETS`` buckets laid
        out by weight, so a key keeps its arm for as long as the weights stay; without
        a key, or for weighted deployments, ``draw`` (uniform in [0, 1)) decides.
        """
        serving = self.serving()
        if not serving:
            return None
        total = sum(v.weight for v in serving)
        point = sticky_bucket(key) / BUCKETS if self.sticky and key else draw
        target = point * total
        running = 0
        for variant in serving:
            running += variant.weight
            if target < running:
                return variant
        return serving[-1]


def sticky_bucket(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class RoutesUnavailable(RuntimeError):
    """A route source cannot give a table now (e.g. its first sync is not done): the
    gateway keeps the table it has, and is not ready until it got one."""


@dataclass(frozen=True)
class RoutingTable:
    deployments: Mapping[str, DeploymentRoute] = field(default_factory=dict)

    def get(self, name: str) -> DeploymentRoute | None:
        return self.deployments.get(name)

    def replica_urls(self) -> set[str]:
        return {r.url for d in self.deployments.values() for v in d.variants for r in v.replicas}
