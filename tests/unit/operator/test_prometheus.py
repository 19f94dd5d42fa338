"""``PrometheusMetrics`` on answers a real Prometheus does not give: NaN and infinite
counters, malformed bodies, error envelopes — served by ``httpx.MockTransport`` (the
real-Prometheus cases are in tests/integration/operator/test_prometheus_metrics.py).
Plus the queries' text, the constructor's refusals and the settings' wiring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shipway.rollout.ports import MetricsUnavailable
from shipway_operator.prometheus import NoMetrics, PrometheusMetrics, from_settings, promql_string
from shipway_operator.settings import OperatorSettings

URL = "http://prometheus.test:9090"
RESPONSES, BUCKETS = "shipway_gateway_responses_total", "shipway_gateway_request_seconds_bucket"
SHADOW = "shipway_gateway_shadow_total"
Answer = Callable[[str, float], httpx.Response]


def vector(*results: tuple[dict[str, str], str], at: float = 0.0) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": m, "value": [at, v]} for m, v in results],
            },
        },
    )


def labels(name: str, variant: str, **more: str) -> dict[str, str]:
    return {"__name__": name, "variant": variant, **more}


def nothing(query: str, at: float) -> httpx.Response:
    return vector()


def success(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": data})


def provider(
    counters: Answer, newest: Answer | None = None, history: Answer | None = None, **kw: Any
) -> PrometheusMetrics:
    """A provider whose Prometheus answers each of the three queries as given (the
    newest scrape: now, unless ``newest``)."""

    def fresh(query: str, at: float) -> httpx.Response:
        return vector(({}, str(at - 1)))

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query, at = request.url.params["query"], float(request.url.params["time"])
        if query.startswith("max(timestamp("):
            return (newest or fresh)(query, at)
        if query.startswith("count(last_over_time("):
            assert history is not None, "the history is asked only when nothing is live"
            return history(query, at)
        return counters(query, at)

    return PrometheusMetrics(URL, transport=httpx.MockTransport(handle), **kw)


def unavailable(metrics: PrometheusMetrics, deployment: str = "web") -> str:
    with pytest.raises(MetricsUnavailable) as caught:
        metrics.snapshot(deployment)
    message = str(caught.value)
    assert "\n" not in message and URL in message
    return message


def test_counters_map_to_the_variants_as_the_local_provider_maps_them() -> None:
    def counters(query: str, at: float) -> httpx.Response:
        return vector(
            (labels(RESPONSES, "canary", **{"class": "2xx"}), "8"),
            (labels(RESPONSES, "canary", **{"class": "4xx"}), "1"),
            (labels(RESPONSES, "canary", **{"class": "upstream_timeout"}), "2"),
            (labels(BUCKETS, "canary", le="0.01"), "7"),
            (labels(BUCKETS, "canary", le="+Inf"), "8"),
            (labels(SHADOW, "shadow", outcome="agree"), "4"),
        )

    snapshot = provider(counters).snapshot("web")
    canary = snapshot["canary"]
    assert (canary.requests, canary.errors, canary.client_errors) == (11, 2, 1)
    assert canary.buckets == ((0.01, 7), (float("inf"), 8))
    assert snapshot["shadow"].shadow == (4, 0, 0)


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-1", "many"])
def test_a_counter_that_is_no_number_is_unavailable(value: str) -> None:
    def counters(query: str, at: float) -> httpx.Response:
        labels = {"__name__": "shipway_gateway_responses_total", "variant": "canary"}
        return vector(({**labels, "class": "2xx"}, "3"), ({**labels, "class": "5xx"}, value))

    assert f"{value!r}" in unavailable(provider(counters))


def test_a_newest_scrape_time_that_is_nan_is_unavailable() -> None:
    metrics = provider(nothing, newest=lambda q, at: vector(({}, "NaN")))
    assert "'NaN'" in unavailable(metrics)


def test_an_old_newest_scrape_is_unavailable() -> None:
    metrics = provider(
        nothing, newest=lambda q, at: vector(({}, str(at - 61))), staleness_seconds=60
    )
    assert "61s old (limit 60s)" in unavailable(metrics)


def test_nothing_live_is_empty_unless_there_was_something_within_the_history() -> None:
    empty = provider(nothing, newest=nothing, history=nothing)
    assert empty.snapshot("web") == {}
    gone = provider(nothing, newest=nothing, history=lambda q, at: vector(({}, "3")))
    assert "stale" in unavailable(gone)


def test_an_error_envelope_is_unavailable_with_prometheus_words() -> None:
    def refused(query: str, at: float) -> httpx.Response:
        body = {"status": "error", "errorType": "execution", "error": "query timed out\nin eval"}
        return httpx.Response(503, json=body)

    message = unavailable(provider(refused))
    assert "503 execution: query timed out in eval" in message


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "HTTP 502 Bad Gateway"),
        (httpx.Response(200, text="not json"), "malformed answer"),
        (httpx.Response(200, json={"status": "success"}), "malformed answer (no data)"),
        (success({"resultType": "matrix", "result": []}), "malformed answer"),
        (success({"resultType": "vector", "result": [{}]}), "malformed answer"),
        (vector((labels(BUCKETS, "canary", le="x"), "1")), "a bucket with le='x'"),
    ],
)
def test_a_malformed_or_failed_answer_is_unavailable(response: httpx.Response, words: str) -> None:
    assert words in unavailable(provider(lambda q, at: response))


def test_a_transport_failure_is_unavailable() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    metrics = PrometheusMetrics(URL, transport=httpx.MockTransport(broken))
    assert "unreachable: ConnectError: connection refused" in unavailable(metrics)


def test_the_queries_select_one_deployment_by_an_escaped_value() -> None:
    metrics = PrometheusMetrics(URL, {"namespace": 'mo"dels'}, staleness_seconds=30)
    newest, counters, history = metrics.queries('we"b\\')
    sel = (
        '__name__=~"shipway_gateway_responses_total|shipway_gateway_request_seconds_bucket|'
        'shipway_gateway_shadow_total", namespace="mo\\"dels", deployment="we\\"b\\\\", '
        'variant!=""'
    )
    assert newest == f"max(timestamp({{{sel}}}))"
    assert counters == f"sum by (__name__, variant, class, le, outcome) ({{{sel}}})"
    assert history == f"count(last_over_time({{{sel}}}[3600000ms]))"


def test_promql_strings_escape_what_go_unquotes() -> None:
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert promql_string("é🚀") == '"é🚀"'  # no surrogate-pair escapes, which PromQL refuses
    assert json.loads(promql_string("\x01")) == "\x01"


@pytest.mark.parametrize("label", ["deployment", "variant", "__name__", "a-b", "1a"])
def test_a_selector_cannot_override_the_providers_own_matchers(label: str) -> None:
    with pytest.raises(ValueError, match="cannot select"):
        PrometheusMetrics(URL, {label: "x"})


def test_the_staleness_limit_is_inside_the_history_window() -> None:
    with pytest.raises(ValueError, match="staleness"):
        PrometheusMetrics(URL, staleness_seconds=4000)


def test_without_a_prometheus_url_every_snapshot_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHIPWAY_OPERATOR_PROMETHEUS_URL", raising=False)
    metrics = from_settings(OperatorSettings())
    assert isinstance(metrics, NoMetrics)
    with pytest.raises(MetricsUnavailable, match="SHIPWAY_OPERATOR_PROMETHEUS_URL"):
        metrics.snapshot("web")


def test_the_settings_make_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_URL", URL + "/")
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_SELECTOR", "namespace=models,job=gw")
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_STALENESS_SECONDS", "30")
    metrics = from_settings(OperatorSettings())
    assert isinstance(metrics, PrometheusMetrics) and metrics.url == URL
    assert metrics.selector("web") == 'namespace="models", job="gw", deployment="web", variant!=""'
    metrics.close()


def test_a_snapshot_is_read_at_one_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query of one snapshot is evaluated at the same ``time``."""
    seen: set[float] = set()

    def counters(query: str, at: float) -> httpx.Response:
        seen.add(at)
        return vector()

    def newest(query: str, at: float) -> httpx.Response:
        seen.add(at)
        return vector(({}, str(at)))

    before = time.time()
    provider(counters, newest=newest).snapshot("web")
    assert len(seen) == 1 and before <= seen.pop() <= time.time()


def test_a_narrowed_provider_adds_matchers_and_keeps_the_rest() -> None:
    metrics = PrometheusMetrics(URL, {"job": "gw"}, staleness_seconds=30)
    models = metrics.narrowed({"namespace": "models"})
    assert models.selector("web") == 'job="gw", namespace="models", deployment="web", variant!=""'
    assert metrics.selector("web") == 'job="gw", deployment="web", variant!=""'  # unchanged
    assert all('namespace="models"' in query for query in models.queries("web"))
    with pytest.raises(ValueError, match="cannot select"):
        metrics.narrowed({"deployment": "other"})
    metrics.close()
