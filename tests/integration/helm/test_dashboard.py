"""The Grafana dashboard's queries against a real Prometheus (Debian's package) holding
the gateway's series (its ``GatewayMetrics`` served over HTTP as the gateway serves
them, with stable and canary traffic, failures and a shadow), the API's drift gauges,
and a real tritonserver's own ``nv_inference_*`` series after real inferences: each
query parses and returns finite data."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client import CollectorRegistry, make_wsgi_app

from shipway.drift.metrics import DriftMetrics
from shipway.gateway.metrics import GatewayMetrics
from tests.integration.conftest import RunningTriton
from tests.support.prometheus import PrometheusServer, Target

from .conftest import Helm, by_kind

pytestmark = pytest.mark.integration

JOBS = ("shipway-gateway", "shipway-api", "triton")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Exposition:
    """A registry's ``/metrics`` over HTTP, in a thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        app = make_wsgi_app(registry)
        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        self.address = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def expose() -> Iterator[Callable[[CollectorRegistry], Exposition]]:
    made: list[Exposition] = []

    def start(registry: CollectorRegistry) -> Exposition:
        made.append(Exposition(registry))
        return made[-1]

    yield start
    for exposition in made:
        exposition.stop()


def gateway_traffic(metrics: GatewayMetrics) -> None:
    """A canary at 10 %, a few of its answers failing, a shadow comparing answers."""
    for variant, good, failed, seconds in (("stable", 90, 1, 0.004), ("canary", 9, 1, 0.006)):
        metrics.responses.labels("minilm", variant, "2xx").inc(good)
        metrics.responses.labels("minilm", variant, "5xx").inc(failed)
        for _ in range(good):
            metrics.latency.labels("minilm", variant).observe(seconds)
        replica = f"http://10.0.0.{1 if variant == 'stable' else 2}:8000"
        metrics.available.labels("minilm", variant, replica).set(1)
        metrics.in_flight.labels("minilm", variant, replica).set(0)
    metrics.shadow.labels("minilm", "canary", "agree").inc(5)
    metrics.shadow.labels("minilm", "canary", "disagree").inc(1)


def infer(triton: RunningTriton, inputs: dict[str, np.ndarray], times: int) -> None:
    client = triton_http.InferenceServerClient(triton.process.url.removeprefix("http://"))
    try:
        for _ in range(times):
            tensors = []
            for name, value in inputs.items():
                tensor = triton_http.InferInput(name, list(value.shape), "INT64")
                tensor.set_data_from_numpy(value, binary_data=True)
                tensors.append(tensor)
            client.infer(triton.model_name, tensors)
    finally:
        client.close()


def scraped(server: PrometheusServer) -> None:
    after = time.time()
    for job in JOBS:
        server.wait_scraped(job, after=after)


def test_every_dashboard_query_returns_data(
    helm: Helm,
    prometheus: Callable[[list[Target]], PrometheusServer],
    expose: Callable[[CollectorRegistry], Exposition],
    minilm_triton: RunningTriton,
    minilm_inputs: dict[str, np.ndarray],
) -> None:
    dashboard = json.loads(
        by_kind(helm.template(None), "ConfigMap")["rel-shipway-dashboard"]["data"]["shipway.json"]
    )
    gateway, drift = GatewayMetrics(), DriftMetrics()
    drift.record("minilm", "stable", {"verdict": "no-drift", "rows": 500, "score": 0.04})
    gateway_traffic(gateway)
    infer(minilm_triton, minilm_inputs, 3)
    triton = minilm_triton.process.metrics_url.removeprefix("http://").removesuffix("/metrics")
    server = prometheus(
        [
            Target("shipway-gateway", expose(gateway.registry).address, {"namespace": "models"}),
            Target("shipway-api", expose(drift.registry).address, {"namespace": "shipway"}),
            Target("triton", triton, {"namespace": "models", "pod": "minilm-stable-0"}),
        ]
    )
    scraped(server)
    # a second sample of every counter, higher: rates over the panels' windows are positive
    gateway_traffic(gateway)
    infer(minilm_triton, minilm_inputs, 3)
    scraped(server)

    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    variable = dashboard["templating"]["list"][1]
    assert variable["name"] == "deployment"
    # Grafana's label_values(metric, label) is Prometheus' label values API
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]).groups()
    answer = server.client.get(f"/api/v1/label/{label}/values", params={"match[]": metric})
    assert answer.json()["data"] == ["minilm"]

    empty: list[str] = []
    for title, expr in queries:
        query = expr.replace("$deployment", ".*")  # the variable's "All"
        response = server.client.get("/api/v1/query", params={"query": query})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (title, body)
        values = [float(r["value"][1]) for r in body["data"]["result"]]
        if not values or not all(math.isfinite(v) for v in values):
            empty.append(f"{title}: {query} -> {body['data']['result']}")
    assert empty == []
    # a wrong query is refused by this Prometheus (so "success" above means parsed)
    refused = server.client.get("/api/v1/query", params={"query": "sum by (deployment ("})
    assert refused.status_code == 400
    assert re.search(r"parse error", refused.json()["error"])
