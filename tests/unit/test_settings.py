from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shipway.settings import DEV_TOKEN, Role, Settings


def test_embedded_defaults_live_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'shipway.db'}"
    assert s.resolved_broker_url.startswith("sqla+sqlite:///")
    assert s.resolved_mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.resolved_artifact_root == (tmp_path / "mlartifacts").as_uri()
    assert s.api_tokens == {DEV_TOKEN: Role.ADMIN}


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path))
    monkeypatch.setenv("SHIPWAY_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SHIPWAY_API_TOKENS", "alice=admin, bob=viewer")
    monkeypatch.setenv("SHIPWAY_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = Settings()
    assert s.home == tmp_path
    assert s.resolved_broker_url == "redis://127.0.0.1:6379/0"
    assert s.api_tokens == {"alice": Role.ADMIN, "bob": Role.VIEWER}
    assert s.resolved_artifact_root is None  # a tracking server chooses its store


def test_tokens_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPWAY_API_TOKENS", '{"t1": "deployer"}')
    assert Settings().api_tokens == {"t1": Role.DEPLOYER}


@pytest.mark.parametrize("raw", ["justatoken", '{"t": "superuser"}'])
def test_bad_tokens_are_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SHIPWAY_API_TOKENS", raw)
    with pytest.raises(ValidationError):
        Settings()


def test_production_refuses_the_development_token() -> None:
    with pytest.raises(ValidationError, match="development token is refused"):
        Settings(environment="production")
    assert Settings(environment="production", api_tokens={"real": "admin"}).api_tokens


def test_the_gateway_namespace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Set, else the control plane's namespace when set, else the pod's own, else default."""
    from shipway import settings as module

    for name in ("SHIPWAY_GATEWAY_NAMESPACE", "SHIPWAY_KUBERNETES_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    own = tmp_path / "namespace"
    monkeypatch.setattr(module, "SERVICE_ACCOUNT_NAMESPACE", own)
    assert Settings().resolved_gateway_namespace == "default"
    own.write_text("ml-serving\n")
    assert Settings().resolved_gateway_namespace == "ml-serving"
    monkeypatch.setenv("SHIPWAY_KUBERNETES_NAMESPACE", "models")
    assert Settings().resolved_gateway_namespace == "models"
    monkeypatch.setenv("SHIPWAY_GATEWAY_NAMESPACE", "edge")
    assert Settings().resolved_gateway_namespace == "edge"
    monkeypatch.setenv("SHIPWAY_GATEWAY_NAMESPACE", "Not_A_Namespace")
    with pytest.raises(ValueError, match="gateway_namespace"):
        Settings()
