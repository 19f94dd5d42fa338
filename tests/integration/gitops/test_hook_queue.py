"""Webhook deliveries on their own queue (``SHIPWAY_HOOK_QUEUE``), on real parts: Redis,
PostgreSQL, a bare Git repository and real ``shipway serve worker --consume`` processes.

A worker that consumes only the build queue (a cluster's build workers, which have no
Kubernetes token) never takes a delivery; one that consumes only the hook queue (the
chart's GitOps worker) applies it and never takes a build; the build the applied spec asks
for goes to the build worker. Which worker ran which task is read from the result
backend (``result_extended``: task name, worker node name, queue). One local worker
(``shipway up``'s, no ``--consume``) on the embedded SQLite broker takes both queues.

Negatives without sleeps: kombu's Redis transport serves a worker's queues round robin
(the queue that just delivered goes last), so a worker that consumed both queues, with a
message waiting on each, would take the one it is said never to take by its second fetch.
Each negative waits for the worker to finish two tasks queued after the message it must
leave alone, then checks that message is still there.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult
from fastapi.testclient import TestClient

from shipway.api.app import create_app
from shipway.builds.celery_app import BUILD_TASK, HOOK_TASK, enqueue_build
from shipway.container import Container
from shipway.settings import Settings
from tests.integration.gitops.test_git_hook import (
    MODEL,
    SECRET,
    TOKEN,
    VIEWER,
    Repo,
    builds_of,
    delivery,
    github_push,
    release,
)
from tests.support.processes import shipway_process
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
BUILDS, HOOKS = f"shipway-builds@{HOST}", f"shipway-hooks@{HOST}"  # the workers' node names


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    found = Repo(bare, work)
    found.git("config", "user.email", "ci@example.com")
    found.git("config", "user.name", "CI")
    return found


@pytest.fixture
def container(tmp_path: Path, postgres_url: str, redis_url: str, repo: Repo) -> Iterator[Container]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
        api_tokens={VIEWER: "viewer"},
        github_webhook_secret=SECRET,
        gitlab_webhook_token=TOKEN,
        gitops_repository_url=str(repo.bare),
        build_queue="q-builds",  # not the defaults: the names come from settings alone
        hook_queue="q-hooks",
        drift_check_seconds=0,
        rollout_tick_seconds=0,
    )
    container = Container(settings)
    container.registry.initialize()
    yield container
    container.close()


@pytest.fixture
def api(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as client:
        yield client


def ran(redis_url: str) -> list[tuple[str, str, str]]:
    """(task name, worker node name, queue) of every task a worker finished."""
    broker = redis.Redis.from_url(redis_url)
    found = []
    for key in broker.scan_iter("celery-task-meta-*"):
        meta: dict[str, Any] = json.loads(broker.get(key) or b"{}")
        found.append((meta.get("name"), meta.get("worker"), meta.get("queue")))
    return found


def consumed(container: Container, node: str) -> list[str]:
    """The queues a running worker says it consumes (Celery's remote control)."""
    seen: list[str] = []

    def answered() -> bool:
        replies = container.celery.control.inspect(destination=[node], timeout=2).active_queues()
        if replies and node in replies:
            seen[:] = sorted(queue["name"] for queue in replies[node])
            return True
        return False

    wait_until(answered, 60, f"{node} to answer")
    return seen


def succeeded(container: Container, task_id: str, log: Path) -> AsyncResult:
    result = AsyncResult(task_id, app=container.celery)
    try:
        wait_until(lambda: result.state in ("SUCCESS", "FAILURE"), 90, f"task {task_id}")
    except TimeoutError:
        raise AssertionError(log.read_text()[-3000:]) from None
    assert result.state == "SUCCESS", result.traceback
    return result


def test_deliveries_go_to_the_hook_queue_which_only_the_hooks_worker_takes(
    api: TestClient, container: Container, repo: Repo, redis_url: str, tmp_path: Path
) -> None:
    settings = container.settings
    broker = redis.Redis.from_url(redis_url)
    assert container.celery.amqp.router.route({}, HOOK_TASK)["queue"].name == "q-hooks"
    assert container.celery.amqp.router.route({}, BUILD_TASK)["queue"].name == "q-builds"

    # A push before any worker runs: its delivery waits on the hook queue alone.
    first = github_push(api, repo.commit(release(), "a release"), "gh-first")
    assert first.status_code == 202, first.text
    first_id = first.json()["delivery"]["id"]
    assert (broker.llen("q-hooks"), broker.llen("q-builds")) == (1, 0)

    # A build worker takes build messages sent after it, and leaves the delivery alone.
    # It has no API token, as in the chart: builds need none.
    builder_settings = settings.model_copy(update={"api_tokens": {}})
    builds_log = tmp_path / "builds.log"
    with shipway_process(
        builder_settings, "serve", "worker", "--consume", "builds", log=builds_log
    ) as builder:
        assert consumed(container, BUILDS) == ["q-builds"]
        # builds this store does not hold: the worker drops each at once ("skipped")
        for probe in ("not-a-build-1", "not-a-build-2"):
            result = succeeded(container, enqueue_build(container.celery, probe), builds_log)
            assert result.result == {"build_id": probe, "outcome": "skipped"}
            assert (result.worker, result.queue) == (BUILDS, "q-builds")
        assert delivery(api, first_id)["status"] == "queued"
        assert broker.llen("q-hooks") == 1
        assert builder.poll() is None, builds_log.read_text()[-3000:]

    # The hooks worker alone: it applies the delivery; the build the spec asks for waits
    # on the build queue, untouched while the worker applies two more deliveries.
    hooks_log = tmp_path / "hooks.log"
    with shipway_process(
        settings, "serve", "worker", "--consume", "hooks", log=hooks_log
    ) as applier:
        assert consumed(container, HOOKS) == ["q-hooks"]

        def finished(delivery_id: str) -> dict[str, Any]:
            seen: dict[str, Any] = {}

            def done() -> bool:
                seen.update(delivery(api, delivery_id))
                return seen["status"] != "queued"

            try:
                wait_until(done, 120, f"delivery {delivery_id}")
            except TimeoutError:
                raise AssertionError(f"{seen}\n{hooks_log.read_text()[-3000:]}") from None
            return seen

        applied = finished(first_id)
        assert applied["status"] == "applied", applied
        [build] = builds_of(container, MODEL)
        assert build.status == "queued"
        assert broker.llen("q-builds") == 1
        for n in (1, 2):  # the tip moves (the spec is the same): applied, nothing new
            commit = repo.commit({f"notes-{n}.txt": b"notes"}, f"notes {n}")
            response = github_push(api, commit, f"gh-notes-{n}")
            assert response.status_code == 202, response.text
            assert finished(response.json()["delivery"]["id"])["status"] == "applied"
        assert [b.status for b in builds_of(container, MODEL)] == ["queued"]
        assert broker.llen("q-builds") == 1
        assert applier.poll() is None, hooks_log.read_text()[-3000:]

    # The build worker again: it builds what the applied spec asked for.
    with shipway_process(
        builder_settings, "serve", "worker", "--consume", "builds", log=builds_log
    ):
        wait_until(
            lambda: builds_of(container, MODEL)[0].status in ("succeeded", "failed"),
            180,
            "the spec's build on the build worker",
        )
        assert builds_of(container, MODEL)[0].status == "succeeded", builds_of(container, MODEL)[
            0
        ].error

    # Who ran what, from the result backend: deliveries on the hooks worker only, builds
    # on the build worker only, each from its own queue.
    tasks = ran(redis_url)
    assert sorted(t for t in tasks if t[0] == HOOK_TASK) == [(HOOK_TASK, HOOKS, "q-hooks")] * 3
    builds = [t for t in tasks if t[0] == BUILD_TASK]
    assert builds == [(BUILD_TASK, BUILDS, "q-builds")] * 3, tasks
    assert len(tasks) == 6, tasks


def test_one_local_worker_takes_both_queues(tmp_path: Path) -> None:
    """``shipway up``'s worker (``serve worker``, no ``--consume``) on the embedded broker
    (kombu's SQLAlchemy transport on SQLite): it takes a delivery and a build, each from its
    own queue, so one machine needs one worker still. Neither exists in this store: the
    delivery fails naming it, the build is dropped."""
    settings = Settings(home=tmp_path / "home")
    container = Container(settings)
    log = tmp_path / "worker.log"
    try:
        with shipway_process(settings, "serve", "worker", log=log):
            hook = container.celery.send_task(HOOK_TASK, args=["no-such-delivery"]).id
            build = enqueue_build(container.celery, "no-such-build")
            results: dict[str, tuple[Any, ...]] = {}
            for task_id in (hook, build):
                result = AsyncResult(task_id, app=container.celery)
                try:
                    wait_until(lambda r=result: r.state in ("SUCCESS", "FAILURE"), 90, task_id)
                except TimeoutError:
                    raise AssertionError(log.read_text()[-3000:]) from None
                results[task_id] = (result.state, result.worker, result.queue, result.result)
    finally:
        container.close()
    node = f"shipway-all@{HOST}"
    assert results[hook][:3] == ("FAILURE", node, "hooks")
    assert "delivery no-such-delivery does not exist" in str(results[hook][3])
    assert results[build] == (
        "SUCCESS",
        node,
        "builds",
        {"build_id": "no-such-build", "outcome": "skipped"},
    )
