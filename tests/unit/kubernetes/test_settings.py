"""Kubernetes mode's settings, from the environment as processes read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shipway.settings import DEV_TOKEN, Runtime, Settings


def test_local_is_the_default(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, _env_file=None)
    assert s.runtime is Runtime.LOCAL
    assert s.kubernetes_namespace == "default" and s.kubeconfig is None
    assert s.resolved_public_api_url == "http://127.0.0.1:8700"


def test_kubernetes_mode_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path))
    monkeypatch.setenv("SHIPWAY_RUNTIME", "kubernetes")
    monkeypatch.setenv("SHIPWAY_KUBERNETES_NAMESPACE", "models")
    monkeypatch.setenv("SHIPWAY_KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("SHIPWAY_KUBERNETES_NODE_SELECTOR", "type=kwok, pool=cpu")
    monkeypatch.setenv("SHIPWAY_PUBLIC_API_URL", "https://shipway.models.svc:8700/")
    s = Settings()
    assert s.runtime is Runtime.KUBERNETES
    assert s.kubernetes_namespace == "models"
    assert s.kubeconfig == tmp_path / "kubeconfig"
    assert s.kubernetes_node_selector == {"type": "kwok", "pool": "cpu"}
    assert s.resolved_public_api_url == "https://shipway.models.svc:8700"
    monkeypatch.setenv("SHIPWAY_KUBERNETES_NODE_SELECTOR", '{"gpu": "a100"}')
    assert Settings().kubernetes_node_selector == {"gpu": "a100"}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SHIPWAY_RUNTIME", "nomad", "runtime"),
        ("SHIPWAY_KUBERNETES_NAMESPACE", "Not_A_Namespace", "kubernetes_namespace"),
        ("SHIPWAY_KUBERNETES_NODE_SELECTOR", "type", "SHIPWAY_KUBERNETES_NODE_SELECTOR"),
        ("SHIPWAY_ARCHIVE_KEY", "short", "archive_key"),
    ],
)
def test_bad_values_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_production_on_kubernetes_needs_its_own_archive_key(tmp_path: Path) -> None:
    production = {
        "home": tmp_path,
        "environment": "production",
        "api_tokens": {"t0k3n": "admin"},
        "_env_file": None,
    }
    with pytest.raises(ValidationError, match="SHIPWAY_ARCHIVE_KEY"):
        Settings(runtime="kubernetes", **production)
    assert Settings(runtime="kubernetes", archive_key="k" * 32, **production).archive_key
    assert Settings(**production).runtime is Runtime.LOCAL  # local mode serves no archives
    assert DEV_TOKEN not in Settings(**production).api_tokens
