"""The gateway: a plain ASGI app forwarding KServe v2 requests to Triton replicas.

It is on every request's path, so it is written against ASGI directly (no framework
routing) with one pooled aiohttp client. Request bodies pass through untouched once
their JSON part is checked (``protocol.check_request``), so Triton's binary tensor
extension works as it does against Triton; answers are renamed to the deployment
(only their first bytes change).

Per request: pick the variant (weights, or a sticky hash of the request key; only
variants serving the version when the path names one), pick a replica in it (power
of two choices on outstanding requests, skipping ejected and unhealthy replicas),
forward, retry once on another replica after a connection failure (never after an
answer, whatever its code). Every answer to an inference request of a known
deployment is counted once, by class, and timed. After the answer is sent: keep a
sample for drift checks, and mirror to shadow variants.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shipway.gateway import metrics as answers
from shipway.gateway.balancer import Balancer, EjectionPolicy
from shipway.gateway.kserve_codec import decode
from shipway.gateway.metrics import GatewayMetrics
from shipway.gateway.protocol import (
    Endpoint,
    Kind,
    MalformedRequest,
    check_request,
    endpoint,
    rename_answer,
    reshape_tensors,
    server_metadata,
)
from shipway.gateway.routing import (
    DeploymentRoute,
    ReplicaRoute,
    RoutesUnavailable,
    RoutingTable,
    VariantRoute,
)
from shipway.gateway.samples import Sample, SampleBuffer
from shipway.gateway.shadow import answer_rows, shadow_rows
from shipway.settings import Settings

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HEADER_LENGTH = "inference-header-content-length"
FORWARDED = (b"content-type", HEADER_LENGTH.encode(), b"content-encoding")
KEY_COOKIE = "shipway-key"
MAX_SHADOWS_IN_FLIGHT = 32
MISS_REFRESH_SECONDS = 0.25  # at most this often, a request for an unknown route reloads
UNKNOWN = "(unknown)"  # the metric label of names that are no deployment: bounded labels


@dataclass(frozen=True)
class Reply:
    """One answer to an inference request, and its class for the responses counter."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    answer_class: str  # one of metrics.RESPONSE_CLASSES


