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
from kubernetes.client.exceptions import ApiException

from shipway_operator import httproute, manifests, status
from shipway_operator.errors import api_message, kube_errors, to_kopf
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
    one event (resume and update after a restart) must see the first one's record; and
    one reconcile of a resource at a time in this process (``Kube.lock``)."""
    meta = body["metadata"]
    with kube.lock(meta["namespace"], meta["name"]):
        _reconcile(kube, body, fetch_image, attempts, models_size_limit)


def _reconcile(
    kube: Kube,
    body: dict[str, Any],
    fetch_image: str,
    attempts: int,
    models_size_limit: int,
) -> None:
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
        decided = status.plan(spec, body.get("status") or {}, now, _replicas(kube, namespace, name))
        ctx = manifests.Context(
            manifests.Owner.from_body(body),
            spec,
            fetch_image,
            models_size_limit,
            (meta.get("annotations") or {}).get(manifests.ANNOTATION_TRITON_MODEL),
        )
        shares = decided.shares()
        objects = manifests.variant_objects(
            ctx, Variant.STABLE, decided.stable, shares["stable"], decided.baseline
        )
        if decided.candidate is not None:
            objects += manifests.variant_objects(
                ctx, Variant.CANDIDATE, decided.candidate, shares["candidate"], decided.baseline
            )
    except InvalidSpec as exc:
        _not_applied(kube, fresh, generation, status.INVALID_SPEC, str(exc), now, attempts)
        raise to_kopf(exc, f"reconcile {KIND} {namespace}/{name}") from exc
    problems = httproute.unsupported(spec)  # empty unless the Gateway API routes it
    if problems:
        message = "; ".join(problems)
        _not_applied(kube, fresh, generation, status.ROUTING_UNSUPPORTED, message, now, attempts)
        raise kopf.PermanentError(f"{KIND} {namespace}/{name} not applied: {message}")
    refusal = _preflight(kube, objects, meta["uid"])
    if refusal is not None:
        reason, message = refusal
        _not_applied(kube, fresh, generation, reason, message, now, attempts)
        raise kopf.PermanentError(f"{KIND} {namespace}/{name} not applied: {message}")
    for manifest in objects:
        what = f"apply {manifest['kind']} {namespace}/{manifest['metadata']['name']}"
        with kube_errors(what):
            kube.apply(manifest)
    routed = spec.routing.provider == "gateway-api"
    if routed and (decided.candidate is None or decided.writes_rollout):
        # before any candidate object is pruned: without a candidate, or with a new one,
        # the route sends nothing to a candidate (its last values were another rollout's)
        _route(kube, fresh, generation, now, attempts, fresh_start=True)
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
    if routed:  # after the status names the builds: the route rewrites to their models
        _route(kube, fresh, generation, now, attempts, fresh_start=False)
    else:  # routed by the Shipway gateway: a route of ours from before must not stay
        _drop_route(kube, namespace, name)
    # Deployment events that came before that write were skipped (status still named the
    # previous generation): look once more, now that status names this one
    refresh(kube, namespace, name, attempts)


def _route(
    kube: Kube,
    body: dict[str, Any],
    generation: int,
    now: datetime,
    attempts: int,
    fresh_start: bool,
) -> None:
    """Apply the resource's HTTPRoute again with its last values (it is made at stable
    100 % on first sight; a promotion changes the Triton model name it rewrites to);
    ``fresh_start``: with stable at 100 %, no mirror, no cohorts for a candidate."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    router = httproute.GatewayAPIRouter(kube, namespace)
    try:
        with kube_errors(f"apply HTTPRoute {namespace}/{name}"):
            if fresh_start:
                router.forget(name, "candidate")
            else:
                router.refresh(name)
    except (httproute.Unexpressible, httproute.RouteNotOwned) as exc:
        reason = (
            status.NAME_CONFLICT
            if isinstance(exc, httproute.RouteNotOwned)
            else status.ROUTING_UNSUPPORTED
        )
        _not_applied(kube, body, generation, reason, str(exc), now, attempts)
        raise kopf.PermanentError(f"{KIND} {namespace}/{name}: {exc}") from exc


def _drop_route(kube: Kube, namespace: str, name: str) -> None:
    """Delete the HTTPRoute this resource controls, if any (its routing moved back to the
    Shipway gateway). A cluster without the Gateway API, or an operator without the
    right to read HTTPRoutes, has none of ours: nothing to do."""
    if not kube.has_kind(httproute.GATEWAY_API_VERSION, httproute.ROUTE_KIND):
        return
    try:
        if httproute.GatewayAPIRouter(kube, namespace).delete(name):
            log.info(
                "deleted HTTPRoute %s/%s: routing moved to the Shipway gateway", namespace, name
            )
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise to_kopf(exc, f"delete HTTPRoute {namespace}/{name}") from exc


