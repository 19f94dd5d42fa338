"""Signed webhooks, delivered at least once.

The body is JSON; ``X-Shipway-Signature: sha256=<hex>`` is the HMAC-SHA256 of the
exact body bytes under the shared secret, and ``X-Shipway-Event`` the event id, the
same on every attempt, so a receiver can drop repeats (idempotency is by event id).
Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; any
other 4xx is the receiver refusing this event, and is not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Shipway-Signature"
EVENT_HEADER = "X-Shipway-Event"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: constant-time comparison with the expected signature."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status: int | None
    error: str | None = None


def send(
    url: str,
    secret: str,
    event_id: str,
    payload: dict[str, Any],
    attempts: int = 5,
    backoff: float = 0.5,
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    body = json.dumps({"id": event_id, **payload}, sort_keys=True, default=str).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        EVENT_HEADER: event_id,
    }
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
            status, error = response.status_code, None
            if response.is_success:
                return Delivery(True, attempt, status)
            if status != 429 and status < 500:
                return Delivery(False, attempt, status, f"refused with {status}")
            error = f"answered {status}"
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        log.warning("webhook %s attempt %d failed: %s", url, attempt, error)
        if attempt < attempts:
            sleep(backoff * 2 ** (attempt - 1))
    return Delivery(False, attempts, status, error)
