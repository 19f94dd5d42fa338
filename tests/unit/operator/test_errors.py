"""One table from API failures to kopf's retry-or-give-up."""

from __future__ import annotations

import json

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from shipway_operator.errors import kube_errors, to_kopf
from shipway_operator.spec import InvalidSpec


def _api(status: int, message: str = "boom", headers: dict | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize("code", [409, 500, 503, 504])
def test_conflicts_and_server_errors_are_retried(code: int) -> None:
    error = to_kopf(_api(code, "try again"), "apply Deployment ns/x")
    assert isinstance(error, kopf.TemporaryError)
    assert str(error) == f"apply Deployment ns/x: HTTP {code}: try again"


def test_throttling_is_retried_after_its_retry_after() -> None:
    error = to_kopf(_api(429, headers={"Retry-After": "7"}), "apply")
    assert isinstance(error, kopf.TemporaryError) and error.delay == 7.0


@pytest.mark.parametrize("code", [400, 404, 422])
def test_refusals_are_permanent_with_the_servers_message(code: int) -> None:
    error = to_kopf(_api(code, 'Deployment "x" is invalid: spec.replicas'), "apply")
    assert isinstance(error, kopf.PermanentError)
    assert 'Deployment "x" is invalid: spec.replicas' in str(error)


def test_missing_permissions_wait_for_an_administrator() -> None:
    error = to_kopf(_api(403, "forbidden"), "apply")
    assert isinstance(error, kopf.TemporaryError) and error.delay == 60.0


def test_lost_connections_are_retried() -> None:
    error = to_kopf(MaxRetryError(None, "/apis", "refused"), "apply")
    assert isinstance(error, kopf.TemporaryError)


def test_invalid_spec_is_permanent() -> None:
    with (
        pytest.raises(kopf.PermanentError, match=r"invalid spec: spec\.build: Field required"),
        kube_errors("reconcile"),
    ):
        raise InvalidSpec("spec.build: Field required")


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(TypeError, match="not a Kubernetes API failure"):
        to_kopf(ValueError("x"), "apply")
