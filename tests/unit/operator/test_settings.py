from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipway_operator.settings import OperatorSettings


def test_namespaces_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPWAY_OPERATOR_NAMESPACES", "models, staging,")
    assert OperatorSettings().namespaces == ["models", "staging"]


def test_cluster_wide_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPWAY_OPERATOR_NAMESPACES", raising=False)
    assert OperatorSettings().namespaces == []


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPWAY_OPERATOR_STATUS_RETRIES", "0")
    with pytest.raises(ValidationError, match="status_retries"):
        OperatorSettings()


def test_models_size_limit_defaults_to_20_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPWAY_OPERATOR_MODELS_SIZE_LIMIT", raising=False)
    assert OperatorSettings().models_size_limit == 20 * 2**30
    monkeypatch.setenv("SHIPWAY_OPERATOR_MODELS_SIZE_LIMIT", str(2**30))
    assert OperatorSettings().models_size_limit == 2**30


def test_prometheus_is_unset_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "SELECTOR", "TIMEOUT_SECONDS", "STALENESS_SECONDS"):
        monkeypatch.delenv(f"SHIPWAY_OPERATOR_PROMETHEUS_{name}", raising=False)
    settings = OperatorSettings()
    assert settings.prometheus_url is None
    assert settings.prometheus_selector == {}
    assert (settings.prometheus_timeout_seconds, settings.prometheus_staleness_seconds) == (5, 60)


def test_prometheus_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_URL", "http://prometheus.monitoring:9090")
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_SELECTOR", " namespace=models, job=a=b ,")
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("SHIPWAY_OPERATOR_PROMETHEUS_STALENESS_SECONDS", "30")
    settings = OperatorSettings()
    assert settings.prometheus_url == "http://prometheus.monitoring:9090"
    assert settings.prometheus_selector == {"namespace": "models", "job": "a=b"}
    assert (settings.prometheus_timeout_seconds, settings.prometheus_staleness_seconds) == (2.5, 30)


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("SELECTOR", "namespace", "prometheus_selector"),  # no value
        ("SELECTOR", "=models", "prometheus_selector"),  # no label
        ("SELECTOR", "deployment=web", "prometheus_selector"),  # the provider's own
        ("SELECTOR", "name-space=models", "prometheus_selector"),  # no label name
        ("TIMEOUT_SECONDS", "0", "prometheus_timeout_seconds"),
        ("STALENESS_SECONDS", "-1", "prometheus_staleness_seconds"),
        ("STALENESS_SECONDS", "3600", "prometheus_staleness_seconds"),  # the history window
        ("URL", "", "prometheus_url"),
        ("URL", "prometheus.monitoring:9090", "prometheus_url"),  # no scheme
    ],
)
def test_bad_prometheus_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(f"SHIPWAY_OPERATOR_PROMETHEUS_{variable}", value)
    with pytest.raises(ValidationError, match=field):
        OperatorSettings()


@pytest.mark.parametrize(
    "variable",
    [
        "SHIPWAY_OPERATOR_ROLLOUT_POLL_SECONDS",
        "SHIPWAY_OPERATOR_ROLLOUT_START_TIMEOUT_SECONDS",
        "SHIPWAY_OPERATOR_PROMETHEUS_TIMEOUT_SECONDS",
        "SHIPWAY_OPERATOR_RESYNC_SECONDS",
    ],
)
def test_seconds_must_be_finite(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "inf")
    with pytest.raises(ValidationError, match="finite"):
        OperatorSettings()
