"""``POST /api/v1/hooks/git`` on real parts: a bare Git repository in a temporary
directory that a working clone pushes to, PostgreSQL, Redis and a real Celery worker.

A signed push leads to the branch tip's spec applied and its build; a replay (the same
delivery id, or an older commit under a new one), a bad signature, a bad payload, a tag
or another branch apply nothing; a commit that is not on the branch, a spec with an
error or a Git LFS pointer fail the delivery with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.errors import InvalidInput, NotFound, Unavailable
from shipway.services import hooks
from shipway.services.git_source import GitRepository, Position
from shipway.settings import Settings
from shipway.store.models import Build, HookDelivery, ModelVersion
from tests.support import graphs
from tests.support.processes import shipway_process
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration

SECRET, TOKEN, VIEWER = "gh-secret-1", "gl-token-1", "viewer-token"
MODEL = "hooked"

SPEC = """\
apiVersion: shipway.io/v1alpha1
kind: ModelRelease
model:
  name: {model}
  onnx: model/model.onnx
  sample: model/sample.npz
builds:
  - name: fp32
    recipe: {recipe}
    target: onnxruntime-cpu
"""


@dataclass
class Repo:
    """A bare repository (the "remote" Shipway is configured with) and a working clone."""

    bare: Path
    work: Path

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.work, capture_output=True, text=True, check=True, timeout=60
        )
        return result.stdout.strip()

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        """Write ``files``, commit on ``branch`` and push it; the new commit's id."""
        for path, data in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.git("checkout", "-q", "-B", branch)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return self.git("rev-parse", "HEAD")


def release(recipe: str = "fp32", model: str = MODEL) -> dict[str, bytes]:
    onnx, sample = graphs.gemm_classifier()
    return {
        "shipway.yaml": SPEC.format(model=model, recipe=recipe).encode(),
        "model/model.onnx": onnx,
        "model/sample.npz": sample,
    }


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


