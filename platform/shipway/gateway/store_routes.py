"""Build the routing table from the state store (the local ``Router``'s source of truth)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select

from shipway.builds.accuracy import MASK, AgreementRule, mask_input, output_kinds
from shipway.builds.triton_config import token_outputs
from shipway.errors import InvalidInput
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.registry.signature import Signature
from shipway.store.db import Database
from shipway.store.models import Build, Deployment, ModelVersion, ReplicaState, Split


def agreement(build: Build) -> tuple[AgreementRule, tuple[tuple[str, str], ...]]:
    """The rule a shadow of ``build`` is judged by: the one its accuracy gate used (an
    optimized build's report keeps it), else one from its build options (an fp32 build
    has no gate); and the output kinds its registration tags declare."""
    version = build.model_version
    try:
        outputs = [o["name"] for o in version.signature.get("outputs", [])]
        kinds = tuple(sorted(output_kinds(version.tags or {}, outputs).items()))
    except InvalidInput:  # a tag the build refused: judged without declared kinds
        kinds = ()
    saved = ((build.report or {}).get("accuracy") or {}).get("rule")
    try:
        signature = Signature.from_dict(version.signature)
        if saved:
            rule = AgreementRule.from_dict(saved)
        else:
            options = build.options or {}
            floor = options.get("min_row_cosine")
            rule = AgreementRule(
                float(options.get("min_cosine", 0.99)),
                mask_input=_mask_input(version),
                min_row_cosine=None if floor is None else float(floor),
                batched=signature.batch_dim is not None,
            )
        # from the signature, also for a rule saved before the field existed: a trimmed
        # answer is compared with an untrimmed one (first rollout after an upgrade)
        return replace(rule, token_outputs=token_outputs(signature, rule.mask_input)), kinds
    except (InvalidInput, TypeError, ValueError, KeyError, AttributeError):
        return AgreementRule(), kinds


def _mask_input(version: ModelVersion) -> str | None:
    """The mask input its registration names (``shipway.mask_input``), as its builds'
    gates read it; ``attention_mask`` when the tag is unusable (refused at registration)."""
    try:
        inputs = [i["name"] for i in version.signature.get("inputs", [])]
        return mask_input(version.tags or {}, inputs)
    except (InvalidInput, AttributeError, KeyError, TypeError):
        return MASK


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
                    **_shadow_rule(v.build) if v.shadow_share else {},
                    **_scalars(v.build),
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


def _shadow_rule(build: Build) -> dict[str, object]:
    rule, kinds = agreement(build)
    return {"agreement": rule, "output_kinds": kinds}


def _scalars(build: Build) -> dict[str, frozenset[str]]:
    # the variant's build: while a variant changes build, its old replicas are judged by
    # the new build's scalars too; a change of rank is a breaking signature change,
    # refused before traffic moves unless allow_signature_change
    return scalar_tensors(build.model_version.signature or {})


def scalar_tensors(signature: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The rank-0 inputs and outputs of a signature (as stored), as ``VariantRoute``
    fields: at the gateway they keep the shape ``[]`` that Triton cannot hold."""
    return {
        f"scalar_{side}": frozenset(
            t["name"] for t in signature.get(side, []) if list(t.get("shape", [None])) == []
        )
        for side in ("inputs", "outputs")
    }
