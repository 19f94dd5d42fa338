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
