"""What a webhook delivery says: GitHub and GitLab push events, MLflow registry events.

Pure parsing of header values and the raw body (after the signature was checked). A
body that is not the event it claims to be raises ``InvalidPayload`` naming the field
(the API answers 400 and records nothing). An event Shipway does not act on (another
kind of event, a tag, a deleted branch, another branch, another registry event) parses
fine and carries ``ignored``: the reason, recorded and answered, never an error.

Sources: GitHub "Webhook events and payloads" (push: ``ref``, ``after``, ``deleted``,
``repository.full_name``; headers ``X-GitHub-Event``, ``X-GitHub-Delivery``); GitLab
"Webhook events" (``object_kind: push``, ``ref``, ``after``, ``project.path_with_namespace``;
headers ``X-Gitlab-Event: Push Hook``, ``X-Gitlab-Event-UUID``); MLflow 3
``mlflow.webhooks.delivery`` and ``mlflow.webhooks.types`` (body ``{entity, action,
timestamp, data}``; headers ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GITHUB_EVENT_HEADER = "X-GitHub-Event"
GITHUB_DELIVERY_HEADER = "X-GitHub-Delivery"
GITLAB_EVENT_HEADER = "X-Gitlab-Event"
GITLAB_DELIVERY_HEADER = "X-Gitlab-Event-UUID"
MLFLOW_DELIVERY_HEADER = "X-MLflow-Delivery-Id"

# A delivery id is stored and shown: a bounded, printable token (GitHub and GitLab send
# UUIDs, MLflow a UUID4).
DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
# SHA-1 or SHA-256 object names, lower-case hex (as both providers send them)
COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"

# Upper bounds of what is stored (the columns of ``store.models.HookDelivery``, which a unit
# test compares with these): a longer value is refused here, naming the field, rather than
# failing in the database. Versions are PostgreSQL ``integer``s.
MAX_EVENT = 100
MAX_REF = 300
MAX_REPOSITORY = 300
MAX_MODEL = 200
MAX_ALIAS = 200
MAX_VERSION = 2**31 - 1
VERSION = re.compile(r"[0-9]{1,10}")
# Control characters (NUL among them: PostgreSQL text cannot hold it) in a stored string
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MODEL_VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"
MLFLOW_TRIGGER_EVENTS = (MODEL_VERSION_CREATED, ALIAS_CREATED)


class InvalidPayload(ValueError):
    """The delivery's headers or body are not what its event promises; names the field."""


@dataclass(frozen=True)
class PushEvent:
    """One Git delivery. ``ref``/``commit``/``repository`` are None for a non-push event;
    ``ignored`` is the reason Shipway does not apply it, None for a push to apply."""

    provider: str  # github | gitlab
    delivery_id: str
    event: str
    ref: str | None = None
    commit: str | None = None
    repository: str | None = None
    deleted: bool = False
    ignored: str | None = None


@dataclass(frozen=True)
class RegistryEvent:
    """One MLflow delivery: ``event`` is ``<entity>.<action>``; model/version/alias are
    set for the two events that may trigger builds."""

    delivery_id: str
    event: str
    model: str | None = None
    version: int | None = None
    alias: str | None = None
    ignored: str | None = None


def provider_of(headers: Mapping[str, str]) -> str | None:
    """``github`` or ``gitlab`` by the event header each sends; None for neither."""
    lowered = _lower(headers)
    if GITHUB_EVENT_HEADER.lower() in lowered:
        return "github"
    if GITLAB_EVENT_HEADER.lower() in lowered:
        return "gitlab"
    return None


def parse_git(provider: str, headers: Mapping[str, str], body: bytes, branch: str) -> PushEvent:
    """A GitHub or GitLab delivery; ``branch``: the one whose pushes are applied."""
    lowered = _lower(headers)
    if provider == "github":
        event_header, delivery_header, push_event = (
            GITHUB_EVENT_HEADER,
            GITHUB_DELIVERY_HEADER,
            "push",
        )
    else:
        event_header, delivery_header, push_event = (
            GITLAB_EVENT_HEADER,
            GITLAB_DELIVERY_HEADER,
            "Push Hook",
        )
    event = _header(lowered, event_header, MAX_EVENT)
    delivery_id = _delivery_id(lowered, delivery_header)
    if event != push_event:
        return PushEvent(
            provider, delivery_id, event, ignored=f"{event!r} events are not applied (only pushes)"
        )
    payload = _json(body)
    ref = _string(payload, "ref", max_length=MAX_REF)
    after = _string(payload, "after", max_length=64)
    if not COMMIT.match(after):
        raise InvalidPayload("after must be a commit id (40 or 64 lower-case hex digits)")
    if provider == "github":
        repository = _string(
            _object(payload, "repository"), "full_name", "repository.", MAX_REPOSITORY
        )
        deleted = payload.get("deleted") is True or set(after) == {"0"}
    else:
        repository = _string(
            _object(payload, "project"), "path_with_namespace", "project.", MAX_REPOSITORY
        )
        deleted = set(after) == {"0"}
    push = PushEvent(provider, delivery_id, event, ref, after, repository, deleted)
    return _with_reason(push, _ignore_reason(ref, deleted, branch))


