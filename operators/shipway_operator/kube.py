"""The operator's one adapter to the Kubernetes API (the ``kubernetes`` client).

Objects are written with server-side apply under the field manager ``shipway-operator``
(forced: the operator owns the fields it sets), so applying the same manifest twice
changes nothing and a changed manifest patches the live object in place, never
recreating it. Status is written through the status subresource as a merge patch that
carries the resourceVersion it was computed from, so two writers never lose each
other's update (the loser gets 409 and recomputes). API failures surface as
``kubernetes`` ``ApiException``s; ``errors.kube_errors`` maps them for kopf.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from shipway_operator.manifests import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGED_KINDS,
    MANAGER,
    Manifest,
)
from shipway_operator.spec import API_VERSION, KIND

Key = tuple[str, str]  # (kind, name)
# the field manager that holds a Deployment's replicas between the operator and its HPA
HANDOVER = f"{MANAGER}-handover"


# who may change a Deployment's spec besides the operator: its own hand-over manager,
# and the HPA (the controller manager, through the scale subresource)
_SPEC_WRITERS = {(MANAGER, ""), (HANDOVER, ""), ("kube-controller-manager", "scale")}


def spec_drifted(live: dict[str, Any]) -> bool:
    """True when a field manager other than the operator's (and the HPA's scale) owns a
    field of ``spec``: someone changed it by hand (``kubectl edit``, ``scale``, a patch).
    From ``metadata.managedFields``, so it holds until the operator applies again (its
    forced apply takes the fields back), not only in the one event that changed it."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        writer = (entry.get("manager") or "", entry.get("subresource") or "")
        if writer in _SPEC_WRITERS or entry.get("subresource") == "status":
            continue
        if (entry.get("fieldsV1") or {}).get("f:spec"):
            return True
    return False


