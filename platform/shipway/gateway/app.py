"""Gateway ASGI app: forwards KServe v2 requests to a ready replica of the deployment.

The request body is passed through untouched, so Triton's binary tensor extension
(``Inference-Header-Content-Length``) works as it does against Triton itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import anyio
import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from shipway.gateway.metrics import GatewayMetrics
from shipway.gateway.routing import Endpoint, RoutingTable
from shipway.settings import Settings
from shipway.store.db import Database
from shipway.store.models import Deployment, Replica, ReplicaState

log = logging.getLogger(__name__)

# Request bodies pass through as sent (a compressed one stays compressed); responses
# are asked for uncompressed, so their bytes pass through as Triton wrote them.
REQUEST_HEADERS = ("content-type", "inference-header-content-length", "content-encoding")
RESPONSE_HEADERS = ("content-type", "inference-header-content-length")


def load_table(db: Database) -> RoutingTable:
    with db.session() as session:
        rows = session.execute(
            select(Deployment.name, Replica)
            .join(Replica, Replica.deployment_id == Deployment.id)
            .where(Replica.state == ReplicaState.READY)
        ).all()
        return RoutingTable.build(
            (name, Endpoint(r.url, r.triton_model_name, r.variant)) for name, r in rows
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)  # KServe v2 error shape


def create_gateway_app(settings: Settings, db: Database) -> FastAPI:
    metrics = GatewayMetrics()
    state: dict[str, RoutingTable] = {"table": RoutingTable()}

    async def refresh() -> None:
        table = await anyio.to_thread.run_sync(load_table, db)
        if table != state["table"]:
            log.info("routes now %s", {k: [e.url for e in v] for k, v in table.routes.items()})
            state["table"] = table  # one assignment: requests see the old or the new table

    async def refresh_forever() -> None:
        while True:
            with contextlib.suppress(Exception):
                await refresh()
            await asyncio.sleep(settings.routes_refresh_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        app.state.client = httpx.AsyncClient(
            timeout=settings.gateway_timeout, limits=limits, trust_env=False
        )
        task = asyncio.create_task(refresh_forever())
        try:
            yield
        finally:
            task.cancel()
            await app.state.client.aclose()

    app = FastAPI(title="Shipway gateway", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def endpoint_for(deployment: str) -> Endpoint | None:
        chosen = state["table"].pick(deployment)
        if chosen is None:  # maybe it just became ready: look once more before refusing
            await refresh()
            chosen = state["table"].pick(deployment)
        return chosen

    async def forward(request: Request, deployment: str, suffix: str) -> Response:
        """Send the request to one ready replica; only inference is counted in metrics."""
        endpoint = await endpoint_for(deployment)
        if endpoint is None:
            return _error(404, f"deployment {deployment!r} has no ready replica")
        counted = suffix == "/infer"
        labels = (deployment, endpoint.variant)
        url = f"{endpoint.url}/v2/models/{endpoint.triton_model_name}{suffix}"
        headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
        headers["accept-encoding"] = "identity"
        started = time.perf_counter()
        if counted:
            metrics.in_flight.labels(*labels).inc()
        code = "502"
        try:
            upstream = await request.app.state.client.request(
                request.method, url, content=await request.body(), headers=headers
            )
            code = str(upstream.status_code)
        except httpx.TimeoutException:
            code = "504"
            return _error(504, f"replica {endpoint.url} timed out")
        except httpx.TransportError as exc:
            return _error(502, f"replica {endpoint.url} unreachable: {exc.__class__.__name__}")
        finally:
            if counted:
                metrics.in_flight.labels(*labels).dec()
                metrics.latency.labels(*labels).observe(time.perf_counter() - started)
                metrics.requests.labels(*labels, code).inc()
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() in RESPONSE_HEADERS}
        return Response(upstream.content, upstream.status_code, headers=out_headers)

    @app.post("/v2/models/{deployment}/infer")
    async def infer(request: Request, deployment: str) -> Response:
        return await forward(request, deployment, "/infer")

    @app.get("/v2/models/{deployment}")
    async def model_metadata(request: Request, deployment: str) -> Response:
        return await forward(request, deployment, "")

    @app.get("/v2/models/{deployment}/ready")
    async def model_ready(request: Request, deployment: str) -> Response:
        return await forward(request, deployment, "/ready")

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
