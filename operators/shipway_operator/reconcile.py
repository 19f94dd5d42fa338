"""Reconciling one ModelDeployment: decide (pure), build (pure), apply, report.

Idempotent: every run applies the whole desired state with server-side apply and prunes
what the resource no longer asks for, so a retry, a resumed operator or a duplicate event
converges on the same objects, never on copies. Nothing is applied unless every object
could be built (a bad spec leaves what runs untouched and says why in status).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from shipway_operator import manifests, status
from shipway_operator.errors import kube_errors, to_kopf
from shipway_operator.kube import Kube
from shipway_operator.spec import API_VERSION, KIND, InvalidSpec, Spec, Variant, parse_spec

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def reconcile(kube: Kube, body: dict[str, Any], fetch_image: str, attempts: int) -> None:
    """Bring the cluster to ``body``'s spec. Raises kopf's Temporary/PermanentError.

    Decides from the resource as it is now, not from kopf's snapshot: two handlers of
    one event (resume and update after a restart) must see the first one's record."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with kube_errors(f"read {KIND} {namespace}/{name}"):
        fresh = kube.get(API_VERSION, KIND, namespace, name)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        return  # deleted (meanwhile): garbage collection removes what it owned
    body, meta = fresh, fresh["metadata"]
    generation = meta.get("generation", 0)
    now = _now()
    try:
        spec = parse_spec(body.get("spec") or {})
        decided = status.plan(spec, body.get("status") or {}, now)
        ctx = manifests.Context(manifests.Owner.from_body(body), spec, fetch_image)
        objects = manifests.variant_objects(
            ctx, Variant.STABLE, decided.stable, decided.weights["stable"]
        )
        if decided.candidate is not None:
            objects += manifests.variant_objects(
                ctx, Variant.CANDIDATE, decided.candidate, decided.weights["candidate"]
            )
    except InvalidSpec as exc:
        message = str(exc)
        with kube_errors(f"write status of {KIND} {namespace}/{name}"):
            kube.update_status(
                namespace,
                name,
                lambda fresh: (
                    None
                    if _reported_newer(fresh, generation)
                    else status.invalid(fresh.get("status") or {}, generation, message, now)
                ),
                attempts,
            )
        raise to_kopf(exc, f"reconcile {KIND} {namespace}/{name}") from exc
    for manifest in objects:
        what = f"apply {manifest['kind']} {namespace}/{manifest['metadata']['name']}"
        with kube_errors(what):
            kube.apply(manifest)
    keep = {(m["kind"], m["metadata"]["name"]) for m in objects}
    with kube_errors(f"prune objects of {KIND} {namespace}/{name}"):
        for kind, gone in kube.prune(namespace, name, meta["uid"], keep):
            log.info("deleted %s %s/%s: no longer desired", kind, namespace, gone)
    # the status names the generation applied here, even if the spec moved on meanwhile:
    # that newer generation has its own reconcile (kopf queues it), which reports it
    with kube_errors(f"write status of {KIND} {namespace}/{name}"):
        kube.update_status(
            namespace, name, lambda fresh: _derive(kube, fresh, spec, generation, now), attempts
        )
    # Deployment events that came before that write were skipped (status still named the
    # previous generation): look once more, now that status names this one
    refresh(kube, namespace, name, attempts)


def refresh(kube: Kube, namespace: str, name: str, attempts: int) -> None:
    """Re-derive status from the live Deployments (one of them changed). Leaves status
    alone while a reconcile of a newer generation is due: that reconcile writes it."""

    def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
        previous = fresh.get("status") or {}
        generation = fresh["metadata"].get("generation", 0)
        if previous.get("observedGeneration") != generation or previous.get("phase") == "Failed":
            return None
        try:
            spec = parse_spec(fresh.get("spec") or {})
        except InvalidSpec:
            return None
        now = _now()
        return _derive(kube, fresh, spec, generation, now)

    with kube_errors(f"refresh status of {KIND} {namespace}/{name}"):
        kube.update_status(namespace, name, compute, attempts)


def _reported_newer(fresh: dict[str, Any], generation: int) -> bool:
    """True when status already describes a later generation than ``generation``: a
    reconcile of that generation wrote it, and an older one must not take it back."""
    return ((fresh.get("status") or {}).get("observedGeneration") or 0) > generation


def _derive(
    kube: Kube,
    fresh: dict[str, Any],
    spec: Spec,
    generation: int,
    now: datetime,
) -> dict[str, Any] | None:
    """Status of ``generation`` (the one whose ``spec`` was applied), never the one in
    ``fresh``: a spec edited since then has not been applied yet; None (leave status)
    when status already describes a later generation. The plan is made again from
    ``fresh``'s status (each attempt of a write that lost a race has its own), so what
    the rollout controller wrote since the reconcile began is kept."""
    if _reported_newer(fresh, generation):
        return None
    meta = fresh["metadata"]
    decided = status.plan(spec, fresh.get("status") or {}, now)
    namespace, name = meta["namespace"], meta["name"]

    def live(variant: Variant) -> dict[str, Any] | None:
        return kube.get("apps/v1", "Deployment", namespace, manifests.object_name(name, variant))

    return status.derive(
        name=name,
        generation=generation,
        spec=spec,
        plan=decided,
        stable=live(Variant.STABLE),
        candidate=live(Variant.CANDIDATE) if decided.candidate else None,
        previous=fresh.get("status") or {},
        now=now,
    )
