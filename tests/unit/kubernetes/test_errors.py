"""API server failures as Shipway's errors, in one table; the server's own message kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from shipway.errors import Conflict, InvalidInput, NotFound, ShipwayError, Unavailable
from shipway.kubernetes.model_deployments import api_client, shipway_error
from shipway.settings import Settings


def failure(status: int, message: str | None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message}) if message else "not json"
    return exc


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, NotFound),
        (409, Conflict),
        (422, InvalidInput),
        (400, InvalidInput),
        (401, Unavailable),
        (403, Unavailable),
        (429, Unavailable),
        (500, Unavailable),
        (503, Unavailable),
    ],
)
def test_status_to_error(status: int, kind: type[ShipwayError]) -> None:
    error = shipway_error(failure(status, "the server's sentence"), "deployment 'web'")
    assert type(error) is kind
    assert "the server's sentence" in str(error)


def test_without_a_status_body_the_reason_is_the_message() -> None:
    assert "Reason" in str(shipway_error(failure(422, None), "deployment 'web'"))


def test_a_kubeconfig_that_is_not_there_is_unavailable_naming_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kubeconfig=tmp_path / "nope.yaml", _env_file=None)
    with pytest.raises(Unavailable, match=r"nope\.yaml"):
        api_client(settings)
