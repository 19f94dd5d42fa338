"""Kubernetes API failures mapped, in one table, to kopf's two kinds of handler error.

Retriable (``kopf.TemporaryError``, kopf retries after ``delay``): conflicts (409),
throttling (429, after its Retry-After), server errors (5xx), lost connections, and
missing permissions (401/403: an administrator can grant them without touching the
resource). Permanent (``kopf.PermanentError``, no retry until the resource changes):
every other 4xx, e.g. 422 from admission or 400 for an object the server refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from shipway_operator.spec import InvalidSpec

RETRY_SECONDS = 10.0  # kopf's delay before retrying a temporary failure
PERMISSION_RETRY_SECONDS = 60.0


def api_message(exc: ApiException) -> str:
    """The API server's own message (its Status body), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def to_kopf(exc: BaseException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf error for a failure while doing ``what`` (e.g. "apply Deployment x")."""
    if isinstance(exc, InvalidSpec):
        return kopf.PermanentError(f"invalid spec: {exc}")
    if isinstance(exc, ApiException):
        code = exc.status or 0
        text = f"{what}: HTTP {code}: {api_message(exc)}"
        if code == 429:
            retry_after = (exc.headers or {}).get("Retry-After")
            delay = float(retry_after) if str(retry_after or "").isdigit() else RETRY_SECONDS
            return kopf.TemporaryError(text, delay=delay)
        if code in (401, 403):
            return kopf.TemporaryError(text, delay=PERMISSION_RETRY_SECONDS)
        if code == 409 or code >= 500 or code == 0:
            return kopf.TemporaryError(text, delay=RETRY_SECONDS)
        return kopf.PermanentError(text)
    if isinstance(exc, HTTPError | OSError):
        return kopf.TemporaryError(f"{what}: connection failed: {exc}", delay=RETRY_SECONDS)
    raise TypeError(f"not a Kubernetes API failure: {exc!r}") from exc


@contextmanager
def kube_errors(what: str) -> Iterator[None]:
    """Re-raise API, connection and spec failures inside as kopf's errors."""
    try:
        yield
    except (ApiException, HTTPError, OSError, InvalidSpec) as exc:
        raise to_kopf(exc, what) from exc
