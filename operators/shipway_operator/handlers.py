"""kopf handlers: thin, each parses what kopf hands over and calls ``reconcile``.

The composition root is the startup handler: it reads ``OperatorSettings`` from the
environment, makes the one Kubernetes client, and keeps both in kopf's ``memo``, which
kopf passes to every handler. kopf's own bookkeeping lives in ``shipway.io/``
annotations, so the CRD's status stays the schema's (no ``status.kopf``). No finalizer:
everything the operator creates is owned by the resource and garbage-collected with it.

Run with ``python -m shipway_operator`` (or ``kopf run -m shipway_operator.handlers``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from shipway_operator import reconcile
from shipway_operator.kube import Kube, api_client, connection_info
from shipway_operator.manifests import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGER
from shipway_operator.settings import OperatorSettings
from shipway_operator.spec import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf connects with the same credentials as the operator's own client."""
    return connection_info()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Create, spec change, operator start: apply the whole desired state."""
    settings: OperatorSettings = memo.settings
    reconcile.reconcile(memo.kube, _plain(body), settings.fetch_image, settings.status_retries)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER})
def deployment_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A variant's Deployment moved (replicas became ready, a pod was lost): refresh
    the owner's status. Events are not retried by kopf; the next one will refresh."""
    owner = (body.get("metadata", {}).get("labels") or {}).get(LABEL_DEPLOYMENT)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner or not namespace:
        return
    settings: OperatorSettings = memo.settings
    try:
        reconcile.refresh(memo.kube, namespace, owner, settings.status_retries)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("status of %s %s/%s not refreshed: %s", KIND, namespace, owner, exc)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's live view as a plain dict (the builders are pure over dicts)."""
    return {
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
