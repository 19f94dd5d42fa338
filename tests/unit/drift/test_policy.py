from __future__ import annotations

import pytest

from shipway.drift.policy import Action, Policy, breach_actions
from shipway.errors import InvalidInput
from shipway.notify.webhook import signature, verify

ALL = Policy((Action.ALERT, Action.WEBHOOK, Action.ROLLBACK), "http://hook")


def test_only_the_move_into_drift_acts() -> None:
    assert breach_actions("no-drift", "drift", "stable", ALL) == list(ALL.actions)
    assert breach_actions(None, "drift", "stable", ALL) == list(ALL.actions)
    assert breach_actions("drift", "drift", "stable", ALL) == []  # still drifting: done
    assert breach_actions("drift", "no-drift", "stable", ALL) == []
    assert breach_actions("no-drift", "insufficient-data", "stable", ALL) == []


def test_a_drifting_canary_never_moves_stable() -> None:
    assert breach_actions("no-drift", "drift", "canary", ALL) == [Action.ALERT, Action.WEBHOOK]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"actions": ["page"]}, "must be among alert, webhook, rollback"),
        ({"actions": ["webhook"]}, "needs webhook_url"),
        ({"actions": ["webhook"], "webhook_url": "ftp://x"}, "http\\(s\\) URL"),
    ],
)
def test_bad_policies_are_refused(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        Policy.from_dict(data)


def test_policy_round_trip_and_default() -> None:
    assert Policy.from_dict(ALL.to_dict()) == ALL
    assert Policy.from_dict(None).actions == (Action.ALERT,)


def test_signatures() -> None:
    body = b'{"id": "e1"}'
    header = signature("s3cret", body)
    assert header.startswith("sha256=") and verify("s3cret", body, header)
    assert not verify("other", body, header) and not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, None)
