"""Signed webhooks against a real local HTTP receiver: retried on 5xx with the same
event id, never on a refusal, signature checkable by the receiver."""

from __future__ import annotations

import pytest

from shipway.notify import webhook
from tests.support.webhook import receiver

pytestmark = pytest.mark.integration


def test_retried_on_5xx_with_one_event_id_and_a_valid_signature() -> None:
    with receiver([500, 503]) as (url, calls):
        delivery = webhook.send(url, "s3cret", "evt-1", {"event": "drift.detected"}, backoff=0.01)
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 200
    assert len(calls) == 3
    assert {h[webhook.EVENT_HEADER] for h, _ in calls} == {"evt-1"}
    assert len({body for _, body in calls}) == 1  # the same bytes every time
    headers, body = calls[-1]
    assert webhook.verify("s3cret", body, headers[webhook.SIGNATURE_HEADER])
    assert b'"id": "evt-1"' in body


def test_a_refusal_is_not_retried_and_a_dead_receiver_gives_up() -> None:
    with receiver([400]) as (url, calls):
        delivery = webhook.send(url, "s", "evt-2", {}, backoff=0.01)
    assert not delivery.delivered and delivery.attempts == 1 and len(calls) == 1
    gone = webhook.send("http://127.0.0.1:9/hook", "s", "evt-3", {}, attempts=3, backoff=0.01)
    assert not gone.delivered and gone.attempts == 3 and "ConnectError" in (gone.error or "")