@pytest.fixture
def worker(container: Container, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    with shipway_process(container.settings, "serve", "worker", log=log) as proc:
        yield log
        assert proc.poll() is None, log.read_text()[-3000:]


def github_push(
    api: TestClient,
    commit: str,
    delivery: str | None = None,
    *,
    ref: str = "refs/heads/main",
    secret: str = SECRET,
    event: str = "push",
) -> httpx.Response:
    body = json.dumps(
        {
            "ref": ref,
            "after": commit,
            "deleted": False,
            "repository": {"full_name": "acme/hooked", "clone_url": "https://evil.example/x"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return api.post(
        "/api/v1/hooks/git",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        },
    )


def gitlab_push(api: TestClient, commit: str, token: str, delivery: str) -> httpx.Response:
    body = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "after": commit,
        "project": {"path_with_namespace": "acme/hooked"},
    }
    return api.post(
        "/api/v1/hooks/git",
        json=body,
        headers={
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Event-UUID": delivery,
            "X-Gitlab-Token": token,
        },
    )


def delivery(api: TestClient, delivery_id: str) -> dict[str, Any]:
    response = api.get(
        f"/api/v1/hooks/deliveries/{delivery_id}", headers={"Authorization": f"Bearer {VIEWER}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def finished(api: TestClient, delivery_id: str, worker_log: Path, timeout: float = 120) -> dict:
    """The delivery once a worker has finished with it (applied or failed)."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(delivery(api, delivery_id))
        return seen["status"] != "queued"

    try:
        wait_until(done, timeout, f"delivery {delivery_id}")
    except TimeoutError:
        raise AssertionError(f"{seen}\n{worker_log.read_text()[-3000:]}") from None
    return seen


def when(found: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(found[field])


def count(container: Container, model: type) -> int:
    with container.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def builds_of(container: Container, name: str) -> list[Build]:
    with container.db.session() as session:
        query = select(Build).join(ModelVersion).where(ModelVersion.name == name)
        return list(session.scalars(query))


def test_a_signed_push_applies_its_commit_and_a_replay_applies_nothing(
    api: TestClient, container: Container, repo: Repo, worker: Path
) -> None:
    first = repo.commit(release(), "first release")
    response = github_push(api, first, "gh-1")
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["duplicate"] is False and receipt["delivery"]["status"] == "queued"
    assert receipt["delivery"]["commit"] == first
    assert receipt["delivery"]["repository"] == "acme/hooked"

    applied = finished(api, receipt["delivery"]["id"], worker)
    assert applied["status"] == "applied", applied
    assert when(applied, "finished_at") >= when(applied, "received_at"), applied
    assert applied["plan"]["changed"] is True
    # the commit's model is registered and its build runs to the end on the worker
    wait_until(lambda: len(builds_of(container, MODEL)) == 1, 60, "the spec's build")
    build = builds_of(container, MODEL)[0]
    assert (build.recipe, build.target, build.model_version.version) == (
        "fp32",
        "onnxruntime-cpu",
        1,
    )
    wait_until(
        lambda: builds_of(container, MODEL)[0].status in ("succeeded", "failed"),
        180,
        "the build to finish",
    )
    assert builds_of(container, MODEL)[0].status == "succeeded", builds_of(container, MODEL)[
        0
    ].error

    # The same delivery again: acknowledged, nothing recorded or applied a second time.
    again = github_push(api, first, "gh-1")
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["detail"].startswith("already received")
    assert again.json()["delivery"]["id"] == receipt["delivery"]["id"]
    assert count(container, HookDelivery) == 1

    # GitLab: a wrong token records nothing; the right one applies the next commit.
    second = repo.commit(release(recipe="fp32", model=f"{MODEL}-b"), "second model")
    refused = gitlab_push(api, second, "wrong", "gl-1")
    assert refused.status_code == 401
    assert "X-Gitlab-Token" in refused.json()["detail"]
    assert count(container, HookDelivery) == 1
    accepted = gitlab_push(api, second, TOKEN, "gl-1")
    assert accepted.status_code == 202, accepted.text
    outcome = finished(api, accepted.json()["delivery"]["id"], worker)
    assert outcome["status"] == "applied", outcome
    assert outcome["provider"] == "gitlab" and outcome["commit"] == second
    wait_until(lambda: len(builds_of(container, f"{MODEL}-b")) == 1, 60, "model b's build")

    # The first commit again under a new delivery id (GitHub does not sign the id: anyone
    # who saw the first push can resend it so), or a late delivery of it: the branch has
    # moved on, so it is superseded and nothing is applied.
    replayed_commit = github_push(api, first, "gh-2")
    assert replayed_commit.status_code == 202
    superseded = finished(api, replayed_commit.json()["delivery"]["id"], worker)
    assert superseded["status"] == "ignored", superseded
    assert superseded["message"] == f"superseded: main is at {second}"
    assert superseded["plan"] is None
    assert len(builds_of(container, MODEL)) == 1
    assert len(builds_of(container, f"{MODEL}-b")) == 1
    with container.db.session() as session:
        versions = session.scalars(select(ModelVersion.version).where(ModelVersion.name == MODEL))
        assert list(versions) == [1]

    # The tip again under a new delivery id: applied, and nothing changes (apply is
    # idempotent), so no second version or build.
    again_tip = gitlab_push(api, second, TOKEN, "gl-2")
    assert again_tip.status_code == 202
    same = finished(api, again_tip.json()["delivery"]["id"], worker)
    assert same["status"] == "applied" and same["plan"]["changed"] is False, same
    assert len(builds_of(container, f"{MODEL}-b")) == 1


def test_commits_not_on_the_branch_are_refused_and_only_the_tip_is_applied(
    api: TestClient, container: Container, repo: Repo, worker: Path
) -> None:
    """Whoever holds the GitLab token (a bearer secret) can name any commit in a push to
    main: one on another branch is refused, never fetched or applied; and of two pushes
    delivered out of order, the later commit stays applied."""
    base = repo.commit(release(), "main's release")
    elsewhere = repo.commit(release(model=f"{MODEL}-x"), "an unmerged change", branch="feature")
    repo.git("checkout", "-q", "main")
    response = gitlab_push(api, elsewhere, TOKEN, "gl-feature")
    assert response.status_code == 202
    refused = finished(api, response.json()["delivery"]["id"], worker)
    assert refused["status"] == "failed", refused
    assert refused["message"].startswith(f"commit {elsewhere} is not on branch 'main'")
    assert f"(at {base})" in refused["message"]
    assert count(container, ModelVersion) == 0 and count(container, Build) == 0

    # Out of order: main moves base -> newer; newer's delivery arrives first.
    newer = repo.commit(release(recipe="int8-dynamic"), "int8-dynamic instead")
    applied = finished(api, github_push(api, newer, "gh-newer").json()["delivery"]["id"], worker)
    assert applied["status"] == "applied", applied
    late = finished(api, github_push(api, base, "gh-late").json()["delivery"]["id"], worker)
    assert late["status"] == "ignored", late
    assert late["message"] == f"superseded: main is at {newer}"
    assert [b.recipe for b in builds_of(container, MODEL)] == ["int8-dynamic"]
    assert builds_of(container, f"{MODEL}-x") == []


def test_a_git_lfs_pointer_fails_the_delivery_naming_the_file(
    api: TestClient, container: Container, repo: Repo, worker: Path
) -> None:
    pointer = (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        b"size 12345\n"
    )
    commit = repo.commit({**release(), "model/model.onnx": pointer}, "model in LFS")
    response = github_push(api, commit, "gh-lfs")
    failed = finished(api, response.json()["delivery"]["id"], worker)
    assert failed["status"] == "failed", failed
    assert failed["message"].startswith("model/model.onnx is a Git LFS pointer in commit")
    assert "pushes read files from Git objects only" in failed["message"]
    assert count(container, ModelVersion) == 0


def test_unknown_commits_and_spec_errors_fail_the_delivery_with_the_reason(
    api: TestClient, container: Container, repo: Repo, worker: Path
) -> None:
    repo.commit(release(), "a release")
    unknown = "ab" * 20
    response = github_push(api, unknown, "gh-unknown")
    assert response.status_code == 202
    failed = finished(api, response.json()["delivery"]["id"], worker)
    assert failed["status"] == "failed"
    assert f"commit {unknown} is not on branch 'main'" in failed["message"]
    assert failed["plan"] is None

    broken = repo.commit(release(recipe="int9"), "a typo in the recipe")
    response = github_push(api, broken, "gh-broken")
    assert response.status_code == 202
    failed = finished(api, response.json()["delivery"]["id"], worker)
    assert failed["status"] == "failed"
    assert "shipway.yaml line 9: builds[0].recipe" in failed["message"], failed["message"]
    assert count(container, ModelVersion) == 0 and count(container, Build) == 0

    (repo.work / "shipway.yaml").unlink()
    removed = repo.commit({"README.md": b"the spec moved away\n"}, "remove the spec")
    response = github_push(api, removed, "gh-no-spec")
    failed = finished(api, response.json()["delivery"]["id"], worker)
    assert failed["status"] == "failed"
    assert "shipway.yaml is not in commit" in failed["message"]
    assert "SHIPWAY_GITOPS_SPEC_PATH" in failed["message"]
    assert count(container, ModelVersion) == 0


def test_refusals_record_nothing_and_ignored_events_say_why(
    api: TestClient, container: Container, repo: Repo
) -> None:
    """No worker: nothing here reaches one."""
    commit = repo.commit(release(), "a release")
    body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()

    # Bad or missing signatures: 401, nothing recorded.
    assert github_push(api, commit, "x1", secret="wrong").status_code == 401
    unsigned = api.post(
        "/api/v1/hooks/git",
        content=body,
        headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x2"},
    )
    assert unsigned.status_code == 401
    assert "missing X-Hub-Signature-256" in unsigned.json()["detail"]
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    tampered = api.post(
        "/api/v1/hooks/git",
        content=body.replace(b"main", b"mainx"),
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "x3",
            "X-Hub-Signature-256": signature,
        },
    )
    assert tampered.status_code == 401
    assert "does not match" in tampered.json()["detail"]
    # An API token is no way in: the hook does not read it.
    with_token = api.post(
        "/api/v1/hooks/git",
        content=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "x4",
            "Authorization": f"Bearer {VIEWER}",
        },
    )
    assert with_token.status_code == 401
    assert count(container, HookDelivery) == 0

    # Signed, but not a push it can read: 400 naming the field, nothing recorded.
    bad = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
    signed_bad = api.post(
        "/api/v1/hooks/git",
        content=bad,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "x5",
            "X-Hub-Signature-256": "sha256="
            + hmac.new(SECRET.encode(), bad, hashlib.sha256).hexdigest(),
        },
    )
    assert signed_bad.status_code == 400
    assert signed_bad.json()["detail"] == "repository is missing"
    # Signed, but longer than it can be stored (the event header is not even signed).
    long_ref = github_push(api, commit, "x6", ref="refs/heads/" + "b" * 290)
    assert long_ref.status_code == 400 and long_ref.json()["detail"] == (
        "ref must be at most 300 characters"
    )
    long_event = github_push(api, commit, "x7", event="e" * 101)
    assert long_event.status_code == 400
    assert long_event.json()["detail"] == "X-GitHub-Event must be at most 100 characters"
    neither = api.post("/api/v1/hooks/git", content=b"{}")  # no sender: nobody to check
    assert neither.status_code == 401 and "X-GitHub-Event" in neither.json()["detail"]
    assert count(container, HookDelivery) == 0

    # Acknowledged and ignored, with the reason, recorded once.
    for delivery_id, kwargs, reason in (
        ("i1", {"ref": "refs/tags/v1"}, "tag push (refs/tags/v1)"),
        ("i2", {"ref": "refs/heads/dev"}, "push to branch 'dev'"),
        ("i3", {"event": "ping"}, "'ping' events are not applied"),
    ):
        response = github_push(api, commit, delivery_id, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        assert response.json()["delivery"]["status"] == "ignored"
        assert reason in response.json()["detail"]
    deleted = github_push(api, "0" * 40, "i4")
    assert deleted.status_code == 200 and "was deleted" in deleted.json()["detail"]
    assert github_push(api, commit, "i1", ref="refs/tags/v1").json()["duplicate"] is True
    assert count(container, HookDelivery) == 4

    # The deliveries, for a viewer; not without a token.
    listed = api.get("/api/v1/hooks/deliveries", headers={"Authorization": f"Bearer {VIEWER}"})
    assert listed.status_code == 200
    assert {d["delivery_id"] for d in listed.json()} == {"i1", "i2", "i3", "i4"}
    for ignored in listed.json():  # finished as received, not before (trial 15 #8)
        assert ignored["finished_at"] == ignored["received_at"], ignored
    assert api.get("/api/v1/hooks/deliveries").status_code == 401
    missing = api.get(
        "/api/v1/hooks/deliveries/nope", headers={"Authorization": f"Bearer {VIEWER}"}
    )
    assert missing.status_code == 404


def test_bodies_over_25_mb_are_refused_unread(api: TestClient, container: Container) -> None:
    """413 whether the body declares its length or comes in chunks; nothing recorded."""
    limit = 25 * 1024 * 1024
    big = b"x" * (limit + 1)
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "big-1"}
    declared = api.post("/api/v1/hooks/git", content=big, headers=headers)
    assert declared.status_code == 413, declared.text
    assert "larger than 26214400 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(26):
            yield b"y" * (1024 * 1024)

    chunked = api.post("/api/v1/hooks/mlflow", content=chunks(), headers=headers)
    assert chunked.status_code == 413, chunked.text
    # at the limit: read, then refused for what it is (a bad signature here)
    at_limit = api.post("/api/v1/hooks/git", content=big[:limit], headers=headers)
    assert at_limit.status_code == 401, at_limit.text
    assert count(container, HookDelivery) == 0


def test_an_internal_error_is_logged_not_shown(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery that breaks the worker (here a row without its commit, which no hook
    writes) records where to look, not the error's text (a database error's carries SQL
    and parameters), and the worker's log has it."""
    with container.db.session() as session:
        row = HookDelivery(
            key="github:broken-1",
            provider="github",
            delivery_id="broken-1",
            event="push",
            ref="refs/heads/main",
        )
        session.add(row)
    with caplog.at_level("ERROR", logger="shipway.services.hooks"), pytest.raises(AssertionError):
        hooks.process(container, row.id, final=False)
    stored = hooks.get(container, row.id)
    assert stored.status == "failed"
    assert stored.message == f"internal error; see the worker log (delivery {row.id})"
    assert f"delivery {row.id}: internal error" in caplog.text
    assert "AssertionError" in caplog.text  # with its traceback


def test_a_queue_that_refuses_leaves_no_delivery_even_one_removed_meanwhile(
    tmp_path: Path, postgres_url: str, repo: Repo
) -> None:
    """The broker down: 503, nothing recorded (the sender's retry is not a replay). The row
    removed while the queue was being tried (a concurrent cleanup): still a clean 503."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=dead_broker,
        result_backend=dead_broker,
        github_webhook_secret=SECRET,
        gitops_repository_url=str(repo.bare),
    )
    container = Container(settings)
    commit = repo.commit(release(), "a release")
    body = json.dumps(
        {"ref": "refs/heads/main", "after": commit, "repository": {"full_name": "acme/h"}}
    ).encode()

    def headers(delivery_id: str) -> dict[str, str]:
        return {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery_id,
            "X-Hub-Signature-256": "sha256="
            + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        }

    try:
        with pytest.raises(Unavailable, match="the task queue did not take the delivery"):
            hooks.receive_git(container, headers("q-1"), body)
        assert count(container, HookDelivery) == 0

        removed: list[str] = []

        def remove_the_row() -> None:
            def present() -> bool:
                with container.db.session() as session:
                    query = select(HookDelivery).where(HookDelivery.key == "github:q-2")
                    found = session.scalar(query)
                    if found is not None:
                        session.delete(found)
                        removed.append(found.id)
                    return found is not None

            wait_until(present, 60, "the delivery row")

        remover = threading.Thread(target=remove_the_row)
        remover.start()
        with pytest.raises(Unavailable, match="the task queue did not take the delivery"):
            hooks.receive_git(container, headers("q-2"), body)
        remover.join(60)
        assert len(removed) == 1
        assert count(container, HookDelivery) == 0
    finally:
        container.close()


def test_concurrent_identical_deliveries_are_received_once(
    container: Container, repo: Repo, redis_url: str
) -> None:
    """Eight copies of one signed push at once: one delivery row, one task queued."""
    commit = repo.commit(release(), "a release")
    body = json.dumps(
        {"ref": "refs/heads/main", "after": commit, "repository": {"full_name": "acme/h"}}
    ).encode()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "same-1",
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    start = threading.Barrier(8)
    receipts: list[hooks.Receipt] = []

    def send() -> None:
        start.wait()
        receipts.append(hooks.receive_git(container, headers, body))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(receipts) == 8
    assert sorted(r.duplicate for r in receipts) == [False] + [True] * 7
    assert len({r.delivery.id for r in receipts}) == 1
    assert count(container, HookDelivery) == 1
    queued = redis.Redis.from_url(redis_url).llen(container.settings.hook_queue)
    assert queued == 1


def test_hooks_answer_404_naming_the_setting_until_configured(tmp_path: Path) -> None:
    container = Container(Settings(home=tmp_path / "home"))
    try:
        with TestClient(create_app(container)) as api:
            gh = github_push(api, "ab" * 20, "d1")
            assert gh.status_code == 404
            assert "SHIPWAY_GITHUB_WEBHOOK_SECRET" in gh.json()["detail"]
            gl = gitlab_push(api, "ab" * 20, "t", "d2")
            assert gl.status_code == 404 and "SHIPWAY_GITLAB_WEBHOOK_TOKEN" in gl.json()["detail"]
            ml = api.post("/api/v1/hooks/mlflow", content=b"{}")
            assert ml.status_code == 404 and "SHIPWAY_MLFLOW_WEBHOOK_SECRET" in ml.json()["detail"]
        signed_only = Container(Settings(home=tmp_path / "home", github_webhook_secret=SECRET))
        with TestClient(create_app(signed_only)) as api:
            response = github_push(api, "ab" * 20, "d3")
            assert response.status_code == 404
            assert "SHIPWAY_GITOPS_REPOSITORY_URL" in response.json()["detail"]
        signed_only.close()
    finally:
        container.close()


def test_the_git_source_fetches_the_branch_and_reads_its_tip(tmp_path: Path, repo: Repo) -> None:
    """The adapter alone: fetch the configured branch only into the mirror, say where a
    pushed commit stands on it, read the spec and the files it names, refuse paths
    leaving the repository and LFS pointers; and name what is wrong."""
    first = repo.commit({**release(), "extra/notes.txt": b"hello"}, "first")
    source_repo = GitRepository(str(repo.bare), tmp_path / "cache", timeout=60)
    assert source_repo.fetch_tip("main") == first
    text, read = _source(source_repo, first)
    assert "name: hooked" in text
    assert read("model/model.onnx") == release()["model/model.onnx"]
    assert read("extra/../model/sample.npz") == release()["model/sample.npz"]
    for outside in ("../outside", "/etc/passwd", "model/../../x"):
        with pytest.raises(InvalidInput, match=r"leaves the repository|relative path"):
            read(outside)
    with pytest.raises(InvalidInput, match=r"no-such\.onnx: no such file in commit"):
        read("no-such.onnx")

    # A later commit: the first is an ancestor of the tip, a commit on another branch
    # is not on main (and is never fetched: only main is).
    second = repo.commit({"shipway.yaml": b"changed: true\n"}, "second")
    other = repo.commit({"shipway.yaml": b"other: true\n"}, "other", branch="feature")
    repo.git("checkout", "-q", "main")
    assert source_repo.position(second, "main") == Position(second, True)
    assert source_repo.position(first, "main") == Position(second, True)
    assert source_repo.position(other, "main") == Position(second, False)
    assert source_repo.position("ab" * 20, "main") == Position(second, False)
    with pytest.raises(NotFound, match="is not in the mirror"):
        source_repo.spec_source(other, "shipway.yaml")
    assert _source(source_repo, second)[0] == "changed: true\n"
    # feature, when it is the configured branch: branched from main at second, so the
    # first commit is on it too
    assert source_repo.position(other, "feature") == Position(other, True)
    assert source_repo.position(first, "feature").on_branch is True

    # The remote gone: unavailable (retried); back: a branch it lacks is named.
    moved = tmp_path / "moved.git"
    repo.bare.rename(moved)
    assert "name: hooked" in _source(source_repo, first)[0]  # the mirror alone
    with pytest.raises(Unavailable, match=r"git fetch from .* failed"):
        source_repo.fetch_tip("main")
    moved.rename(repo.bare)
    with pytest.raises(NotFound, match=r"branch 'nope' \(SHIPWAY_GITOPS_BRANCH\) is not in"):
        source_repo.fetch_tip("nope")
    for bad in ("a..b", "-x", "main lock", ""):
        with pytest.raises(InvalidInput, match=r"SHIPWAY_GITOPS_BRANCH: .* is not a valid branch"):
            source_repo.fetch_tip(bad)
    with pytest.raises(InvalidInput, match="is not a commit id"):
        source_repo.position("--upload-pack=touch /tmp/x", "main")

    # Fetches into one mirror at once (threads here; worker processes alike) take turns.
    third = repo.commit({"shipway.yaml": b"third: true\n"}, "third")
    fresh = GitRepository(str(repo.bare), tmp_path / "cache2", timeout=60)
    tips: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def fetch() -> None:
        start.wait()
        try:
            tips.append(fresh.fetch_tip("main"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and tips == [third] * 4
    assert fresh.read(third, "shipway.yaml") == b"third: true\n"

    # A spec in a subdirectory reads its files relative to itself; an LFS pointer is
    # refused, naming the file.
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 3\n"
    nested = repo.commit(
        {"deploy/shipway.yaml": b"x: 1\n", "deploy/m.bin": b"m", "deploy/lfs.onnx": pointer},
        "nested",
    )
    assert source_repo.fetch_tip("main") == nested
    nested_source = source_repo.spec_source(nested, "deploy/shipway.yaml")
    assert nested_source.read("m.bin") == b"m"
    assert nested_source.read("../model/sample.npz") == release()["model/sample.npz"]
    assert nested_source.origin == f"git:{nested}"
    assert nested_source.name == "deploy/shipway.yaml"  # errors name the spec pushed
    with pytest.raises(InvalidInput, match=r"^lfs\.onnx is a Git LFS pointer in commit"):
        nested_source.read("lfs.onnx")
    with pytest.raises(NotFound, match=r"missing\.yaml is not in commit"):
        source_repo.spec_source(nested, "missing.yaml")


def _source(repository: GitRepository, commit: str) -> tuple[str, Any]:
    source = repository.spec_source(commit, "shipway.yaml")
    return source.text, source.read
