"""The Kubernetes ``MetricsProvider``: the gateway's counters as Prometheus scraped them.

The in-cluster gateway exports the same series as locally (``shipway.gateway.metrics``);
Prometheus scrapes every gateway replica. ``PrometheusMetrics.snapshot`` asks the HTTP API
(``GET /api/v1/query``, two instant queries) for the cumulative counters
per variant and returns the same ``Snapshot`` the local provider reads from the gateway's
``/metrics`` (the names and the ``class`` mapping are ``shipway.rollout.series``'s, shared).

How this relates to Prometheus' own functions: the snapshot is *cumulative* counters, as
scraped; the controller keeps the previous snapshot in the resource's status and
``shipway.rollout.counts`` takes the difference, treating a counter that went down as a
reset (everything counted now is the increase) — the arithmetic of Prometheus'
``increase()`` over the analysis interval, resets included — and interpolates latency
quantiles inside a bucket as ``histogram_quantile()`` does. So ``increase(...[interval])``
and ``histogram_quantile(0.99, sum by (le) (increase(..._bucket[interval])))`` over the
same series give what the analysis judges, without the operator depending on a
Prometheus-side interval (the analysis interval is the engine's, from the status).

What it asks, with ``SEL`` the deployment's matchers — ``__name__`` one of the three
series, ``deployment="<d>"``, ``variant!=""`` (an answer given before a variant was chosen is
nobody's) and the configured extra ones (e.g. ``namespace``, ``job``) — all evaluated at
one instant, the operator's clock (``time=``)::

    max(timestamp({SEL}))                                         # 1. the newest scrape
    sum by (__name__, variant, class, le, outcome) ({SEL})        # 2. the counters
    count(last_over_time({SEL}[H]))                               # 3. only if 1 is empty

1. Prometheus' own staleness handling comes first: a series that a successful scrape no
   longer has, or whose target's scrape failed, is marked stale and drops out of instant
   queries at once. What it does not catch — samples never marked (a Prometheus restart,
   a target exposing its own timestamps, federation) stay visible for the lookback delta
   (5 min) — the newest sample's time does: older than the staleness limit ``L`` is
   ``MetricsUnavailable``.
2. One query for the three families, so all come from the same scrapes: per variant the
   responses by ``class`` (kept apart for the error/4xx mapping of ``rollout.series``),
   the latency buckets by ``le``, the shadow comparisons by ``outcome``, each summed over
   the gateway's replicas (``sum by (variant, class) (shipway_gateway_responses_total
   {...})`` and so on, in one evaluation).
3. No live series: either the deployment has no data — an empty snapshot (the controller
   then judges nothing: inconclusive by ``min_requests``) — or its series were there
   within the history window ``H`` (an hour by default) and went stale (the gateway's
   target is down): ``MetricsUnavailable``.

Also ``MetricsUnavailable``, with a one-line message: Prometheus unreachable, an HTTP
error, an ``"error"`` answer, a malformed answer, a NaN, ±Inf or negative counter.
Missing data is never a pass. An operator clock ahead of Prometheus' by more than ``L``
reads as stale, never as fresh; one behind reads the counters as they were at its time.

Summing over gateway replicas has one cost: a replica whose series leave (it stopped, or
missed a scrape) lowers the sum, which ``counts`` reads as a reset, as Prometheus would
for one series; that interval's analysis then counts more than its own requests (each
replica's series, taken separately, would not; the ``Snapshot`` is per variant).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import httpx
from pydantic import BaseModel, ValidationError

from shipway.rollout import series
from shipway.rollout.counts import Snapshot
from shipway.rollout.ports import MetricsUnavailable

if TYPE_CHECKING:
    from shipway_operator.settings import OperatorSettings

FAMILIES = (  # (metric name, the labels summed by besides ``variant``)
    (series.RESPONSES, "class"),
    (series.BUCKETS, "le"),
    (series.SHADOW, "outcome"),
)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = frozenset({"__name__", "deployment", "variant"})  # the provider's own matchers


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal. PromQL unquotes like Go
    (``\\\\``, ``\\"``, ``\\n``, ``\\uXXXX``...); JSON's escapes are a subset of those, and
    with ``ensure_ascii=False`` no surrogate-pair ``\\u`` escape (which PromQL refuses)
    is made: any string, quotes and backslashes included, matches itself exactly."""
    return json.dumps(value, ensure_ascii=False)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class _Sample(BaseModel):
    metric: dict[str, str]
    value: tuple[float, str]  # (evaluation time, the value as Prometheus prints it)