def owns_replicas(live: dict[str, Any], manager: str) -> bool:
    """True when ``manager``'s apply owns ``spec.replicas`` (``metadata.managedFields``)."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


def client_configuration() -> client.Configuration:
    """In a pod, the service account; elsewhere ``KUBECONFIG`` (or ~/.kube/config), read
    when called (the client's own default is fixed when it is imported)."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


def api_client() -> client.ApiClient:
    return client.ApiClient(client_configuration())


def connection_info() -> kopf.ConnectionInfo:
    """The same connection for kopf's own watches (one source of credentials)."""
    configuration = client_configuration()
    scheme, token = None, None
    # the Authorization header the client would send, e.g. "Bearer <token>"
    header = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if header:
        scheme, _, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class Kube:
    """Typed-by-convention access to the few resources the operator touches."""

    def __init__(self, api: client.ApiClient) -> None:
        self.dynamic = DynamicClient(api)
        self._resources: dict[Key, Resource] = {}
        self._kinds: dict[Key, bool] = {}
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()

    def lock(self, namespace: str, name: str) -> threading.RLock:
        """One lock per resource in this process: its reconciles (kopf's handlers, the
        resync, the rollout loop's) run one at a time, so none applies objects planned
        from a status another has since changed."""
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.RLock())

    def has_kind(self, api_version: str, kind: str) -> bool:
        """True when the API server serves ``kind`` (its CRD is installed); asked once
        per process (a CRD installed later is seen after a restart)."""
        key = (api_version, kind)
        if key not in self._kinds:
            try:
                self.resource(api_version, kind)
                self._kinds[key] = True
            except ResourceNotFoundError:
                self._kinds[key] = False
        return self._kinds[key]

    def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def apply(self, manifest: Manifest, *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply; returns the live object. A Deployment applied without
        ``replicas`` (its HPA's now) whose live count the operator owns is handed over
        first (``hand_over_replicas``), so the count stays as it is. ``dry_run``: the API
        server validates and admits the object but stores nothing (``dryRun=All``), so a
        refusal (400/422) is known before anything is changed."""
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        if (
            not dry_run
            and manifest["kind"] == "Deployment"
            and "replicas" not in manifest.get("spec", {})
        ):
            self.hand_over_replicas(manifest)
        live = resource.server_side_apply(
            body=manifest,
            namespace=manifest["metadata"]["namespace"],
            field_manager=MANAGER,
            force_conflicts=True,
            **extra,
        )
        return live.to_dict()

    def foreign(self, manifest: Manifest, owner_uid: str) -> bool:
        """True when an object of ``manifest``'s kind and name exists that the owner
        (uid ``owner_uid``) does not control (no controller ownerReference with that
        uid): someone else's, which a forced apply would take over and garbage
        collection would later delete with the owner."""
        meta = manifest["metadata"]
        live = self.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        if live is None:
            return False
        refs = live.get("metadata", {}).get("ownerReferences") or []
        return not any(r.get("uid") == owner_uid and r.get("controller") for r in refs)

    def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on the ModelDeployment ``body`` (``kind``: Normal or
        Warning), as ``kubectl describe`` shows; from any thread (kopf's ``kopf.event``
        needs a handler's context, which the resync has not)."""
        meta = body["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.resource("v1", "Event").create(
            namespace=meta["namespace"],
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "type": kind,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": MANAGER},
                "reportingComponent": MANAGER,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    def hand_over_replicas(self, manifest: Manifest) -> None:
        """Give up ``spec.replicas`` of a live Deployment without changing it.

        Were the operator's apply simply to leave the field out while the operator owns
        it, server-side apply would remove it and the API server default it to 1 until
        the HPA scales back up. So, as the Kubernetes docs' "Transferring ownership"
        (server-side apply) does it, the live count is first applied under a second field
        manager (``HANDOVER``), which then keeps the field when the operator's apply
        drops it; the HPA's later scale updates take it from there. Conditioned on the
        resourceVersion read (409 if the count moved meanwhile: the reconcile is retried).
        """
        meta = manifest["metadata"]
        live = self.get(manifest["apiVersion"], "Deployment", meta["namespace"], meta["name"])
        if live is None or not owns_replicas(live, MANAGER):
            return
        resource = self.resource(manifest["apiVersion"], "Deployment")
        resource.server_side_apply(
            body={
                "apiVersion": manifest["apiVersion"],
                "kind": "Deployment",
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "resourceVersion": live["metadata"]["resourceVersion"],
                },
                "spec": {"replicas": live["spec"]["replicas"]},
            },
            namespace=meta["namespace"],
            field_manager=HANDOVER,
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods in ``namespace`` matching the label ``selector`` (a variant's)."""
        listing = self.resource("v1", "Pod").get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in listing.items]

    def list_all(self, api_version: str, kind: str, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every object of the kind in ``namespaces`` (empty: all namespaces)."""
        resource = self.resource(api_version, kind)
        listings = [resource.get(namespace=ns) for ns in namespaces] or [resource.get()]
        return [item.to_dict() for listing in listings for item in listing.items]

    def prune(self, namespace: str, owner: str, owner_uid: str, keep: set[Key]) -> list[Key]:
        """Delete the owner's objects (by label and owner uid) not in ``keep``: a variant
        that ended, an HPA no longer asked for. Returns what was deleted."""
        deleted: list[Key] = []
        selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_MANAGED_BY}={MANAGER}"
        for api_version, kind in MANAGED_KINDS:
            resource = self.resource(api_version, kind)
            for item in resource.get(namespace=namespace, label_selector=selector).items:
                meta = item.metadata
                owned = any(ref.uid == owner_uid for ref in meta.ownerReferences or [])
                if not owned or (kind, meta.name) in keep:
                    continue
                try:
                    resource.delete(
                        name=meta.name,
                        namespace=namespace,
                        body={"propagationPolicy": "Background"},
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                deleted.append((kind, meta.name))
        return deleted

    def update_status(
        self,
        namespace: str,
        name: str,
        compute: Callable[[dict[str, Any]], dict[str, Any] | None],
        attempts: int,
    ) -> dict[str, Any] | None:
        """Read the ModelDeployment, ``compute`` its new status (None: leave it), write it
        if it changed, conditioned on the version read; on 409 read again, up to
        ``attempts`` times (then the 409 propagates). Returns the status written.

        ``compute`` is called again on every attempt with the body just read, so it must
        decide from that body alone (never from one read before): the writer it lost to
        may have changed what it decided from. Top-level keys it leaves out are left as
        they are; a key set to None is removed; a key it sets is *replaced* whole
        (``status_patch``: a merge patch alone would keep the old value's keys that the
        new one lacks, e.g. a previous rollout's engine state under a new candidate's
        record)."""
        resource = self.resource(API_VERSION, KIND)
        for attempt in range(attempts):
            body = self.get(API_VERSION, KIND, namespace, name)
            if body is None:
                return None  # deleted meanwhile: nothing to report on
            status = compute(body)
            if status is None or _unchanged(body.get("status") or {}, status):
                return status
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": status_patch(body.get("status") or {}, status),
            }
            try:
                resource.status.patch(
                    body=patch,
                    name=name,
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                    field_manager=MANAGER,
                )
                return status
            except ApiException as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
        return None


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that makes each key of ``new`` replace the one in
    ``old`` whole: keys of an old object that the new object lacks are set to None
    (removed), recursively. Top-level keys ``new`` leaves out stay untouched."""
    return {key: _replacing(old.get(key), value) for key, value in new.items()}


def _replacing(old: Any, new: Any) -> Any:
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    patch = {key: _replacing(old.get(key), value) for key, value in new.items()}
    patch.update({key: None for key in old if key not in new})
    return patch


def _unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when writing ``new`` as a merge patch would not change ``old``."""
    return all(old.get(k) == v for k, v in new.items() if v is not None) and all(
        k not in old for k, v in new.items() if v is None
    )