class NotServed(LookupError):
    """A request pinned to a version that no serving variant serves (404)."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


class Gateway:
    def __init__(
        self,
        settings: Settings,
        load_table: Callable[[], RoutingTable],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.load_table = load_table
        self.rng = rng or random.Random()
        self.table = RoutingTable()
        self.balancer = Balancer(
            EjectionPolicy(settings.ejection_failures, settings.ejection_seconds), self.rng
        )
        self.samples = SampleBuffer(
            rate=settings.sample_rate, bytes_per_variant=settings.sample_buffer_bytes, rng=self.rng
        )
        self.metrics = GatewayMetrics()
        self.session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._shadows_in_flight = 0
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = -1e9
        self._loaded = False  # the routes were read at least once: the server is ready

    # ---- ASGI entry -------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        answered = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = True
            await send(message)

        try:
            await self._http(scope, receive, tracked)
        except ClientGone:
            return
        except Exception:  # a bug of ours: still an answer in the protocol's error shape
            log.exception("%s %s failed", scope["method"], scope["path"])
            if not answered:
                await _error(send, 500, "internal gateway error")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/metrics" or path.startswith("/admin/"):
            if method != "GET":
                await _not_allowed(send, method, path, "GET")
            elif path == "/metrics":
                body = generate_latest(self.metrics.registry)
                await _respond(send, 200, body, CONTENT_TYPE_LATEST)
            else:
                await self._admin(scope, send, path)
            return
        target = endpoint(path)
        if target is None:
            await _error(send, 404, f"no route for {method} {path}")
        elif method != target.method:
            await _not_allowed(send, method, path, target.method)
        elif target.kind is Kind.INFER:
            await self._infer(scope, receive, send, target)
        elif target.kind in (Kind.MODEL_METADATA, Kind.MODEL_READY):
            await self._model(send, target)
        elif target.kind is Kind.SERVER_METADATA:
            await _respond(send, 200, server_metadata(), "application/json")
        elif target.kind is Kind.LIVE or self._loaded:  # ready once the routes were read
            await _respond(send, 200, b"")
        else:
            await _error(send, 503, "the routes have not been read yet")

    # ---- inference --------------------------------------------------------------

    async def _route(self, name: str) -> DeploymentRoute | None:
        """The route, re-read first when it is missing or not serving: it may have
        just become ready. Concurrent misses share one read (single flight), and names
        that are no deployment at all cause at most one read per MISS_REFRESH_SECONDS,
        so a flood of requests for a missing name is not a flood of store reads."""
        route = self.table.get(name)
        if route is not None and route.serving():
            return route
        asked = time.monotonic()
        if route is None and asked - self._refreshed_at < MISS_REFRESH_SECONDS:
            return None
        try:
            await self.refresh(fresher_than=asked)
        except Exception as exc:  # the store is away: answer from the table we have
            log.warning("routes refresh failed: %s", exc)
        return self.table.get(name)

    @staticmethod
    def _candidates(route: DeploymentRoute, version: str | None) -> DeploymentRoute:
        """The route a request sees: all of it, or only its replicas of ``version``."""
        if version is None or not route.serving():
            return route  # nothing serves at all: that is a 503, pinned or not
        served = route.versions()
        if version.isdigit() and int(version) in served:
            return route.pinned(int(version))
        serving = ", ".join(map(str, served)) or "none known"
        raise NotServed(
            f"deployment {route.name!r} does not serve version {version!r}; "
            f"versions serving: {serving}"
        )

    async def _infer(self, scope: Scope, receive: Receive, send: Send, target: Endpoint) -> None:
        body = await _read_body(receive)
        started = time.perf_counter()
        name = target.model
        assert name is not None
        route = await self._route(name)
        if route is None and not self._loaded:  # it may exist: nobody knows yet
            await _error(send, 503, "the gateway has not read its routes yet; retry")
            return
        if route is None:  # not counted as an answer: no deployment, no series of its own
            self.metrics.no_route.labels(UNKNOWN).inc()
            await _error(send, 404, f"deployment {name!r} does not exist")
            return
        variant: VariantRoute | None = None
        forward: dict[str, str] = {}
        header_length: int | None = None
        try:
            forward, custom, header_length = self._request_headers(scope)
            candidates = self._candidates(route, target.version)  # 404 before 400
            if "content-encoding" not in forward:  # compressed: Triton inflates and checks
                check_request(body, header_length)
        except MalformedRequest as exc:
            reply = _error_reply(400, str(exc), answers.CLIENT_ERROR)
        except NotServed as exc:
            reply = _error_reply(404, str(exc), answers.CLIENT_ERROR)
        else:
            key = None
            if route.sticky:
                key = custom.get(route.sticky_header.lower()) or _cookie(scope, KEY_COOKIE)
            variant = candidates.choose(key, self.rng.random())
            if variant is None:
                self.metrics.no_route.labels(name).inc()
                reply = _error_reply(
                    503, f"deployment {name!r} has no ready replica", answers.NO_READY_REPLICA
                )
            else:
                try:
                    reply = await self._forward(name, variant, body, forward)
                except Exception:  # a bug of ours: answered and counted all the same
                    log.exception("forwarding to %s/%s failed", name, variant.name)
                    reply = _error_reply(500, "internal gateway error", answers.SERVER_ERROR)
        # Counted and timed before the answer leaves: a client holding its answer finds
        # it in /metrics.
        label = variant.name if variant is not None else answers.NO_VARIANT
        self.metrics.responses.labels(name, label, reply.answer_class).inc()
        if reply.answer_class == answers.OK:  # the latency of good answers: a fast
            # refusal or failure must not make a variant look fast (they are counted)
            self.metrics.latency.labels(name, label).observe(time.perf_counter() - started)
        # An explicit length spares the client from chunked transfer decoding; the
        # variant header tells a client (and an A/B analysis) which arm answered.
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        if variant is not None:
            headers.append((VARIANT_HEADER, variant.name.encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        if variant is None or reply.status != 200:
            return

        # Compressed bodies are not sampled: the drift monitor reads plain tensors.
        if "content-encoding" not in forward and self.samples.wants():
            self.samples.add(
                name,
                variant.name,
                Sample(time.time(), body, header_length, reply.body, _header_length(reply.headers)),
            )
        for shadow in route.shadows():
            if (
                shadow.name != variant.name
                and self._shadows_in_flight < MAX_SHADOWS_IN_FLIGHT
                and self.rng.random() < shadow.shadow_share
            ):
                self._shadows_in_flight += 1  # counted now, so a burst cannot pass the cap
                self._spawn(self._shadow(name, shadow, body, forward, reply))

    async def _forward(
        self, name: str, variant: VariantRoute, body: bytes, headers: dict[str, str]
    ) -> Reply:
        """Send to one replica; after a connection failure, once more to another.
        Rank-0 tensors keep their shape ``[]`` here and travel as ``[1]`` in Triton."""
        assert self.session is not None
        if variant.scalar_inputs and "content-encoding" not in headers:
            length = headers.get(HEADER_LENGTH)
            body, new_length = reshape_tensors(
                body, int(length) if length else None, "inputs", variant.scalar_inputs, [], [1]
            )
            if new_length is not None:
                headers = {**headers, HEADER_LENGTH: str(new_length)}
        reply = await self._send(name, variant, body, headers)
        if variant.scalar_outputs and reply.status == 200:
            payload, length = reshape_tensors(
                reply.body, _header_length(reply.headers), "outputs", variant.scalar_outputs,
                [1], [],
            )  # fmt: skip
            kept = [(k, v) for k, v in reply.headers if k != HEADER_LENGTH.encode()]
            if length is not None:
                kept.append((HEADER_LENGTH.encode(), str(length).encode()))
            reply = Reply(reply.status, payload, kept, reply.answer_class)
        return reply

    async def _send(
        self, name: str, variant: VariantRoute, body: bytes, headers: dict[str, str]
    ) -> Reply:
        assert self.session is not None
        replicas = {r.url: r for r in variant.replicas}
        urls = list(replicas)
        failed_url: str | None = None
        for attempt in (0, 1):
            url = self.balancer.pick(urls, time.monotonic(), exclude=failed_url)
            if url is None:
                break
            if attempt:
                self.metrics.retries.labels(name, variant.name).inc()
            reply = await self._attempt(name, variant.name, replicas[url], body, headers)
            if reply is not None:
                return reply
            failed_url = url
        if failed_url is None:  # not one replica to try (routes never hold such a variant)
            return _error_reply(
                503, f"variant {variant.name!r} has no ready replica", answers.NO_READY_REPLICA
            )
        return _error_reply(502, "no replica could be reached", answers.CONNECTION_RESET)

    async def _attempt(
        self, name: str, variant: str, replica: ReplicaRoute, body: bytes, headers: dict[str, str]
    ) -> Reply | None:
        """One upstream try; ``None`` means a connection failure worth a retry elsewhere."""
        assert self.session is not None
        labels = (name, variant, replica.url)
        self.metrics.replica_labels.add(labels)
        in_flight = self.metrics.in_flight.labels(*labels)
        in_flight.inc()
        self.balancer.started(replica.url)
        failed = True
        try:
            async with self.session.post(
                f"{replica.url}/v2/models/{replica.triton_model_name}/infer",
                data=body,
                headers=headers,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                content_type = upstream.headers.get("content-type")
                header_length = upstream.headers.get(HEADER_LENGTH)
            failed = status >= 500
            if failed:
                self.metrics.errors.labels(*labels, "5xx").inc()
            self.metrics.requests.labels(*labels, str(status)).inc()
        except TimeoutError:
            self.metrics.errors.labels(*labels, "timeout").inc()
            self.metrics.requests.labels(*labels, "504").inc()
            return _error_reply(504, f"replica {replica.url} timed out", answers.UPSTREAM_TIMEOUT)
        except aiohttp.ClientError as exc:
            self.metrics.errors.labels(*labels, "connect").inc()
            log.warning("replica %s failed: %s", replica.url, exc.__class__.__name__)
            return None
        finally:
            in_flight.dec()
            self.balancer.finished(replica.url, failed, time.monotonic())
        length = int(header_length) if header_length and header_length.isdigit() else None
        if status == 200:  # the deployment's name and registered version, not Triton's
            payload, length = rename_answer(
                payload, length, replica.triton_model_name, name, replica.version
            )
        elif status >= 400:  # Triton sends some errors (a model's own) as text/plain
            payload = _as_error(payload, status, replica.triton_model_name, name)
            content_type, length = "application/json", None
        reply = [(b"content-type", content_type.encode())] if content_type else []
        if length is not None:
            reply.append((HEADER_LENGTH.encode(), str(length).encode()))
        return Reply(status, payload, reply, answers.status_class(status))

    async def _shadow(
        self,
        name: str,
        shadow: VariantRoute,
        body: bytes,
        headers: dict[str, str],
        primary: Reply,
    ) -> None:
        """Mirror a request to a shadow variant; count its rows that agree with the
        answer the client got, that disagree, or that it failed. A good answer's latency
        is observed under the shadow variant; it is no answer to a client, so the
        responses counter does not count it."""
        started = time.perf_counter()
        counted: dict[str, int] = {}
        try:
            theirs = decode(primary.body, _header_length(primary.headers), "outputs")
            counted = {"error": answer_rows(theirs, shadow.agreement.batched)}
            reply = await self._forward(name, shadow, body, headers)
            if reply.status == 200:
                self.metrics.latency.labels(name, shadow.name).observe(
                    time.perf_counter() - started
                )
                ours = decode(reply.body, _header_length(reply.headers), "outputs")
                length = headers.get(HEADER_LENGTH)
                inputs = decode(body, int(length) if length else None, "inputs")
                verdict = shadow_rows(shadow, theirs, ours, inputs)
                agreed = int(verdict.sum())
                counted = {"agree": agreed, "disagree": len(verdict) - agreed}
        except Exception:
            counted = counted or {"error": 1}
        finally:
            self._shadows_in_flight -= 1
        for outcome, rows in counted.items():
            if rows:
                self.metrics.shadow.labels(name, shadow.name, outcome).inc(rows)

    async def _model(self, send: Send, target: Endpoint) -> None:
        """Model metadata or readiness, with or without a version: asked of a replica
        serving it, presented under the deployment's name and registered versions."""
        assert self.session is not None and target.model is not None
        name = target.model
        route = await self._route(name)
        if route is None and not self._loaded:
            await _error(send, 503, "the gateway has not read its routes yet; retry")
            return
        if route is None:
            await _error(send, 404, f"deployment {name!r} does not exist")
            return
        try:
            candidates = self._candidates(route, target.version)
        except NotServed as exc:
            await _error(send, 404, str(exc))
            return
        # stable's metadata while it serves (the signature its clients are written
        # against), not the candidate's during a canary; else the largest share
        serving = candidates.serving()
        variant = max(serving, key=lambda v: (v.name == "stable", v.weight), default=None)
        if variant is None:
            await _error(send, 503, f"deployment {name!r} has no ready replica")
            return
        url = self.balancer.pick([r.url for r in variant.replicas], time.monotonic())
        replica = next(r for r in variant.replicas if r.url == url)
        address = f"{replica.url}/v2/models/{replica.triton_model_name}"
        if target.kind is Kind.MODEL_READY:
            address += "/ready"
        try:
            async with self.session.get(address) as upstream:
                payload, status = await upstream.read(), upstream.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            await _error(send, 502, f"replica {replica.url} unreachable: {exc.__class__.__name__}")
            return
        if status == 200 and target.kind is Kind.MODEL_METADATA:
            try:
                data = json.loads(payload)
                data["name"] = name  # the deployment is the model
                if versions := route.versions():  # registered versions, not Triton's "1"
                    data["versions"] = [str(v) for v in versions]
                else:
                    data.pop("versions", None)
                for side, names in (
                    ("inputs", variant.scalar_inputs),
                    ("outputs", variant.scalar_outputs),
                ):  # the model's own rank 0, not Triton's [1]
                    for tensor in data.get(side, []):
                        if tensor.get("name") in names and tensor.get("shape") == [1]:
                            tensor["shape"] = []
            except (ValueError, TypeError, AttributeError):
                await _error(send, 502, f"replica {replica.url} sent unreadable metadata")
                return
            payload = json.dumps(data).encode()
        elif status != 200 and not payload:
            payload = _error_body(f"replica {replica.url} answered {status}")
        await _respond(send, status, payload, "application/json" if payload else "text/plain")

    @staticmethod
    def _request_headers(scope: Scope) -> tuple[dict[str, str], dict[str, str], int | None]:
        """Headers to forward, the ``x-`` headers (one may be the sticky key), and the
        length of the JSON part of a binary-tensor body."""
        forward: dict[str, str] = {}
        custom: dict[str, str] = {}
        header_length: int | None = None
        for raw_name, raw_value in scope["headers"]:
            if raw_name in FORWARDED:
                forward[raw_name.decode()] = raw_value.decode("latin-1")
                if raw_name == b"inference-header-content-length":
                    if not raw_value.isdigit():
                        raise MalformedRequest(
                            f"{HEADER_LENGTH} must be a byte count, got {raw_value!r}"
                        )
                    header_length = int(raw_value)
            elif raw_name.startswith(b"x-"):
                custom[raw_name.decode()] = raw_value.decode("latin-1")
        return forward, custom, header_length

    # ---- routes and health ------------------------------------------------------

    async def refresh(self, fresher_than: float | None = None) -> None:
        """Reload the routes. One load at a time, so an older read never replaces a
        newer; with ``fresher_than``, a load that started after that moment (while
        this caller waited for the lock) is fresh enough and is not repeated."""
        async with self._refresh_lock:
            if fresher_than is not None and self._refreshed_at >= fresher_than:
                return
            self._refreshed_at = time.monotonic()
            table = await anyio.to_thread.run_sync(self.load_table)
            self._install(table)
            self._loaded = True

    def _install(self, table: RoutingTable) -> None:
        if table != self.table:
            log.info(
                "routes: %s",
                {
                    n: {v.name: (v.weight, len(v.replicas)) for v in d.variants}
                    for n, d in table.deployments.items()
                },
            )
            gone = self.table.replica_urls() - table.replica_urls()
            self.table = table  # one assignment: requests see the old table or the new
            self.balancer.forget_except(table.replica_urls())
            self.metrics.forget_replicas(gone)
            variants = {(d.name, v.name) for d in table.deployments.values() for v in d.variants}
            self.metrics.declare_variants(variants)
            # samples of variants that left: memory back, and a next canary of the same
            # name does not start with its predecessor's traffic
            self.samples.keep_only(variants)

    async def check_health(self) -> None:
        """Active checks: each replica's model must answer ready, quickly."""
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=max(0.2, self.settings.health_check_seconds / 2))
        checks = {
            r.url: f"{r.url}/v2/models/{r.triton_model_name}/ready"
            for d in self.table.deployments.values()
            for v in d.variants
            for r in v.replicas
        }

        async def probe(url: str) -> bool:
            try:
                async with self.session.get(url, timeout=timeout) as response:  # type: ignore[union-attr]
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(probe(u) for u in checks.values()))
        now = time.monotonic()
        for (replica_url, _), healthy in zip(checks.items(), results, strict=True):
            self.balancer.checked(replica_url, healthy)
        for d in self.table.deployments.values():
            for v in d.variants:
                for r in v.replicas:
                    available = self.balancer.health(r.url).available(now)
                    self.metrics.replica_labels.add((d.name, v.name, r.url))
                    self.metrics.available.labels(d.name, v.name, r.url).set(int(available))

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except RoutesUnavailable as exc:  # a source still syncing: no traceback
                log.warning("%s: %s", job.__name__, exc)
            except Exception:  # keep going; the next round retries
                log.exception("background job %s failed", job.__name__)
            await asyncio.sleep(seconds)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                    timeout=aiohttp.ClientTimeout(total=self.settings.gateway_timeout),
                    auto_decompress=False,
                    cookie_jar=aiohttp.DummyCookieJar(),  # replicas set no cookies
                    read_bufsize=1 << 20,  # MiniLM answers are ~200 KB: read in few chunks
                    skip_auto_headers=("User-Agent", "Accept-Encoding"),
                )
                with contextlib.suppress(Exception):
                    await self.refresh()
                self._spawn(self._every(self.settings.routes_refresh_seconds, self.refresh))
                self._spawn(self._every(self.settings.health_check_seconds, self.check_health))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in list(self._background):
                    task.cancel()
                if self.session:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- admin ------------------------------------------------------------------

    async def _admin(self, scope: Scope, send: Send, path: str) -> None:
        token = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer ")
        if token not in self.settings.api_tokens:
            await _error(send, 401, "admin endpoints need a bearer token")
            return
        if path == "/admin/routes":
            data = {
                name: {
                    "sticky": d.sticky,
                    "variants": {
                        v.name: {
                            "weight": v.weight,
                            "shadow_share": v.shadow_share,
                            "replicas": [r.url for r in v.replicas],
                        }
                        for v in d.variants
                    },
                }
                for name, d in self.table.deployments.items()
            }
        elif path.startswith(("/admin/samples/", "/admin/outputs/")):
            kind, _, rest = path[len("/admin/") :].partition("/")
            deployment, _, variant = rest.partition("/")
            query = dict(
                part.split("=", 1)
                for part in scope["query_string"].decode().split("&")
                if "=" in part
            )
            limit_text = query.get("limit", "100")
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
                await _error(send, 400, f"limit must be 1..10000, got {limit_text!r}")
                return
            limit = int(limit_text)
            if kind == "samples":
                samples = [  # numbers and booleans: what drift statistics read
                    {
                        "at": s.at,
                        "inputs": {
                            k: v.tolist() for k, v in s.inputs().items() if v.dtype.kind in "biuf"
                        },
                    }
                    for s in self.samples.requests(deployment, variant, limit)
                ]
            else:  # answers: embeddings and scores only (token states are too large)
                samples = [
                    {
                        "at": s.at,
                        "outputs": {
                            k: v.tolist()
                            for k, v in s.outputs().items()
                            if v.ndim <= 2 and v.dtype.kind == "f"
                        },
                    }
                    for s in self.samples.pairs(deployment, variant, limit)
                ]
            data = {"deployment": deployment, "variant": variant, "samples": samples}
        else:
            await _error(send, 404, f"no admin route {path}")
            return
        await _respond(send, 200, json.dumps(data).encode(), "application/json")


