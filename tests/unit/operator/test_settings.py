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
