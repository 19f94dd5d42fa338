"""GitHub and GitLab push payloads and MLflow events, parsed; every refusal names the
field, every ignored event says why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shipway.gitops import push_events
from shipway.gitops.push_events import InvalidPayload, RegistryEvent

SHA = "9f" * 20
ZEROS = "0" * 40


def github(payload: dict[str, Any] | bytes, event: str = "push", delivery: str = "d-1"):  # type: ignore[no-untyped-def]
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    return push_events.parse_git("github", headers, body, "main")


def gitlab(payload: dict[str, Any], event: str = "Push Hook"):  # type: ignore[no-untyped-def]
    headers = {"x-gitlab-event": event, "x-gitlab-event-uuid": "u-1"}  # any case
    return push_events.parse_git("gitlab", headers, json.dumps(payload).encode(), "main")


def github_push(**changes: Any) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "before": ZEROS,
        "after": SHA,
        "deleted": False,
        "repository": {"full_name": "acme/models", "clone_url": "https://evil.example/x.git"},
        **changes,
    }


def gitlab_push(**changes: Any) -> dict[str, Any]:
    return {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "after": SHA,
        "checkout_sha": SHA,
        "project": {"path_with_namespace": "acme/models", "git_http_url": "https://e.x/y"},
        **changes,
    }


def test_provider_by_event_header() -> None:
    assert push_events.provider_of({"x-github-event": "push"}) == "github"
    assert push_events.provider_of({"X-Gitlab-Event": "Push Hook"}) == "gitlab"
    assert push_events.provider_of({"content-type": "application/json"}) is None


def test_github_push_to_the_branch() -> None:
    push = github(github_push())
    assert (push.provider, push.delivery_id, push.event) == ("github", "d-1", "push")
    assert (push.ref, push.commit, push.repository) == ("refs/heads/main", SHA, "acme/models")
    assert not push.deleted and push.ignored is None


def test_gitlab_push_to_the_branch() -> None:
    push = gitlab(gitlab_push())
    assert (push.provider, push.delivery_id, push.event) == ("gitlab", "u-1", "Push Hook")
    assert (push.commit, push.repository, push.ignored) == (SHA, "acme/models", None)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ref": "refs/tags/v1.0"}, "tag push (refs/tags/v1.0)"),
        ({"ref": "refs/heads/feature"}, "push to branch 'feature'; only pushes to branch 'main'"),
        ({"ref": "refs/notes/commits"}, "ref 'refs/notes/commits' is not a branch"),
        ({"after": ZEROS, "deleted": True}, "branch 'main' was deleted"),
        ({"after": ZEROS}, "branch 'main' was deleted"),
    ],
)
def test_github_pushes_acknowledged_and_ignored(changes: dict[str, Any], reason: str) -> None:
    push = github(github_push(**changes))
    assert push.ignored is not None and reason in push.ignored


def test_gitlab_tag_and_deleted_branch_ignored() -> None:
    tag = gitlab(gitlab_push(object_kind="tag_push", ref="refs/tags/v2"), event="Tag Push Hook")
    assert tag.ignored == "'Tag Push Hook' events are not applied (only pushes)"
    deleted = gitlab(gitlab_push(after=ZEROS, checkout_sha=None))
    assert deleted.deleted and deleted.ignored == "branch 'main' was deleted; nothing to apply"
    other = gitlab(gitlab_push(ref="refs/heads/dev"))
    assert other.ignored is not None and "branch 'dev'" in other.ignored


def test_non_push_events_ignored_without_reading_the_body() -> None:
    ping = github(b"not even json", event="ping")
    assert ping.ignored == "'ping' events are not applied (only pushes)"
    assert ping.commit is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (json.dumps(github_push(ref=None)).encode(), "ref is missing"),
        (
            json.dumps({k: v for k, v in github_push().items() if k != "after"}).encode(),
            "after is missing",
        ),
        (json.dumps(github_push(after=7)).encode(), "after must be a non-empty string"),
        (json.dumps(github_push(after="--upload-pack=evil")).encode(), "after must be a commit"),
        (json.dumps(github_push(after=SHA.upper())).encode(), "after must be a commit"),
        (json.dumps(github_push(repository=None)).encode(), "repository is missing"),
        (json.dumps(github_push(repository="acme")).encode(), "repository is not an object"),
        (json.dumps(github_push(repository={})).encode(), "repository.full_name is missing"),
    ],
)
def test_malformed_github_push(body: bytes, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        github(body)


def test_malformed_gitlab_push_and_headers() -> None:
    with pytest.raises(InvalidPayload, match=r"project\.path_with_namespace is missing"):
        gitlab(gitlab_push(project={}))
    body = json.dumps(github_push()).encode()
    with pytest.raises(InvalidPayload, match="missing X-GitHub-Delivery header"):
        push_events.parse_git("github", {"X-GitHub-Event": "push"}, body, "main")
    with pytest.raises(InvalidPayload, match="missing X-Gitlab-Event-UUID header"):
        push_events.parse_git("gitlab", {"X-Gitlab-Event": "Push Hook"}, body, "main")
    with pytest.raises(InvalidPayload, match="X-GitHub-Delivery must be 1 to 100"):
        github(github_push(), delivery="a b")
    with pytest.raises(InvalidPayload, match="X-GitHub-Delivery must be 1 to 100"):
        github(github_push(), delivery="x" * 101)


def test_another_configured_branch() -> None:
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d"}
    body = json.dumps(github_push(ref="refs/heads/release")).encode()
    assert push_events.parse_git("github", headers, body, "release").ignored is None
    assert push_events.parse_git("github", headers, body, "main").ignored is not None


def mlflow(entity: str, action: str, data: Any) -> RegistryEvent:
    body = {"entity": entity, "action": action, "timestamp": "2026-11-30T12:00:00", "data": data}
    return push_events.parse_mlflow({"X-MLflow-Delivery-Id": "5b0e"}, json.dumps(body).encode())


def test_mlflow_events() -> None:
    created = mlflow("model_version", "created", {"name": "m", "version": "3", "tags": {}})
    assert (created.event, created.model, created.version, created.alias) == (
        "model_version.created",
        "m",
        3,
        None,
    )
    assert created.ignored is None and created.delivery_id == "5b0e"
    alias = mlflow(
        "model_version_alias", "created", {"name": "m", "alias": "champion", "version": "2"}
    )
    assert (alias.event, alias.version, alias.alias) == (
        "model_version_alias.created",
        2,
        "champion",
    )
    tag = mlflow("model_version_tag", "set", {"name": "m", "version": "1", "key": "k"})
    assert tag.ignored is not None and "'model_version_tag.set' events start nothing" in tag.ignored


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "data is missing"),
        ({"version": "1"}, r"data\.name is missing"),
        ({"name": "m"}, r"data\.version is missing"),
        ({"name": "m", "version": "x"}, r"data\.version must be a whole number from 1"),
        ({"name": "m", "version": "0"}, r"data\.version must be a whole number from 1"),
        # beyond a PostgreSQL integer, and beyond what int() takes (4300 digits)
        ({"name": "m", "version": str(2**31)}, r"data\.version must be a whole number from 1"),
        ({"name": "m", "version": "9" * 5000}, r"to 2147483647, got '9{20}\.\.\.'"),
        ({"name": "m", "version": "\u0661"}, r"data\.version must be a whole number"),
        ({"name": "m" * 201, "version": "1"}, r"data\.name must be at most 200 characters"),
        ({"name": "m\x00", "version": "1"}, r"data\.name must not contain control characters"),
        ({"name": "m", "version": 1}, r"data\.version must be a non-empty string"),
    ],
)
def test_malformed_mlflow_event(data: Any, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        mlflow("model_version", "created", data)


def test_the_largest_values_that_fit_are_accepted() -> None:
    event = mlflow(
        "model_version_alias",
        "created",
        {"name": "m" * 200, "alias": "a" * 200, "version": str(2**31 - 1)},
    )
    assert (len(event.model or ""), len(event.alias or ""), event.version) == (200, 200, 2**31 - 1)
    push = github(github_push(ref="refs/heads/main", repository={"full_name": "r" * 300}))
    assert push.repository == "r" * 300
    long_event = github(b"", event="e" * 100)
    assert long_event.event == "e" * 100 and long_event.ignored is not None


def test_oversized_and_nested_values_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidPayload, match=r"data\.alias must be at most 200 characters"):
        mlflow("model_version_alias", "created", {"name": "m", "alias": "a" * 201, "version": "1"})
    with pytest.raises(InvalidPayload, match="entity and action must be at most 100"):
        mlflow("model_version" * 7, "created_again", {})
    with pytest.raises(InvalidPayload, match=r"^entity must be at most 100 characters"):
        mlflow("e" * 101, "created", {})
    with pytest.raises(InvalidPayload, match=r"^ref must be at most 300 characters"):
        github(github_push(ref="refs/heads/" + "b" * 290))
    with pytest.raises(InvalidPayload, match=r"repository\.full_name must be at most 300"):
        github(github_push(repository={"full_name": "r" * 301}))
    with pytest.raises(InvalidPayload, match=r"project\.path_with_namespace must be at most 300"):
        gitlab(gitlab_push(project={"path_with_namespace": "p" * 301}))
    # the event header is not signed (GitHub) and is stored: bounded too
    with pytest.raises(InvalidPayload, match="X-GitHub-Event must be at most 100 characters"):
        github(github_push(), event="e" * 101)
    with pytest.raises(InvalidPayload, match="X-Gitlab-Event must be at most 100 characters"):
        gitlab(gitlab_push(), event="Push Hook" * 12)
    nested = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        github(nested)
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        push_events.parse_mlflow({"X-MLflow-Delivery-Id": "d"}, nested)


def test_the_bounds_are_the_columns_the_delivery_is_stored_in() -> None:
    from shipway.store.models import HookDelivery

    columns = HookDelivery.__table__.columns
    assert columns["event"].type.length == push_events.MAX_EVENT
    assert columns["ref"].type.length == push_events.MAX_REF
    assert columns["repository"].type.length == push_events.MAX_REPOSITORY
    assert columns["model"].type.length == push_events.MAX_MODEL
    assert columns["alias"].type.length == push_events.MAX_ALIAS


def test_malformed_mlflow_envelope() -> None:
    with pytest.raises(InvalidPayload, match="entity is missing"):
        push_events.parse_mlflow({"X-MLflow-Delivery-Id": "d"}, b'{"action": "created"}')
    with pytest.raises(InvalidPayload, match=r"data\.alias is missing"):
        mlflow("model_version_alias", "created", {"name": "m", "version": "1"})
    with pytest.raises(InvalidPayload, match="missing X-MLflow-Delivery-Id"):
        push_events.parse_mlflow({}, b"{}")


def test_trigger_reasons() -> None:
    created = mlflow("model_version", "created", {"name": "m", "version": "3"})
    alias = mlflow("model_version_alias", "created", {"name": "m", "alias": "a", "version": "3"})
    both = ("model_version.created", "model_version_alias.created")
    assert push_events.trigger_reason(created, both, ()) is None
    assert push_events.trigger_reason(alias, both, ("a", "b")) is None
    assert "has no triggers.mlflow" in (push_events.trigger_reason(created, None, ()) or "")
    only_alias = push_events.trigger_reason(created, ("model_version_alias.created",), ("a",))
    assert only_alias == (
        "triggers.mlflow.events of model 'm' does not list 'model_version.created'"
    )
    assert push_events.trigger_reason(alias, both, ("b",)) == (
        "triggers.mlflow.aliases of model 'm' does not list 'a'"
    )
    assert push_events.trigger_reason(alias, both, ()) is not None  # none listed: none start
    tag = mlflow("model_version_tag", "set", {})
    assert push_events.trigger_reason(tag, both, ()) == tag.ignored
