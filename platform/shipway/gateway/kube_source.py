"""The in-cluster gateway's routes: a watch of one namespace's Kubernetes objects.

``KubernetesRouteSource`` keeps an in-memory copy of the namespace's ModelDeployments
(``shipway.io/v1alpha1``), the EndpointSlices of the operator's Services and the
operator's pods, each by list + watch (the ``kubernetes`` client's ``watch.Watch``) in a
daemon thread of its own: a list gives the full state and a resourceVersion, the watch
goes on from it (bookmarks keep that version fresh); a watch the server ends is resumed
from the last version seen, and an expired version (410 Gone) or any error leads to a new
list, after a capped exponential backoff for errors. Threads, not asyncio, because the
client is synchronous and the gateway's event loop must not wait on it.

``table()`` is what ``Gateway(settings, load_table)`` calls: cheap, the table is rebuilt
(``kube_routes.routing_table``, pure) only after a watched object changed in a way the
table depends on. Before every kind was listed once it raises ``RoutesNotSynced``, so the
gateway's readiness stays false until the first full sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from shipway.gateway.kube_routes import (
    endpoint_slice_fields,
    model_deployment_fields,
    pod_fields,
    routing_table,
)
from shipway.gateway.routing import RoutesUnavailable, RoutingTable
from shipway.kubernetes.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by=shipway-operator"  # the operator's objects
WATCH_SECONDS = 300  # the server ends each watch after this long; it is then resumed
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds between attempts after an error
STOP_SECONDS = 10.0  # how long stop() waits for the threads


class RoutesNotSynced(RoutesUnavailable):
    """The watched objects were not listed yet: no table to serve from (not ready)."""


@dataclass(frozen=True)
class _Kind:
    """One watched kind: how to list it (the namespace already bound) and what to keep."""

    name: str
    list_call: Callable[..., Any]
    args: tuple[Any, ...]
    label_selector: str | None
    fields: Callable[[dict[str, Any]], dict[str, Any]]


class KubernetesRouteSource:
    """Routes and endpoints of one namespace, kept current by watches.

    ``start()`` starts one daemon thread per kind; ``stop()`` ends them (interrupting a
    blocked watch read) and returns once they are gone. A stopped source may be started
    again: it lists everything anew. ``api_client`` is shared by the threads (its
    connection pool is thread-safe); ``request_timeout`` bounds each list, in seconds.

    EndpointSlices are selected by the operator's ``managed-by`` label, which the
    EndpointSlice controller copies from the Service onto its slices.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        request_timeout: float = 10.0,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.namespace = namespace
        self.request_timeout = request_timeout
        self.watch_seconds = watch_seconds
        custom = client.CustomObjectsApi(api_client)
        discovery = client.DiscoveryV1Api(api_client)
        core = client.CoreV1Api(api_client)
        self._kinds = (
            _Kind(
                "ModelDeployment",
                custom.list_namespaced_custom_object,
                (GROUP, VERSION, namespace, PLURAL),
                None,
                model_deployment_fields,
            ),
            _Kind(
                "EndpointSlice",
                discovery.list_namespaced_endpoint_slice,
                (namespace,),
                MANAGED_BY,
                endpoint_slice_fields,
            ),
            _Kind("Pod", core.list_namespaced_pod, (namespace,), MANAGED_BY, pod_fields),
        )
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {k.name: {} for k in self._kinds}
        self._listed: set[str] = set()
        self._dirty = True
        self._table = RoutingTable()
        self._synced = threading.Event()  # set once every kind was listed
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: dict[str, watch.Watch] = {}

    # ---- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start watching (a no-op while running)."""
        with self._lock:
            if self._threads:
                return
            self._stopping.clear()
            self._objects = {k.name: {} for k in self._kinds}
            self._listed.clear()
            self._synced.clear()
            self._dirty = True
            self._threads = [
                threading.Thread(
                    target=self._run,
                    args=(kind,),
                    name=f"shipway-routes-{kind.name.lower()}",
                    daemon=True,
                )
                for kind in self._kinds
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop watching; returns when every thread ended. The source is then no longer
        synced (``table()`` raises ``RoutesNotSynced``). Raises ``RuntimeError`` if a
        thread is still alive after ``timeout`` seconds (a read the interrupt missed)."""
        self._stopping.set()
        with self._lock:
            threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        for kind, thread in zip(self._kinds, threads, strict=False):
            while thread.is_alive() and time.monotonic() < deadline:
                self._interrupt(kind)  # again each time: a watch may start meanwhile
                thread.join(0.1)
        with self._lock:  # no longer kept current: not synced until started again
            self._listed.clear()
            self._synced.clear()
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"route watch threads still running after {timeout}s: {alive}")

    def _interrupt(self, kind: _Kind) -> None:
        stream = self._watches.get(kind.name)
        if stream is None:
            return
        stream.stop()  # the client shuts the socket down, unblocking the read
        response = getattr(stream, "_resp", None)  # older clients do not: do it here
        if response is not None and hasattr(response, "shutdown"):
            with contextlib.suppress(Exception):
                response.shutdown()

    @property
    def synced(self) -> bool:
        """Every kind was listed at least once since ``start()``."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first full sync; whether it happened."""
        return self._synced.wait(timeout)

    # ---- the table --------------------------------------------------------------

    def table(self) -> RoutingTable:
        """The current routes. Raises ``RoutesNotSynced`` before the first full sync."""
        with self._lock:
            if len(self._listed) < len(self._kinds):
                missing = sorted(k.name for k in self._kinds if k.name not in self._listed)
                raise RoutesNotSynced(
                    f"routes of namespace {self.namespace!r} not listed yet: {', '.join(missing)}"
                )
            if self._dirty:
                self._table = routing_table(
                    self._objects["ModelDeployment"].values(),
                    self._objects["EndpointSlice"].values(),
                    self._objects["Pod"].values(),
                )
                self._dirty = False
            return self._table

    # ---- list + watch, one thread per kind --------------------------------------

    def _run(self, kind: _Kind) -> None:
        version: str | None = None  # None: list first
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                if version is None:
                    version = self._list(kind)
                version = self._watch(kind, version)
                if self._stopping.is_set():
                    break
                if time.monotonic() - began >= 1.0:
                    backoff = BACKOFF_FIRST  # a watch that ran, and ended normally
                    continue
                failure = "the watch ended at once"  # e.g. a proxy closing it: no busy loop
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                version = None
                if exc.status == 410:  # the version expired: list again, at once
                    log.info("%s watch expired in %s; listing again", kind.name, self.namespace)
                    continue
                failure = f"{exc.status} {exc.reason}"
            except Exception as exc:  # transport errors, an unreadable answer
                if self._stopping.is_set():
                    break
                version = None
                failure = f"{type(exc).__name__}: {exc}"
            what = f"{kind.name} list/watch in {self.namespace}"
            log.warning("%s: %s; again in %.1fs", what, failure, backoff)
            self._stopping.wait(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _list(self, kind: _Kind) -> str:
        """List everything of ``kind``, replace the cache with it; its resourceVersion."""
        options: dict[str, Any] = {"_preload_content": False}
        if kind.label_selector:
            options["label_selector"] = kind.label_selector
        response = kind.list_call(*kind.args, _request_timeout=self.request_timeout, **options)
        try:
            listing = json.loads(response.data)
        finally:
            response.release_conn()
        objects = {}
        for item in listing.get("items") or []:
            kept = kind.fields(item)
            objects[kept["metadata"].get("name", "")] = kept
        with self._lock:
            if objects != self._objects[kind.name]:
                self._dirty = True
            self._objects[kind.name] = objects
            self._listed.add(kind.name)
            if len(self._listed) == len(self._kinds):
                self._synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, kind: _Kind, version: str) -> str:
        """Apply watch events from ``version`` on until the server ends the watch (or
        ``stop()``); the last resourceVersion seen."""
        stream = watch.Watch()
        self._watches[kind.name] = stream
        if self._stopping.is_set():
            return version
        options: dict[str, Any] = {
            "resource_version": version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self.watch_seconds,
            # a dead connection is noticed: the server ends the watch before this
            "_request_timeout": (self.request_timeout, self.watch_seconds + 30),
        }
        if kind.label_selector:
            options["label_selector"] = kind.label_selector
        try:
            for event in stream.stream(kind.list_call, *kind.args, **options):
                raw = event.get("raw_object") or {}
                metadata = raw.get("metadata") or {}
                version = str(metadata.get("resourceVersion") or version)
                if event.get("type") == "BOOKMARK":
                    continue
                self._apply(kind, str(event.get("type")), raw)
        finally:
            self._watches.pop(kind.name, None)
        return version

    def _apply(self, kind: _Kind, change: str, raw: dict[str, Any]) -> None:
        kept = kind.fields(raw)
        name = kept["metadata"].get("name", "")
        with self._lock:
            objects = self._objects[kind.name]
            if change == "DELETED":
                if objects.pop(name, None) is not None:
                    self._dirty = True
            elif objects.get(name) != kept:  # ADDED, MODIFIED
                objects[name] = kept
                self._dirty = True