def _replicas(kube: Kube, namespace: str, name: str) -> int | None:
    """The stable Deployment's current replicas (its HPA's count), None without one."""
    with kube_errors(f"read Deployment {namespace}/{name}-stable"):
        live = kube.get(
            "apps/v1", "Deployment", namespace, manifests.object_name(name, Variant.STABLE)
        )
    if live is None:
        return None
    return (live.get("spec") or {}).get("replicas") or None


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
        if status.blocked(previous, generation):
            return None  # this generation was not applied: its report stands
        try:
            spec = parse_spec(fresh.get("spec") or {})
        except InvalidSpec:
            return None
        now = _now()
        return _derive(kube, fresh, spec, generation, now)

    with kube_errors(f"refresh status of {KIND} {namespace}/{name}"):
        kube.update_status(namespace, name, compute, attempts)


def _preflight(
    kube: Kube, objects: list[manifests.Manifest], owner_uid: str
) -> tuple[str, str] | None:
    """Why the objects must not be applied, as (Degraded reason, message), or None.

    Nothing is applied unless every object can be: an object of the same kind and name
    that this resource does not control is someone else's (``NameConflict``; a forced
    apply would take it over), and an object the API server refuses in a dry run
    (HTTP 400/422, e.g. requests above limits) is ``ObjectRefused`` with the server's
    message. Other failures (permissions, connection) raise kopf's errors as usual."""
    for manifest in objects:
        meta = manifest["metadata"]
        with kube_errors(f"read {manifest['kind']} {meta['namespace']}/{meta['name']}"):
            if kube.foreign(manifest, owner_uid):
                return status.NAME_CONFLICT, (
                    f"{manifest['kind']} {meta['name']} already exists and is not controlled "
                    f"by this {KIND}: rename or delete it (left untouched)"
                )
    for manifest in objects:
        meta = manifest["metadata"]
        what = f"apply {manifest['kind']} {meta['namespace']}/{meta['name']}"
        try:
            with kube_errors(what):
                kube.apply(manifest, dry_run=True)
        except kopf.PermanentError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiException) and cause.status in (400, 422):
                return status.OBJECT_REFUSED, (
                    f"the API server refused {manifest['kind']} {meta['name']}: "
                    f"{api_message(cause)}"
                )
            raise
    return None


def _not_applied(
    kube: Kube,
    body: dict[str, Any],
    generation: int,
    reason: str,
    message: str,
    now: datetime,
    attempts: int,
) -> None:
    """Report that ``generation`` was not applied, in status and, the first time, as a
    Warning Event on the resource (``kubectl describe`` shows both)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    news: list[bool] = []

    def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
        news.clear()
        if _reported_newer(fresh, generation):
            return None
        previous = fresh.get("status") or {}
        phase = "Failed" if reason == status.INVALID_SPEC else None
        new = status.not_applied(previous, generation, reason, message, now, phase)
        news.append(not _same_degraded(previous, new))
        return new

    with kube_errors(f"write status of {KIND} {namespace}/{name}"):
        kube.update_status(namespace, name, compute, attempts)
    if news and news[0]:
        try:
            kube.event(body, "Warning", reason, message)
        except ApiException as exc:  # an Event is a courtesy: status already says it
            log.warning("event on %s %s/%s not posted: %s", KIND, namespace, name, exc)


def _same_degraded(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when ``new``'s Degraded condition says what ``old``'s already did."""

    def key(s: dict[str, Any]) -> tuple[Any, ...] | None:
        c = next((c for c in s.get("conditions") or [] if c.get("type") == status.DEGRADED), None)
        if c is None:
            return None
        return (c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))

    return key(old) == key(new)


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
    namespace, name = meta["namespace"], meta["name"]
    decided = status.plan(spec, fresh.get("status") or {}, now, _replicas(kube, namespace, name))

    def live(variant: Variant) -> dict[str, Any] | None:
        return kube.get("apps/v1", "Deployment", namespace, manifests.object_name(name, variant))

    def pods(variant: Variant) -> list[dict[str, Any]]:
        return kube.pods(namespace, manifests.selector_string(name, variant))

    return status.derive(
        name=name,
        generation=generation,
        spec=spec,
        plan=decided,
        stable=live(Variant.STABLE),
        candidate=live(Variant.CANDIDATE) if decided.candidate else None,
        previous=fresh.get("status") or {},
        now=now,
        stable_pods=pods(Variant.STABLE),
        candidate_pods=pods(Variant.CANDIDATE) if decided.candidate else None,
    )
