"""The local ports of the rollout controller: Router and Placement write the desired
state in the store, release aliases go to MLflow, drift scores come from the drift
service. (The local MetricsProvider reads the gateway: ``gateway.metrics_source``.)

Locally the store is the interface: the gateway re-reads its routes every
``routes_refresh_seconds`` and the runtime manager reconciles replicas every
``reconcile_seconds``, so a weight written here serves within about a second.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from shipway.container import Container
from shipway.errors import NotFound, ShipwayError
from shipway.rollout.controller import CONTROLLER
from shipway.services import deployments
from shipway.services.deployments import STABLE
from shipway.store.models import Build, Deployment, ReplicaState, Split

log = logging.getLogger(__name__)
ACTOR = CONTROLLER


class StoreRouter:
    def __init__(self, container: Container) -> None:
        self.container = container

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        current = {v.name: v.weight for v in deployments.get(self.container, deployment).variants}
        wanted = {name: weight for name, weight in weights.items() if name in current}
        if any(current[name] != weight for name, weight in wanted.items()):
            deployments.set_routing(self.container, deployment, ACTOR, weights=wanted)

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        split = Split.STICKY if sticky else Split.WEIGHTED
        current = deployments.get(self.container, deployment)
        if current.split != split or (header and current.sticky_header != header.lower()):
            deployments.set_routing(
                self.container, deployment, ACTOR, split=split.value, sticky_header=header
            )

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        current = deployments.get(self.container, deployment)
        found = next((v for v in current.variants if v.name == variant), None)
        if found is not None and found.shadow_share != share:
            deployments.set_variant(
                self.container,
                deployment,
                variant,
                found.build_id,
                ACTOR,
                weight=found.weight,
                shadow_share=share,
                scale=deployments.Scale(found.min_replicas, found.max_replicas),
                allow_signature_change=True,  # the rollout's start checked it
            )


class StorePlacement:
    def __init__(self, container: Container) -> None:
        self.container = container

    def place(self, deployment: str, variant: str, build_id: str) -> None:
        """With stable's replica range: the candidate may take all the traffic."""
        current = deployments.get(self.container, deployment)
        if not any(v.name == variant and v.build_id == build_id for v in current.variants):
            stable = next(v for v in current.variants if v.name == STABLE)
            scale = deployments.Scale(stable.min_replicas, stable.max_replicas)
            deployments.set_variant(
                self.container,
                deployment,
                variant,
                build_id,
                ACTOR,
                scale=scale,
                allow_signature_change=True,  # the rollout's start checked it
            )

    def ready(self, deployment: str, variant: str, build_id: str) -> bool:
        with self.container.db.session() as session:
            row = session.scalar(select(Deployment).where(Deployment.name == deployment))
            if row is None:
                return False
            wanted = next((v for v in row.variants if v.name == variant), None)
            if wanted is None or wanted.build_id != build_id:
                return False
            replicas = [r for r in row.replicas if r.variant == variant]
            ready = [r for r in replicas if r.state == ReplicaState.READY]
            return len(ready) >= wanted.min_replicas and all(
                r.build_id == build_id for r in replicas
            )

    def remove(self, deployment: str, variant: str) -> None:
        current = deployments.get(self.container, deployment)
        if any(v.name == variant for v in current.variants):
            deployments.remove_variant(self.container, deployment, variant, ACTOR)

    def make_stable(self, deployment: str, build_id: str) -> None:
        if deployments.get(self.container, deployment).build_id != build_id:
            deployments.deploy(
                self.container, deployment, build_id, ACTOR, allow_signature_change=True
            )


class StoreReleaseAliases:
    """MLflow aliases on the build's model version: ``candidate`` while it rolls out,
    ``production`` for what serves."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def _version(self, build_id: str) -> tuple[str, int]:
        with self.container.db.session() as session:
            build = session.get(Build, build_id)
            if build is None:
                raise NotFound(f"build {build_id!r} does not exist")
            return build.model_version.name, build.model_version.version

    def set_alias(self, build_id: str, alias: str) -> None:
        name, version = self._version(build_id)
        self.container.registry.set_alias(name, alias, version)

    def delete_alias(self, build_id: str, alias: str) -> None:
        name, _ = self._version(build_id)
        self.container.registry.delete_alias(name, alias)


class StoreDriftScores:
    """The drift service's PSI between two variants' sampled inputs (the gateway's
    samples); None when they cannot be had, so the drift check is inconclusive."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def score(self, deployment: str, reference: str, variant: str) -> float | None:
        from shipway.services import drift

        try:
            return drift.score_between(self.container, deployment, reference, variant)
        except ShipwayError as exc:  # the gateway's samples unreachable: inconclusive
            log.warning("drift score of %s/%s: %s", deployment, variant, exc)
            return None
        except Exception:  # whatever the samples hold, the analysis goes on: inconclusive
            log.exception("drift score of %s/%s failed", deployment, variant)
            return None
