"""The two Celery queues: builds (``SHIPWAY_BUILD_QUEUE``) and webhook deliveries
(``SHIPWAY_HOOK_QUEUE``), each task routed to its own, and ``shipway serve worker
--consume`` choosing which a worker takes; bad values are one line, exit 2, before
anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from shipway.builds.celery_app import BUILD_TASK, HOOK_TASK, create_celery
from shipway.cli.serve import WORKER_CONSUMES, worker_queues
from shipway.services import hooks
from shipway.settings import Settings


def test_deliveries_have_their_own_queue_by_default(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert (settings.build_queue, settings.hook_queue) == ("builds", "hooks")
    assert hooks.HOOK_TASK == HOOK_TASK  # what the API sends is what is routed


def test_the_hook_queue_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIPWAY_HOOK_QUEUE", "deliveries")
    assert Settings(home=tmp_path).hook_queue == "deliveries"


@pytest.mark.parametrize(
    ("build", "hook", "message"),
    [
        ("builds", "builds", "must differ from SHIPWAY_BUILD_QUEUE (both 'builds')"),
        ("jobs", "jobs", "must differ from SHIPWAY_BUILD_QUEUE (both 'jobs')"),
        ("builds", "", "at least 1 character"),
    ],
)
def test_a_hook_queue_that_is_the_build_queue_or_empty_is_refused(
    tmp_path: Path, build: str, hook: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(home=tmp_path, build_queue=build, hook_queue=hook)
    [error] = refused.value.errors()
    assert error["loc"] == ("hook_queue",)
    assert message in error["msg"]


def test_each_task_is_routed_to_its_queue(tmp_path: Path) -> None:
    app = create_celery(Settings(home=tmp_path, build_queue="b1", hook_queue="h1"))
    assert app.amqp.router.route({}, BUILD_TASK)["queue"].name == "b1"
    assert app.amqp.router.route({}, HOOK_TASK)["queue"].name == "h1"


def test_consume_chooses_the_queues(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, build_queue="b1", hook_queue="h1")
    assert WORKER_CONSUMES == ("all", "builds", "hooks")
    assert worker_queues(settings, "all") == ["b1", "h1"]
    assert worker_queues(settings, "builds") == ["b1"]
    assert worker_queues(settings, "hooks") == ["h1"]
    for bad in ("gitops", "", "builds,hooks", "ALL"):
        with pytest.raises(ValueError, match="--consume takes one of all, builds, hooks"):
            worker_queues(settings, bad)


def _shipway(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway.cli.main", *args],
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("serve", "worker", "--consume", "gitops"),
            {},
            "error: --consume takes one of all, builds, hooks, got 'gitops'",
        ),
        (
            ("serve", "worker", "--consume", ""),
            {},
            "error: --consume takes one of all, builds, hooks, got ''",
        ),
        (
            ("serve", "api", "--consume", "hooks"),
            {},
            "error: --consume is for `shipway serve worker` only, not 'api'",
        ),
        (
            ("serve", "worker", "--consume", "builds"),
            {"SHIPWAY_HOOK_QUEUE": "builds"},
            "error: invalid settings: SHIPWAY_HOOK_QUEUE: Value error, must differ from "
            "SHIPWAY_BUILD_QUEUE (both 'builds')",
        ),
    ],
)
def test_bad_consume_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = _shipway(*args, SHIPWAY_HOME=str(tmp_path / "home"), **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [message]
    assert done.stdout == ""
    assert not (tmp_path / "home").exists()  # refused before anything started


def test_help_documents_consume() -> None:
    done = _shipway("serve", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.replace("│", " ").split())
    assert "--consume" in text
    assert "worker only: all (default) | builds (SHIPWAY_BUILD_QUEUE" in text
    assert "hooks (SHIPWAY_HOOK_QUEUE" in text


def test_a_build_worker_without_api_tokens_is_valid_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The chart's build workers: ``SHIPWAY_API_TOKENS={}`` (no token to call or answer
    the API with), which production accepts as it refuses the built-in one."""
    monkeypatch.setenv("SHIPWAY_ENVIRONMENT", "production")
    monkeypatch.setenv("SHIPWAY_RUNTIME", "kubernetes")
    monkeypatch.setenv("SHIPWAY_ARCHIVE_KEY", "a-key-of-the-cluster-0123")
    monkeypatch.setenv("SHIPWAY_API_TOKENS", "{}")
    assert Settings(home=tmp_path).api_tokens == {}
    monkeypatch.delenv("SHIPWAY_API_TOKENS")
    with pytest.raises(ValidationError, match="development token is refused in production"):
        Settings(home=tmp_path)