_JSON_HEADERS = [(b"content-type", b"application/json")]
VARIANT_HEADER = b"x-shipway-variant"


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()  # the KServe v2 error shape


_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\] ")


def _as_error(payload: bytes, status: int, served_as: str = "", name: str = "") -> bytes:
    """An upstream error answer in the protocol's shape, ``{"error": "..."}``, in the
    client's terms: the deployment's name for Triton's internal model name, and
    without Triton's "[request id: <id_unknown>]" prefix."""
    try:
        message = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str):
        text = payload[:500].decode("utf-8", errors="replace").strip()
        message = f"the replica answered {status}: {text}" if text else ""
        message = message or f"the replica answered {status}"
    message = _REQUEST_ID.sub("", message)
    if served_as and name:
        message = message.replace(f"'{served_as}'", f"'{name}'")
    return _error_body(message)


def _error_reply(status: int, message: str, answer_class: str) -> Reply:
    return Reply(status, _error_body(message), _JSON_HEADERS, answer_class)


async def _error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, _error_body(message), "application/json", headers)


async def _not_allowed(send: Send, method: str, path: str, allowed: str) -> None:
    message = f"{method} is not allowed on {path}; use {allowed}"
    await _error(send, 405, message, [(b"allow", allowed.encode())])


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == HEADER_LENGTH.encode():
            return int(value)
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    for raw_name, raw_value in scope["headers"]:
        if raw_name == b"cookie":
            for part in raw_value.decode("latin-1").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
    return None


def create_gateway_app(settings: Settings, db: Any) -> Gateway:
    """The gateway process's composition root: routes come from the state store."""
    from shipway.gateway.store_routes import load_table

    return Gateway(settings, lambda: load_table(db))


@contextlib.contextmanager
def kubernetes_gateway_app(
    settings: Settings, api_client: Any, namespace: str
) -> Iterator[Gateway]:
    """The in-cluster gateway's composition root: routes from the ModelDeployments of
    ``namespace``, replicas from their variants' EndpointSlices, kept by a watch
    (``kube_source.KubernetesRouteSource``) that runs while the context is open: serve
    the app inside it. Waits up to ``kubernetes_timeout`` seconds for the first sync;
    until it comes the gateway answers not ready (``/v2/health/ready`` 503)."""
    from shipway.gateway.kube_source import KubernetesRouteSource

    source = KubernetesRouteSource(
        api_client, namespace, request_timeout=settings.kubernetes_timeout
    )
    source.start()
    try:
        if not source.wait_synced(settings.kubernetes_timeout):
            log.warning(
                "routes of namespace %s not listed yet; not ready until they are", namespace
            )
        yield Gateway(settings, source.table)
    finally:
        source.stop()
