"""The control plane's adapter to the Kubernetes API server: ModelDeployments and the
pods the operator runs for them, through the ``kubernetes`` Python client.

Writes are server-side apply under the field manager ``shipway-api`` (forced: the API
owns the fields it sets; what others set, e.g. ``kubectl scale``, stays theirs until
the API sets it again). Every API failure leaves this module as one of Shipway's errors,
mapped in one table (:func:`shipway_error`): the caller's mistakes as 4xx with the API
server's own message, an unreachable or refusing API server as ``Unavailable`` (503).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError as TransportError

from shipway.errors import Conflict, InvalidInput, NotFound, ShipwayError, Unavailable
from shipway.kubernetes.resource import (
    FIELD_MANAGER,
    GROUP,
    LABEL_BUILD,
    LABEL_DEPLOYMENT,
    LABEL_VARIANT,
    PLURAL,
    VERSION,
    Pod,
)
from shipway.settings import Settings

T = TypeVar("T")


def api_client(settings: Settings) -> client.ApiClient:
    """A client of the configured API server: ``SHIPWAY_KUBECONFIG`` when set, else the
    pod's service account inside a cluster, else ``KUBECONFIG`` / ``~/.kube/config``.
    A configuration that cannot be loaded is ``Unavailable``, naming where it looked."""
    configuration = client.Configuration()
    # KUBECONFIG read now: the client's own default is fixed when it is first imported
    path = settings.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    try:
        if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=str(path) if path else None,
                context=settings.kubernetes_context,
                client_configuration=configuration,
            )
    except (ConfigException, OSError) as exc:
        where = settings.kubeconfig or "the service account, KUBECONFIG or ~/.kube/config"
        raise Unavailable(f"no Kubernetes API server configured ({where}): {exc}") from None
    configuration.retries = 1  # a down API server answers 503 in seconds, not minutes
    return client.ApiClient(configuration)


def shipway_error(exc: ApiException, what: str) -> ShipwayError:
    """One API failure as Shipway's error; ``what`` names the object (``deployment 'x'``)."""
    message = _server_message(exc)
    status = exc.status or 0
    if status == 404:
        return NotFound(f"{what} does not exist: {message}")
    if status == 409:
        return Conflict(f"{what}: {message}")
    if status in (400, 422):
        return InvalidInput(f"the Kubernetes API server refused {what}: {message}")
    if status in (401, 403):
        return Unavailable(f"the Kubernetes API server refused Shipway's credentials: {message}")
    return Unavailable(f"the Kubernetes API server failed ({status}) on {what}: {message}")


def _server_message(exc: ApiException) -> str:
    """The Status object's message (the API server's own sentence), else the reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or "no message")


class ModelDeployments:
    """ModelDeployments of one namespace, and the pods labelled as theirs."""

    def __init__(self, api: client.ApiClient, namespace: str, timeout: float = 10.0) -> None:
        self.api = api
        self.namespace = namespace
        self.timeout = timeout
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, its failures as Shipway's errors (``what`` names the object)."""
        try:
            return call()
        except ApiException as exc:
            raise shipway_error(exc, what) from None
        except TransportError as exc:
            raise Unavailable(
                f"the Kubernetes API server at {self.host} is not reachable: {exc}"
            ) from None

    def apply(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of a whole ModelDeployment; the live object back. With
        ``dry_run`` the API server validates and admits it (CRD schema, CEL rules, the
        name) and stores nothing: the object it would have stored comes back."""
        name = body["metadata"]["name"]
        # the client does not deserialize an apply answer (it returns None): read it raw
        response = self._call(
            f"ModelDeployment {name!r}",
            lambda: self._apply_raw(name, body, dry_run),
        )
        return json.loads(response.data)

    def _apply_raw(self, name: str, body: dict[str, Any], dry_run: bool = False) -> Any:
        """The apply request; a 404 here means no place for the object (the namespace
        or the CRD is missing): a configuration problem, so ``Unavailable``."""
        try:
            return self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                **({"dry_run": "All"} if dry_run else {}),
                _content_type="application/apply-patch+yaml",
                _request_timeout=self.timeout,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            raise Unavailable(
                f"the Kubernetes API server at {self.host} has nowhere to put ModelDeployment "
                f"{name!r} (is the namespace {self.namespace!r} there and the "
                f"modeldeployments.shipway.io CRD installed?): {_server_message(exc)}"
            ) from None

    def get(self, name: str) -> dict[str, Any]:
        """The live object; ``NotFound`` when there is none."""
        return self._call(
            f"deployment {name!r} (namespace {self.namespace})",
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self.timeout
            ),
        )

    def find(self, name: str) -> dict[str, Any] | None:
        """The live object, or None when there is none."""
        try:
            return self.get(name)
        except NotFound:
            return None

    def list(self) -> list[dict[str, Any]]:
        listing = self._call(
            f"ModelDeployments of namespace {self.namespace}",
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=self.timeout
            ),
        )
        return sorted(listing.get("items", []), key=lambda item: item["metadata"]["name"])

    def delete(self, name: str) -> None:
        """Delete it; the garbage collector removes what the operator made for it."""
        self._call(
            f"deployment {name!r} (namespace {self.namespace})",
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                propagation_policy="Background",
                _request_timeout=self.timeout,
            ),
        )

    def pods(self, name: str | None = None) -> dict[str, list[Pod]]:
        """The Triton pods of one deployment (or of all), by deployment name."""
        selector = f"{LABEL_DEPLOYMENT}={name}" if name else LABEL_DEPLOYMENT
        listing = self._call(
            f"pods of namespace {self.namespace}",
            lambda: self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=self.timeout
            ),
        )
        found: dict[str, list[Pod]] = {}
        for pod in listing.items:
            labels = pod.metadata.labels or {}
            conditions = (pod.status.conditions if pod.status else None) or []
            found.setdefault(labels[LABEL_DEPLOYMENT], []).append(
                Pod(
                    variant=labels.get(LABEL_VARIANT, ""),
                    build_id=labels.get(LABEL_BUILD, ""),
                    ip=pod.status.pod_ip if pod.status else None,
                    ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
                    deleting=pod.metadata.deletion_timestamp is not None,
                )
            )
        return found
