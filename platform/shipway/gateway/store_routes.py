"""Build the routing table from the state store (the local ``Router``'s source of truth)."""

from __future__ import annotations

from sqlalchemy import select

from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.store.db import Database
from shipway.store.models import Deployment, ReplicaState, Split


def load_table(db: Database) -> RoutingTable:
    with db.session() as session:
        routes = {}
        for d in session.scalars(select(Deployment)):
            variants = tuple(
                VariantRoute(
                    name=v.name,
                    weight=v.weight,
                    shadow_share=v.shadow_share,
                    replicas=tuple(
                        ReplicaRoute(r.url, r.triton_model_name)
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
