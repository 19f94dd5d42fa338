"""kopf handlers: thin, each parses what kopf hands over and calls ``reconcile``.

The composition root is the startup handler: it reads ``OperatorSettings`` from the
environment, makes the one Kubernetes client, and keeps both in kopf's ``memo``, which
kopf passes to every handler. kopf's own bookkeeping lives in ``shipway.io/``
annotations, so the CRD's status stays the schema's (no ``status.kopf``). No finalizer:
everything the operator creates is owned by the resource and garbage-collected with it.

Run with ``python -m shipway_operator`` (or ``kopf run -m shipway_operator.handlers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import kopf

from shipway.rollout.ports import MetricsProvider, Ports
from shipway_operator import prometheus, reconcile, rollouts, status
from shipway_operator.kube import Kube, api_client, connection_info, spec_drifted
from shipway_operator.manifests import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGER
from shipway_operator.rollout_ports import kubernetes_ports
from shipway_operator.settings import OperatorSettings
from shipway_operator.spec import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf connects with the same credentials as the operator's own client."""
    return connection_info()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # used only if one is ever needed
    # watches end server-side every 5 minutes and are re-opened, so a connection that died
    # silently (a load balancer's idle timeout) cannot leave the operator deaf
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    if "settings" not in memo:
        memo.settings = OperatorSettings()
    if "kube" not in memo:
        memo.kube = Kube(api_client())
    if "metrics" not in memo:
        memo.metrics = prometheus.from_settings(memo.settings)
    memo.rollouts = rollouts.RolloutScheduler(lambda ns, name: _rollout_pass(memo, ns, name))
    memo.resync_task = asyncio.create_task(_resync_forever(memo), name="shipway-resync")
    memo.rollout_task = asyncio.create_task(memo.rollouts.run_forever(), name="shipway-rollouts")


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    for key in ("resync_task", "rollout_task"):
        task: asyncio.Task[None] | None = memo.get(key)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    metrics = memo.get("metrics")
    if isinstance(metrics, prometheus.PrometheusMetrics):
        metrics.close()


def _applier(memo: kopf.Memo, namespace: str) -> Callable[[str], None]:
    settings: OperatorSettings = memo.settings

    def apply(name: str) -> None:
        reconcile.reconcile(
            memo.kube,
            {"metadata": {"namespace": namespace, "name": name}},
            settings.fetch_image,
            settings.status_retries,
            settings.models_size_limit,
        )

    return apply


def ports(memo: kopf.Memo, namespace: str) -> Ports:
    """The rollout controller's ports over ``namespace``'s resources."""
    settings: OperatorSettings = memo.settings
    apply = _applier(memo, namespace)
    metrics: MetricsProvider = memo.metrics
    label = settings.prometheus_namespace_label
    if isinstance(metrics, prometheus.PrometheusMetrics) and label:
        metrics = metrics.narrowed({label: namespace})
    return kubernetes_ports(memo.kube, namespace, metrics, apply, settings.status_retries)


def _rollout_pass(memo: kopf.Memo, namespace: str, name: str) -> float | None:
    settings: OperatorSettings = memo.settings
    loop = rollouts.LoopSettings(
        settings.rollout_start_timeout_seconds,
        settings.rollout_poll_seconds,
        settings.status_retries,
    )
    world = ports(memo, namespace)
    return rollouts.tick(memo.kube, namespace, name, world, loop, _applier(memo, namespace))


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Any change of a resource (the initial listing included): one with a running
    rollout is put on the rollout loop, which then runs it at the times its controller
    asks for (a resource already on it stays as it is)."""
    record = (body.get("status") or {}).get("rollout") or {}
    scheduler: rollouts.RolloutScheduler | None = memo.get("rollouts")
    if record and not record.get("finished") and scheduler is not None:
        scheduler.poke(body.metadata.namespace or "", body.metadata.name or "")


async def _resync_forever(memo: kopf.Memo) -> None:
    """Every ``resync_seconds``, apply the whole desired state of every resource again
    (``reconcile.resync``: those quiet for a while), so that what a missed event left
    changed (a watch that broke, a hand-edited Service) comes back; server-side apply
    makes an unchanged object one no-op request. One operator-wide task, not kopf's
    per-resource ``@kopf.timer``: kopf puts a finalizer on every resource that has a
    timer, and a resource must stay deletable while the operator is down."""
    settings: OperatorSettings = memo.settings
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.resync_seconds)
        try:
            await loop.run_in_executor(
                None,
                reconcile.resync,
                memo.kube,
                settings.namespaces,
                settings.fetch_image,
                settings.status_retries,
                settings.models_size_limit,
            )
        except Exception:  # listing failed (API down, no permission): next period retries
            log.exception("resync of %s resources failed", KIND)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Create, spec change, operator start: apply the whole desired state."""
    settings: OperatorSettings = memo.settings
    reconcile.reconcile(
        memo.kube,
        _plain(body),
        settings.fetch_image,
        settings.status_retries,
        settings.models_size_limit,
    )


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER})
def deployment_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A variant's Deployment moved. Deleted, or its spec changed by hand (another field
    manager owns part of it): reconcile the owner, which restores it. Otherwise
    (replicas became ready, a pod was lost): refresh the owner's status. Events are not
    retried by kopf; the next one, or the resync, will catch up."""
    if event.get("type") == "DELETED" or spec_drifted(body):
        _reconcile_owner(body, memo)
        return
    _refresh_owner(body, memo)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER})
def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A variant's pod is in trouble (unschedulable, an image that cannot be pulled...):
    refresh the owner's status, which says why (``status.pod_trouble``). A pod's trouble
    may come after its Deployment's last change, so the Deployment events cannot be
    relied on to report it."""
    if status.pod_trouble([dict(body)]) is None:
        return
    _refresh_owner(body, memo)


@kopf.on.event("", "v1", "services", labels={LABEL_MANAGED_BY: MANAGER})
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels={LABEL_MANAGED_BY: MANAGER})
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels={LABEL_MANAGED_BY: MANAGER})
def owned_object_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A variant's Service, HPA or PDB was deleted: reconcile the owner, which makes it
    again (a no-op when the operator pruned it itself). Other changes to them are put
    right by the resync."""
    if event.get("type") == "DELETED":
        _reconcile_owner(body, memo)


def _owner(body: kopf.Body) -> tuple[str | None, str | None]:
    meta = body.get("metadata", {})
    return (meta.get("labels") or {}).get(LABEL_DEPLOYMENT), meta.get("namespace")


def _refresh_owner(body: kopf.Body, memo: kopf.Memo) -> None:
    """Refresh the status of the ModelDeployment that owns ``body`` (no-op without one)."""
    owner, namespace = _owner(body)
    if not owner or not namespace:
        return
    settings: OperatorSettings = memo.settings
    try:
        reconcile.refresh(memo.kube, namespace, owner, settings.status_retries)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("status of %s %s/%s not refreshed: %s", KIND, namespace, owner, exc)


def _reconcile_owner(body: kopf.Body, memo: kopf.Memo) -> None:
    """Reconcile the ModelDeployment that owns ``body`` (a no-op once it is gone)."""
    owner, namespace = _owner(body)
    if not owner or not namespace:
        return
    settings: OperatorSettings = memo.settings
    try:
        reconcile.reconcile(
            memo.kube,
            {"metadata": {"namespace": namespace, "name": owner}},
            settings.fetch_image,
            settings.status_retries,
            settings.models_size_limit,
        )
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("%s %s/%s not reconciled: %s", KIND, namespace, owner, exc)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's live view as a plain dict (the builders are pure over dicts)."""
    return {
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
