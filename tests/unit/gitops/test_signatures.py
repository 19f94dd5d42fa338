"""Signature checks against signatures computed independently: ``hmac`` by hand for
GitHub, and MLflow's own ``_generate_hmac_signature`` for MLflow deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from shipway.gitops import signatures
from shipway.gitops.signatures import BadSignature

SECRET = "It's a Secret to Everybody"
BODY = b'{"ref": "refs/heads/main", "after": "' + b"a" * 40 + b'"}'
NOW = 1_780_000_000


def github_header(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_example_from_its_documentation() -> None:
    # GitHub's docs, "Validating webhook deliveries": secret and payload below give this.
    assert signatures.github_signature(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_github_valid() -> None:
    signatures.verify_github(SECRET, BODY, github_header(SECRET, BODY))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("", "missing X-Hub-Signature-256"),
        (github_header("wrong secret", BODY), "does not match"),
        (github_header(SECRET, BODY + b" "), "does not match"),  # tampered body
        (github_header(SECRET, BODY).upper().replace("SHA256=", "sha256="), "does not match"),
        ("sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(), "sha256=<hex>"),
        (github_header(SECRET, BODY).removeprefix("sha256="), "sha256=<hex>"),
    ],
)
def test_github_refused(header: str | None, reason: str) -> None:
    with pytest.raises(BadSignature, match=reason):
        signatures.verify_github(SECRET, BODY, header)


def test_gitlab_token() -> None:
    signatures.verify_gitlab("tok3n", "tok3n")
    for header, reason in ((None, "missing"), ("", "missing"), ("tok3", "not the configured")):
        with pytest.raises(BadSignature, match=reason):
            signatures.verify_gitlab("tok3n", header)
    with pytest.raises(BadSignature, match="not the configured"):
        signatures.verify_gitlab("tok3n", "tok3n ")


def mlflow_delivery(
    secret: str = SECRET, delivery_id: str = "3f1c", timestamp: int = NOW
) -> tuple[bytes, str, str, str]:
    """As MLflow sends one: the JSON text, its UTF-8 bytes as the body."""
    payload = json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "timestamp": "2026-11-30T12:00:00+00:00",
            "data": {"name": "m", "version": "1", "description": "é"},
        }
    )
    signature = _generate_hmac_signature(secret, delivery_id, str(timestamp), payload)
    return payload.encode("utf-8"), delivery_id, str(timestamp), signature


def test_mlflow_valid_as_mlflow_signs() -> None:
    body, delivery, timestamp, signature = mlflow_delivery()
    assert signature == signatures.mlflow_signature(SECRET, delivery, timestamp, body)
    signatures.verify_mlflow(SECRET, body, delivery, timestamp, signature, NOW)
    # within the window, either way
    signatures.verify_mlflow(SECRET, body, delivery, timestamp, signature, NOW + 300)
    signatures.verify_mlflow(SECRET, body, delivery, timestamp, signature, NOW - 300)
    # several signatures (secret rotation): one valid is enough
    other = mlflow_delivery("old secret")[3]
    signatures.verify_mlflow(SECRET, body, delivery, timestamp, f"{other} {signature}", NOW)


def test_mlflow_refused() -> None:
    body, delivery, timestamp, signature = mlflow_delivery()

    def refused(reason: str, **changes: object) -> None:
        values: dict[str, object] = {
            "secret": SECRET,
            "body": body,
            "delivery_id": delivery,
            "timestamp": timestamp,
            "header": signature,
            "now": NOW,
        }
        values.update(changes)
        with pytest.raises(BadSignature, match=reason):
            signatures.verify_mlflow(**values)  # type: ignore[arg-type]

    refused("does not match", secret="wrong")
    refused("does not match", body=body.replace(b'"1"', b'"2"'))  # tampered body
    refused("does not match", delivery_id="3f1d")  # another delivery's id
    refused("must be whole seconds", timestamp="17e8")
    refused("must be whole seconds", timestamp="-1")
    # huge numbers are refused before any arithmetic (they overflowed, or int() refused them)
    refused("must be whole seconds", timestamp="9" * 400)
    refused("must be whole seconds", timestamp="1" * 5000)
    refused("must be whole seconds", timestamp="1" * 13)
    refused("must be whole seconds", timestamp="\u0661\u0662")  # Arabic-Indic digits
    refused("missing X-MLflow-Delivery-Id", delivery_id=None)
    refused("missing X-MLflow-Timestamp", timestamp="")
    refused("missing X-MLflow-Signature", header=None)
    refused("must be 'v1,<base64>'", header=signature.replace("v1,", "v2,"))
    refused("must be 'v1,<base64>'", header=signature.removeprefix("v1,"))
    refused("does not match", header="v1,not-base64!!")
    # expired, and from the future: 301 s away
    refused("301 s old", now=NOW + 301)
    refused("301 s in the future", now=NOW - 301)
    # a timestamp moved into the window breaks the signature, since it is signed
    refused("does not match", timestamp=str(NOW + 1))


def test_mlflow_signature_is_hmac_sha256_base64() -> None:
    expected = hmac.new(SECRET.encode(), b"d.1.{}", hashlib.sha256).digest()
    assert signatures.mlflow_signature(SECRET, "d", "1", b"{}") == (
        "v1," + base64.b64encode(expected).decode()
    )
