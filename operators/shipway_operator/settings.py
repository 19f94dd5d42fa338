"""The operator's settings, read from ``SHIPWAY_OPERATOR_*`` variables.

Built once in the process's composition root (kopf's startup handler), never at import
time. The Kubernetes connection itself is the standard one: in-cluster service account,
else ``KUBECONFIG`` / ``~/.kube/config``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shipway import __version__
from shipway_operator.fetch import DEFAULT_MAX_BYTES
from shipway_operator.prometheus import LABEL_NAME, RESERVED_LABELS


class OperatorSettings(BaseSettings):
    """Field by field; each is ``SHIPWAY_OPERATOR_<FIELD>``."""

    # seconds are finite: "inf" would make a timer that never fires, a wait that never ends
    model_config = SettingsConfigDict(
        env_prefix="SHIPWAY_OPERATOR_", extra="ignore", allow_inf_nan=False
    )

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to serve, comma-separated; empty: the whole cluster.",
    )
    fetch_image: str = Field(
        f"ghcr.io/shipway/shipway-operator:{__version__}",
        min_length=1,
        description="Image of the init container that fetches http(s) model repositories "
        "(`python -m shipway_operator.fetch`): the operator's own image.",
    )
    models_size_limit: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1,
        description="Most bytes an http(s) model repository may take, its archive and "
        "unpacked tree together: the `models` emptyDir's sizeLimit and the fetch's "
        "--max-bytes. Default 20 GiB.",
    )
    status_retries: int = Field(
        5,
        ge=1,
        description="Attempts at a status write that lost a race with another writer "
        "(HTTP 409) before the reconcile is retried as a whole.",
    )
    resync_seconds: float = Field(
        300.0,
        gt=0,
        description="Seconds between resyncs, which apply every resource's whole desired "
        "state again (restores what a missed event left changed); resources changed in "
        "the last 10 s are left to their own handlers.",
    )
    rollout_start_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="Seconds a candidate's replicas may take to become ready before its "
        "rollout fails, having served nothing.",
    )
    rollout_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="Seconds between passes of a rollout that waits on the cluster "
        "(replicas starting, a write that failed); analyses run at the strategy's "
        "intervalSeconds.",
    )
    liveness_endpoint: str | None = Field(
        None,
        description="kopf's liveness probe endpoint, e.g. http://0.0.0.0:8080/healthz; "
        "unset: none.",
    )
    prometheus_url: str | None = Field(
        None,
        min_length=1,
        description="Base URL of the Prometheus that scrapes the gateway, e.g. "
        "http://prometheus-operated.monitoring.svc:9090; unset: no metrics, every rollout "
        "analysis is inconclusive (metrics unavailable: a rollout is rolled back after "
        "consecutiveErrorLimit analyses without them).",
    )
    prometheus_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra label matchers on the gateway's series in Prometheus, "
        "`label=value` comma-separated (e.g. `namespace=models,job=shipway-gateway`), so "
        "another gateway's series of a same-named deployment are not counted; empty: none.",
    )
    prometheus_namespace_label: str = Field(
        "namespace",
        description="The label that names the gateway's namespace on its series (what a "
        "ServiceMonitor or Kubernetes service discovery relabelling puts there): each "
        "rollout reads the series of its own namespace's gateway. Empty: no such "
        "matcher (one gateway, one namespace).",
    )
    prometheus_timeout_seconds: float = Field(
        5.0, gt=0, description="Seconds for one Prometheus query (connect and answer)."
    )
    prometheus_staleness_seconds: float = Field(
        60.0,
        gt=0,
        lt=3600,
        description="Seconds: a deployment whose newest gateway sample in Prometheus is "
        "older has its metrics unavailable (the analysis is inconclusive). A few scrape "
        "intervals; below the provider's one-hour history window.",
    )

    @field_validator("prometheus_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value

    @field_validator("prometheus_selector", mode="before")
    @classmethod
    def _matchers(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        if bad := [p for p in pairs if "=" not in p or not p.split("=", 1)[0].strip()]:
            raise ValueError(f"expected label=value pairs, comma-separated; got {bad[0]!r}")
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}

    @field_validator("prometheus_selector")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not LABEL_NAME.fullmatch(name) or name in RESERVED_LABELS:
                raise ValueError(
                    f"{name!r} is no label to select by: [a-zA-Z_][a-zA-Z0-9_]*, "
                    f"not one of {sorted(RESERVED_LABELS)}"
                )
        return value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value
