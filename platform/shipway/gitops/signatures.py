"""Who sent a webhook: the signature checks of GitHub, GitLab and MLflow deliveries.

Pure functions over the raw body and header values; each raises ``BadSignature`` with
the reason (the API answers 401 with it and records nothing). Every comparison is
constant-time (``hmac.compare_digest``), so a caller cannot find a secret byte by byte
from response times.

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` under the
  webhook's secret (GitHub docs, "Validating webhook deliveries").
- GitLab: ``X-Gitlab-Token`` is the webhook's secret token itself (GitLab sends no
  signature; the token is compared as a whole).
- MLflow 3: ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over
  ``<X-MLflow-Delivery-Id>.<X-MLflow-Timestamp>.<raw body>``
  (``mlflow.webhooks.delivery._generate_hmac_signature``; the Standard Webhooks scheme).
  The timestamp is signed too, and a delivery more than ``MLFLOW_TOLERANCE_SECONDS``
  away from now is refused: a captured delivery cannot be replayed once it has left
  that window (within it, the delivery id's uniqueness refuses a replay).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

# Standard Webhooks' recommended tolerance, which MLflow's delivery follows (its retries
# reuse the delivery's timestamp and back off at most 60 s, three times: well inside).
MLFLOW_TOLERANCE_SECONDS = 300
# Whole seconds since the epoch, at most 12 digits (until the year 33658): bounded before
# int() so that a huge header cannot cost time or overflow the float arithmetic below.
TIMESTAMP = re.compile(r"[0-9]{1,12}")

GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITLAB_TOKEN_HEADER = "X-Gitlab-Token"
MLFLOW_SIGNATURE_HEADER = "X-MLflow-Signature"
MLFLOW_TIMESTAMP_HEADER = "X-MLflow-Timestamp"
MLFLOW_DELIVERY_HEADER = "X-MLflow-Delivery-Id"


class BadSignature(Exception):
    """The delivery is not proven to come from the configured sender; the message says
    why (missing header, wrong scheme, mismatch, stale timestamp), never the secret."""


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secret: str, body: bytes, header: str | None) -> None:
    if not header:
        raise BadSignature(f"missing {GITHUB_SIGNATURE_HEADER} header")
    if not header.startswith("sha256="):
        raise BadSignature(f"{GITHUB_SIGNATURE_HEADER} must be 'sha256=<hex>'")
    if not hmac.compare_digest(github_signature(secret, body).encode(), header.encode()):
        raise BadSignature(f"{GITHUB_SIGNATURE_HEADER} does not match the body")


def verify_gitlab(token: str, header: str | None) -> None:
    if not header:
        raise BadSignature(f"missing {GITLAB_TOKEN_HEADER} header")
    if not hmac.compare_digest(token.encode(), header.encode()):
        raise BadSignature(f"{GITLAB_TOKEN_HEADER} is not the configured token")


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends (``v1,<base64>``)."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_mlflow(
    secret: str,
    body: bytes,
    delivery_id: str | None,
    timestamp: str | None,
    header: str | None,
    now: float,
    tolerance: float = MLFLOW_TOLERANCE_SECONDS,
) -> None:
    """``now``: seconds since the epoch (the caller's clock, so this stays pure).

    The header may hold several space-separated signatures (Standard Webhooks, for secret
    rotation); one matching is enough. Only ``v1`` signatures count."""
    for name, value in (
        (MLFLOW_DELIVERY_HEADER, delivery_id),
        (MLFLOW_TIMESTAMP_HEADER, timestamp),
        (MLFLOW_SIGNATURE_HEADER, header),
    ):
        if not value:
            raise BadSignature(f"missing {name} header")
    assert delivery_id and timestamp and header  # narrowed above
    if not TIMESTAMP.fullmatch(timestamp):
        raise BadSignature(
            f"{MLFLOW_TIMESTAMP_HEADER} must be whole seconds since the epoch (at most 12 digits)"
        )
    age = now - int(timestamp)
    if abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise BadSignature(
            f"{MLFLOW_TIMESTAMP_HEADER} is {abs(age):.0f} s {when}; deliveries are accepted "
            f"within {tolerance:.0f} s of now"
        )
    candidates = [part for part in header.split() if part.startswith("v1,")]
    if not candidates:
        raise BadSignature(f"{MLFLOW_SIGNATURE_HEADER} must be 'v1,<base64>'")
    expected = mlflow_signature(secret, delivery_id, timestamp, body)
    for candidate in candidates:
        try:
            base64.b64decode(candidate[3:], validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected.encode(), candidate.encode()):
            return
    raise BadSignature(f"{MLFLOW_SIGNATURE_HEADER} does not match the delivery")
