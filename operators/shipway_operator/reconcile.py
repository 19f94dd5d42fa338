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

import kopf

from shipway_operator import manifests, status
from shipway_operator.errors import kube_errors, to_kopf
from shipway_operator.kube import Kube
from shipway_operator.spec import API_VERSION, KIND, InvalidSpec, Spec, Variant, parse_spec

log = logging.getLogger(__name__)
RESYNC_IDLE_SECONDS = 10.0  # a resource changed more recently is left to its handlers


def _now() -> datetime:
    return datetime.now(UTC)


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    fetch_image: str,
    attempts: int,
    models_size_limit: int = manifests.DEFAULT_MAX_BYTES,
) -> None:
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
        ctx = manifests.Context(
            manifests.Owner.from_body(body), spec, fetch_image, models_size_limit
        )
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


def resync(
    kube: Kube,
    namespaces: list[str],
    fetch_image: str,
    attempts: int,
    models_size_limit: int = manifests.DEFAULT_MAX_BYTES,
) -> list[str]:
    """Reconcile every ModelDeployment in ``namespaces`` (empty: the whole cluster) that
    no one changed in the last ``RESYNC_IDLE_SECONDS`` (one that did is being handled by
    its own handlers). A resource that fails is logged and left to the next resync.
    Returns the ``namespace/name`` of those reconciled."""
    done: list[str] = []
    now = _now()
    with kube_errors(f"list {KIND} resources"):
        bodies = kube.list_all(API_VERSION, KIND, namespaces)
    for body in bodies:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        changed = last_change(body)
        if changed is not None and (now - changed).total_seconds() < RESYNC_IDLE_SECONDS:
            continue
        try:
            reconcile(kube, body, fetch_image, attempts, models_size_limit)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("resync of %s %s failed: %s", KIND, key, exc)
            continue
        done.append(key)
    return done


def last_change(body: dict[str, Any]) -> datetime | None:
    """When any field manager last changed the object (``managedFields[].time``, whole
    seconds), or None if it does not say."""
    times = [
        datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        for entry in body.get("metadata", {}).get("managedFields") or []
        if entry.get("time")
    ]
    return max(times, default=None)


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