class _Vector(BaseModel):
    resultType: Literal["vector"]
    result: list[_Sample]


class _Answer(BaseModel):
    """The API's envelope (https://prometheus.io/docs/prometheus/latest/querying/api/)."""

    status: Literal["success", "error"]
    data: _Vector | None = None
    errorType: str = ""
    error: str = ""


class PrometheusMetrics:
    """``MetricsProvider`` over the Prometheus HTTP API (see the module's docstring).

    ``url``: Prometheus' base URL (``http://prometheus-operated.monitoring.svc:9090``);
    ``selector``: extra equality matchers on the gateway's series (label -> value, e.g.
    ``{"namespace": "models", "job": "shipway-gateway"}``), so another gateway's series
    with the same deployment name are not counted; ``timeout_seconds``: per HTTP request;
    ``staleness_seconds``: a deployment whose newest sample is older is unavailable (a few
    scrape intervals); ``history_seconds``: how far back series count as having been
    there (stale rather than absent). ``transport``: httpx's, for tests.
    Raises ``ValueError`` for a bad label name or reserved label in ``selector``.
    """

    def __init__(
        self,
        url: str,
        selector: Mapping[str, str] | None = None,
        *,
        timeout_seconds: float = 5.0,
        staleness_seconds: float = 60.0,
        history_seconds: float = 3600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        extra = _matchers(selector or {})
        if not 0 < staleness_seconds < history_seconds:
            raise ValueError("need 0 < staleness_seconds < history_seconds")
        self.url = url.rstrip("/")
        self._extra = extra
        self._staleness = staleness_seconds
        self._history = history_seconds
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout_seconds, trust_env=False, transport=transport
        )

    def narrowed(self, selector: Mapping[str, str]) -> PrometheusMetrics:
        """The same provider (same Prometheus, settings and connection pool) with more
        matchers, e.g. ``{"namespace": ns}`` for the gateway of one ModelDeployment's
        namespace (the port's ``snapshot`` takes a name only). ``close`` one of them only
        when done with all. Raises ``ValueError`` as the constructor does."""
        other = copy.copy(self)
        other._extra = {**self._extra, **_matchers(selector)}
        return other

    def selector(self, deployment: str) -> str:
        """The matchers of one deployment's series, values escaped (``promql_string``)."""
        matchers = {**self._extra, "deployment": deployment}
        return ", ".join(
            [*(f"{name}={promql_string(value)}" for name, value in matchers.items()), 'variant!=""']
        )

    def queries(self, deployment: str) -> tuple[str, str, str]:
        """The queries of ``snapshot``: the newest scrape, the counters, the history."""
        names = "|".join(re.escape(name) for name, _ in FAMILIES)
        sel = f"__name__=~{promql_string(names)}, {self.selector(deployment)}"
        by = ", ".join(["__name__", "variant", *(label for _, label in FAMILIES)])
        return (
            f"max(timestamp({{{sel}}}))",
            f"sum by ({by}) ({{{sel}}})",
            f"count(last_over_time({{{sel}}}[{_duration(self._history)}]))",
        )

    def snapshot(self, deployment: str) -> Snapshot:
        """Cumulative counters per variant, summed over the gateway's replicas; ``{}``
        when Prometheus has no series of ``deployment``. Raises ``MetricsUnavailable``
        (see the module's docstring for when)."""
        at = time.time()
        newest_query, counters_query, history_query = self.queries(deployment)
        newest = self._query(newest_query, at, timestamps=True)
        if not newest:
            if self._query(history_query, at):
                raise MetricsUnavailable(
                    f"Prometheus at {self.url}: deployment {deployment!r}'s gateway series "
                    f"were scraped in the last {self._history:g}s but are stale now: the "
                    "gateway's target is down or no longer has them"
                )
            return {}
        age = at - max(when for _, when in newest)
        if age > self._staleness:
            raise MetricsUnavailable(
                f"Prometheus at {self.url}: the newest scrape of deployment {deployment!r}'s "
                f"gateway series is {age:.0f}s old (limit {self._staleness:g}s)"
            )
        samples = []
        for labels, value in self._query(counters_query, at):
            name = labels.pop("__name__", "")
            if name == series.BUCKETS and _number(labels.get("le", "")) is None:
                raise self._malformed(counters_query, f"a bucket with le={labels.get('le')!r}")
            samples.append(series.Sample(name, labels, value))
        return series.snapshot(samples)

    def _query(
        self, promql: str, at: float, timestamps: bool = False
    ) -> list[tuple[dict[str, str], float]]:
        """One instant query: each result's labels and value, checked (a counter: finite,
        not negative; ``timestamps``: a time in seconds since the epoch, finite)."""
        try:
            response = self._client.get("/api/v1/query", params={"query": promql, "time": at})
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(
                _line(f"Prometheus at {self.url} unreachable: {type(exc).__name__}: {exc}")
            ) from exc
        answer: _Answer | None = None
        problem = ""
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as exc:
            problem = _first_error(exc)
        if answer is not None and answer.status == "error":
            raise MetricsUnavailable(
                _line(
                    f"Prometheus at {self.url} answered {response.status_code} "
                    f"{answer.errorType}: {answer.error} (query: {promql})"
                )
            )
        if response.is_error:
            raise MetricsUnavailable(
                f"Prometheus at {self.url} answered HTTP {response.status_code} "
                f"{response.reason_phrase}"
            )
        if answer is None or answer.data is None:
            raise self._malformed(promql, problem or "no data")
        found = []
        for result in answer.data.result:
            value = _number(result.value[1])
            if value is None or not math.isfinite(value) or (value < 0 and not timestamps):
                raise MetricsUnavailable(
                    _line(
                        f"Prometheus at {self.url}: {result.value[1]!r} for {result.metric} "
                        f"is no {'time' if timestamps else 'counter value'} (query: {promql})"
                    )
                )
            found.append((result.metric, value))
        return found

    def _malformed(self, promql: str, reason: str) -> MetricsUnavailable:
        return MetricsUnavailable(
            _line(f"Prometheus at {self.url}: malformed answer ({reason}) to {promql}")
        )

    def close(self) -> None:
        self._client.close()