def _ignore_reason(ref: str, deleted: bool, branch: str) -> str | None:
    if ref.startswith(TAG_PREFIX):
        return f"tag push ({ref}); only pushes to branch {branch!r} are applied"
    if not ref.startswith(BRANCH_PREFIX):
        return f"ref {ref!r} is not a branch; only pushes to branch {branch!r} are applied"
    name = ref.removeprefix(BRANCH_PREFIX)
    if name != branch:
        return f"push to branch {name!r}; only pushes to branch {branch!r} are applied"
    if deleted:
        return f"branch {branch!r} was deleted; nothing to apply"
    return None


def parse_mlflow(headers: Mapping[str, str], body: bytes) -> RegistryEvent:
    lowered = _lower(headers)
    delivery_id = _delivery_id(lowered, MLFLOW_DELIVERY_HEADER)
    payload = _json(body)
    entity = _string(payload, "entity", max_length=MAX_EVENT)
    event = f"{entity}.{_string(payload, 'action', max_length=MAX_EVENT)}"
    if len(event) > MAX_EVENT:
        raise InvalidPayload(f"entity and action must be at most {MAX_EVENT} characters together")
    if event not in MLFLOW_TRIGGER_EVENTS:
        return RegistryEvent(
            delivery_id,
            event,
            ignored=f"{event!r} events start nothing; only {' and '.join(MLFLOW_TRIGGER_EVENTS)}",
        )
    data = _object(payload, "data")
    model = _string(data, "name", "data.", MAX_MODEL)
    version_text = _string(data, "version", "data.")
    # the digits are bounded before int(): Python refuses more than 4300 of them
    if not VERSION.fullmatch(version_text) or not 1 <= int(version_text) <= MAX_VERSION:
        shown = version_text if len(version_text) <= 20 else version_text[:20] + "..."
        raise InvalidPayload(
            f"data.version must be a whole number from 1 to {MAX_VERSION}, got {shown!r}"
        )
    alias = _string(data, "alias", "data.", MAX_ALIAS) if event == ALIAS_CREATED else None
    return RegistryEvent(delivery_id, event, model, int(version_text), alias)


def trigger_reason(
    event: RegistryEvent, events: tuple[str, ...] | None, aliases: tuple[str, ...]
) -> str | None:
    """Why an MLflow event starts no builds, given the model's last applied spec's
    ``triggers.mlflow`` (``events`` None: no spec or no MLflow trigger); None when it
    does. An alias event needs its alias listed in ``aliases`` (none listed: no alias
    event starts builds), as the contract says: the event, and for an alias, the alias."""
    if event.ignored:
        return event.ignored
    if events is None:
        return f"the last applied spec of model {event.model!r} has no triggers.mlflow"
    if event.event not in events:
        return f"triggers.mlflow.events of model {event.model!r} does not list {event.event!r}"
    if event.event == ALIAS_CREATED and event.alias not in aliases:
        return f"triggers.mlflow.aliases of model {event.model!r} does not list {event.alias!r}"
    return None


def _with_reason(push: PushEvent, reason: str | None) -> PushEvent:
    if reason is None:
        return push
    return PushEvent(**{**push.__dict__, "ignored": reason})


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _header(lowered: Mapping[str, str], name: str, max_length: int | None = None) -> str:
    value = lowered.get(name.lower(), "").strip()
    if not value:
        raise InvalidPayload(f"missing {name} header")
    if max_length is not None and len(value) > max_length:
        raise InvalidPayload(f"{name} must be at most {max_length} characters")
    return value


def _delivery_id(lowered: Mapping[str, str], name: str) -> str:
    value = _header(lowered, name)
    if not DELIVERY_ID.match(value):
        raise InvalidPayload(f"{name} must be 1 to 100 letters, digits or '._:-'")
    return value


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(
            f"the body is not JSON ({exc}); a GitHub webhook's content type must be "
            "application/json"
        ) from None
    except RecursionError:  # the decoder recurses once per nesting level
        raise InvalidPayload("the body is nested too deeply to be a webhook event") from None
    if not isinstance(payload, dict):
        raise InvalidPayload("the body must be a JSON object")
    return payload


def _object(payload: Mapping[str, Any], field: str) -> dict[str, Any]:
    value = payload.get(field)
    if not isinstance(value, dict):
        raise InvalidPayload(f"{field} is {'missing' if value is None else 'not an object'}")
    return value


def _string(
    payload: Mapping[str, Any], field: str, prefix: str = "", max_length: int | None = None
) -> str:
    """A non-empty string of at most ``max_length`` characters, with no control characters
    (stored as they are, in bounded columns)."""
    value = payload.get(field)
    if value is None:
        raise InvalidPayload(f"{prefix}{field} is missing")
    if not isinstance(value, str) or not value:
        raise InvalidPayload(f"{prefix}{field} must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise InvalidPayload(f"{prefix}{field} must be at most {max_length} characters")
    if CONTROL.search(value):
        raise InvalidPayload(f"{prefix}{field} must not contain control characters")
    return value
