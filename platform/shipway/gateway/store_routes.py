"""Build the routing table from the state store (the local ``Router``'s source of truth)."""

from __future__ import annotations

from sqlalchemy import select

from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.store.db import Database
from shipway.store.models import Build, Deployment, ModelVersion, ReplicaState, Split


def load_table(db: Database) -> RoutingTable:
    """Ready replicas only, each with the registered model version of its own build
    (Replica → Build → ModelVersion.version): during a build change a variant's ready
    replicas may belong to its old build and serve the old version."""
    with db.session() as session:
        deployments = list(session.scalars(select(Deployment)))
        ready = {
            r.build_id for d in deployments for r in d.replicas if r.state == ReplicaState.READY
        }
        versions: dict[str, int] = (
            dict(
                session.execute(  # type: ignore[arg-type]
                    select(Build.id, ModelVersion.version)
                    .join(ModelVersion, Build.model_version_id == ModelVersion.id)
                    .where(Build.id.in_(ready))
                ).all()
            )
            if ready
            else {}
        )
        routes = {}
        for d in deployments:
            variants = tuple(
                VariantRoute(
                    name=v.name,
                    weight=v.weight,
                    shadow_share=v.shadow_share,
                    replicas=tuple(
                        ReplicaRoute(r.url, r.triton_model_name, versions.get(r.build_id))
                        for r in sorted(d.replicas, key=lambda r: r.url)
                        if r.variant == v.name and r.state == ReplicaState.READY
                    ),
                )
                for v in d.variants
            )
            routes[d.name] = DeploymentRoute(
                d.name, variants, sticky=d.split == Split.STICKY, sticky_header=d.sticky_header
            )
        return RoutingTable(routes)