class NoMetrics:
    """The provider when no Prometheus is configured: every snapshot is unavailable, so
    every analysis is inconclusive (a rollout never advances on metrics it cannot see)."""

    def snapshot(self, deployment: str) -> Snapshot:
        raise MetricsUnavailable(
            "no Prometheus configured (SHIPWAY_OPERATOR_PROMETHEUS_URL is unset): "
            "rollout analyses are inconclusive"
        )

    def close(self) -> None:
        pass


def from_settings(settings: OperatorSettings) -> PrometheusMetrics | NoMetrics:
    """The operator's ``MetricsProvider``, as its settings say."""
    if settings.prometheus_url is None:
        return NoMetrics()
    return PrometheusMetrics(
        settings.prometheus_url,
        settings.prometheus_selector,
        timeout_seconds=settings.prometheus_timeout_seconds,
        staleness_seconds=settings.prometheus_staleness_seconds,
    )


def _matchers(selector: Mapping[str, str]) -> dict[str, str]:
    for name in selector:
        if not LABEL_NAME.fullmatch(name) or name in RESERVED_LABELS:
            raise ValueError(
                f"label {name!r} cannot select the gateway's series: a label name is "
                f"[a-zA-Z_][a-zA-Z0-9_]* and not one of {sorted(RESERVED_LABELS)}"
            )
    return dict(selector)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    return f"{exc.error_count()} problem(s); {where}: {first['msg']}"


def _line(text: str) -> str:
    """One line, of a sensible length, whatever Prometheus or httpx put in it."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 500 else flat[:497] + "..."
