"""What a drift breach does, per deployment: a pure decision over the latest verdicts.

A breach is the move of a variant into "drift" (not every check while it stays
there), so one shift raises one event, one webhook call and at most one rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shipway.errors import InvalidInput


class Action(StrEnum):
    ALERT = "alert"  # an audit event and a warning in the log
    WEBHOOK = "webhook"  # a signed POST to the retraining hook
    ROLLBACK = "rollback"  # stable goes back to the build it replaced


@dataclass(frozen=True)
class Policy:
    actions: tuple[Action, ...] = (Action.ALERT,)
    webhook_url: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Policy:
        data = data or {}
        try:
            actions = tuple(Action(a) for a in data.get("actions", ["alert"]))
        except ValueError:
            choices = ", ".join(a.value for a in Action)
            raise InvalidInput(f"drift policy actions must be among {choices}") from None
        url = data.get("webhook_url")
        if Action.WEBHOOK in actions and not url:
            raise InvalidInput("a webhook action needs webhook_url")
        if url and not str(url).startswith(("http://", "https://")):
            raise InvalidInput(f"webhook_url must be an http(s) URL, got {url!r}")
        return cls(actions, url)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": [a.value for a in self.actions], "webhook_url": self.webhook_url}


def breach_actions(
    previous: str | None, current: str, variant: str, policy: Policy
) -> list[Action]:
    """The actions due now. Rollback applies to the stable variant only: a drifting
    canary is a rollout check, not a reason to move stable."""
    if current != "drift" or previous == "drift":
        return []
    return [a for a in policy.actions if a is not Action.ROLLBACK or variant == "stable"]
