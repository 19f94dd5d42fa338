"""The operator's ``PrometheusMetrics`` against a real Prometheus (Debian's package) that
scrapes the gateway's real counters (``GatewayMetrics``, served over HTTP as the gateway
serves them) every second: what it reads when there is nothing, when the series go stale,
when Prometheus is gone, and that a deployment's name is a value, never PromQL.

(The port contract — counters per variant, resets, shadow counts, an unreachable source —
runs against it in tests/unit/rollout/test_port_contracts.py, parameter ``prometheus``.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from prometheus_client import make_wsgi_app

from shipway.gateway.metrics import GatewayMetrics
from shipway.rollout.ports import MetricsUnavailable
from shipway_operator.prometheus import PrometheusMetrics
from tests.kube.cluster import wait_for
from tests.support.prometheus import PrometheusServer, Target
from tests.support.services import free_port

pytestmark = pytest.mark.integration

Start = Callable[[list[Target]], PrometheusServer]
JOB = "shipway-gateway"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Exposition:
    """An HTTP ``/metrics`` in a thread: a ``GatewayMetrics`` registry's exposition, or
    a fixed text when ``text`` is set."""

    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.text: str | None = None

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Any:
            if self.text is not None:
                start("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
                return [self.text.encode()]
            return make_wsgi_app(self.metrics.registry)(environ, start)

        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        self.address = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.up = True

    def answers(self, deployment: str, variant: str, good: int, errors: int = 0) -> None:
        for answer_class, n in (("2xx", good), ("5xx", errors)):
            if n:
                self.metrics.responses.labels(deployment, variant, answer_class).inc(n)
        for _ in range(good):
            self.metrics.latency.labels(deployment, variant).observe(0.005)

    def stop(self) -> None:
        if self.up:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)
            self.up = False


@pytest.fixture
def expositions() -> Iterator[Callable[[], Exposition]]:
    made: list[Exposition] = []

    def make() -> Exposition:
        made.append(Exposition())
        return made[-1]

    yield make
    for exposition in made:
        exposition.stop()


def scraped(server: PrometheusServer, job: str = JOB) -> None:
    """Wait until Prometheus has scraped ``job`` after what the test just changed."""
    server.wait_scraped(job, after=time.time())


def test_an_unreachable_prometheus_is_metrics_unavailable_in_one_line() -> None:
    port = free_port()  # closed: nothing listens on it
    provider = PrometheusMetrics(f"http://127.0.0.1:{port}", timeout_seconds=2)
    with pytest.raises(MetricsUnavailable) as caught:
        provider.snapshot("web")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message
    assert "\n" not in message


def test_a_deployment_without_data_is_an_empty_snapshot(
    prometheus: Start, expositions: Callable[[], Exposition]
) -> None:
    gateway = expositions()
    gateway.answers("web", "stable", good=4)
    server = prometheus([Target(JOB, gateway.address)])
    scraped(server)
    provider = PrometheusMetrics(server.url, {"job": JOB})
    assert provider.snapshot("web")["stable"].requests == 4  # the data is there
    assert provider.snapshot("other") == {}  # none of it is other's
    assert PrometheusMetrics(server.url, {"job": "elsewhere"}).snapshot("web") == {}


def test_a_target_that_went_down_makes_its_series_stale_not_empty(
    prometheus: Start, expositions: Callable[[], Exposition]
) -> None:
    """Prometheus marks the series of a target whose scrape fails stale; the provider
    tells that (series there within the history window, none now) from no data."""
    gateway = expositions()
    gateway.answers("web", "canary", good=5, errors=1)
    server = prometheus([Target(JOB, gateway.address)])
    scraped(server)
    provider = PrometheusMetrics(server.url, {"job": JOB}, staleness_seconds=30)
    assert provider.snapshot("web")["canary"].errors == 1
    gateway.stop()
    server.wait_scraped(JOB, health="down")

    def unavailable() -> str | None:
        try:
            provider.snapshot("web")
        except MetricsUnavailable as exc:
            return str(exc)
        return None

    message = wait_for(unavailable, 30, "MetricsUnavailable once the target is down")
    assert "stale" in message and "'web'" in message and "\n" not in message
    assert provider.snapshot("other") == {}  # a deployment never seen is still just empty


def test_samples_older_than_the_staleness_limit_are_metrics_unavailable(
    prometheus: Start, expositions: Callable[[], Exposition]
) -> None:
    """A target exposing its own timestamps (an exporter that froze, a federation) gets
    no staleness markers: Prometheus keeps answering its last sample for the lookback
    delta (5 min). The provider reads it while it is younger than the limit, and refuses
    it after."""
    limit = 12.0
    frozen = expositions()
    server = prometheus([Target(JOB, frozen.address)])  # up first: its start takes no time
    stamped = time.time()  # of the limit, however slow a loaded machine starts it
    frozen.text = (
        "# TYPE shipway_gateway_responses_total counter\n"
        'shipway_gateway_responses_total{deployment="web",variant="stable",class="2xx"} '
        f"7 {int(stamped * 1000)}\n"
    )
    provider = PrometheusMetrics(server.url, {"job": JOB}, staleness_seconds=limit)

    def read() -> Any:
        try:
            return provider.snapshot("web")
        except MetricsUnavailable as exc:
            return exc

    # wait for the first scrape: read while fresh, not yet older than the limit
    fresh = wait_for(read, limit, "the frozen sample read while younger than the limit")
    assert not isinstance(fresh, MetricsUnavailable), fresh
    assert fresh["stable"].requests == 7
    stale = wait_for(
        lambda: isinstance(r := read(), MetricsUnavailable) and r,
        limit + 30,
        "MetricsUnavailable once the newest sample is older than the limit",
    )
    assert "old" in str(stale) and f"limit {limit:g}s" in str(stale)
    assert time.time() - stamped > limit
    # Prometheus itself still answers the series (no staleness marker was written)
    answer = server.client.get(
        "/api/v1/query", params={"query": 'shipway_gateway_responses_total{deployment="web"}'}
    ).json()
    assert answer["data"]["result"], answer


@pytest.mark.parametrize(
    "name",
    [
        'we"b',
        "we\\b",
        "we\\",
        '"} or shipway_gateway_responses_total{deployment=~".+',
        ".*",
        "wé\nb 🚀",
    ],
)
def test_a_deployment_name_is_a_value_never_promql(
    prometheus: Start, expositions: Callable[[], Exposition], name: str
) -> None:
    gateway = expositions()
    gateway.answers(name, "canary", good=3, errors=2)
    gateway.answers("web", "canary", good=50)  # another deployment, matched by a regex
    server = prometheus([Target(JOB, gateway.address)])
    scraped(server)
    snapshot = PrometheusMetrics(server.url, {"job": JOB}).snapshot(name)
    assert set(snapshot) == {"canary"}
    assert (snapshot["canary"].requests, snapshot["canary"].errors) == (5, 2)


def test_gateway_replicas_add_up_and_the_selector_keeps_other_gateways_out(
    prometheus: Start, expositions: Callable[[], Exposition]
) -> None:
    one, two, elsewhere = expositions(), expositions(), expositions()
    one.answers("web", "canary", good=3, errors=1)
    two.answers("web", "canary", good=4)
    elsewhere.answers("web", "canary", good=100, errors=100)  # another namespace's gateway
    server = prometheus(
        [
            Target(JOB, one.address, {"namespace": "models"}),
            Target(f"{JOB}-2", two.address, {"namespace": "models"}),
            Target("other", elsewhere.address, {"namespace": "staging"}),
        ]
    )
    for job in (JOB, f"{JOB}-2", "other"):
        scraped(server, job)
    canary = PrometheusMetrics(server.url, {"namespace": "models"}).snapshot("web")["canary"]
    assert (canary.requests, canary.errors) == (8, 1)
    assert canary.buckets[-1][1] == 7  # both replicas' histograms, summed per bound
    everything = PrometheusMetrics(server.url).snapshot("web")["canary"]
    assert everything.requests == 208
