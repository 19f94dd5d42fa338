"""``shipway apply`` end to end: the CLI against a real control plane (API with its
rollout controller and intent loop, a Celery worker on Redis, the store on PostgreSQL,
MLflow, the runtime manager with tritonserver replicas, the gateway), on small models
the tests build with ``onnx.helper``.

The CLI exits as soon as the plan is made: what waits for a build (the deploy, the
rollout) is carried out by the server with no client connected.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import func, select, text, update

from shipway.container import Container
from shipway.errors import Conflict, NotFound
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.services import gitops, models
from shipway.settings import Settings
from shipway.store.models import (
    AppliedSpec,
    AuditEvent,
    Build,
    Deployment,
    GitopsIntent,
    ModelVersion,
    Rollout,
    Variant,
)
from tests.support import graphs
from tests.support.plane import Plane, local_plane
from tests.support.processes import settings_env, shipway_cmd
from tests.support.services import create_database, fresh_redis_database, wait_until

pytestmark = pytest.mark.integration

ADMIN, VIEWER = "gitops-admin-token", "gitops-viewer-token"
BUILD_SECONDS = 300.0


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory,
    triton_dist: TritonDistribution,
    postgres_admin_url: str,
    redis_server_url: str,
) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("gitops") / "home"
    redis = fresh_redis_database(redis_server_url)
    database = create_database(postgres_admin_url, f"g_{uuid.uuid4().hex[:10]}")
    with local_plane(
        home,
        triton_dist.home,
        database_url=database,
        broker_url=redis,
        result_backend=redis,
        token=ADMIN,
        api_tokens={ADMIN: "admin", VIEWER: "viewer"},
        gitops_intent_seconds=0.5,
    ) as plane:
        plane.start("worker")
        yield plane


# ---- models and repositories -----------------------------------------------------------


def two_inputs(scale: float) -> tuple[bytes, bytes]:
    """y = scale * a + b: two inputs, one output; ``scale`` makes another version."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Mul", ["a", "w"], ["t"], "scale"),
        helper.make_node("Add", ["t", "b"], ["y"], "shift"),
    ]
    weight = numpy_helper.from_array(np.full(4, scale, dtype=np.float32), "w")
    graph = helper.make_graph(nodes, "two-inputs", [a, b], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(3)
    rows = {k: rng.normal(size=(32, 4)).astype(np.float32) for k in ("a", "b")}
    return model.SerializeToString(), graphs.npz(**rows)


def write_repo(root: Path, spec: str, onnx_bytes: bytes, sample: bytes) -> Path:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "model.onnx").write_bytes(onnx_bytes)
    (root / "model" / "sample.npz").write_bytes(sample)
    (root / "shipway.yaml").write_text(spec)
    return root / "shipway.yaml"


def spec_text(name: str, builds: str, deployment: str = "") -> str:
    return (
        "apiVersion: shipway.io/v1alpha1\n"
        "kind: ModelRelease\n"
        "model:\n"
        f"  name: {name}\n"
        "  onnx: model/model.onnx\n"
        "  sample: model/sample.npz\n"
        "  tags: {team: gitops}\n"
        f"builds:\n{builds}{deployment}"
    )


# ---- helpers ----------------------------------------------------------------------------


def shipway(plane: Plane, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        shipway_cmd(*args),
        env={**settings_env(plane.settings), "COLUMNS": "250"},  # rich wraps at 80 otherwise
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == code, f"shipway {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def apply_json(plane: Plane, spec: Path, *args: str, code: int = 0) -> dict[str, Any]:
    return json.loads(shipway(plane, "apply", "-f", str(spec), "--json", *args, code=code).stdout)


def kinds(plan: dict[str, Any]) -> list[str]:
    return [a["kind"] for a in plan["actions"]]


APPLY_WRITES = (ModelVersion, Build, Deployment, Variant, Rollout, AppliedSpec)


def rows(plane: Plane) -> dict[str, int]:
    """Rows of the tables an apply writes, and of the audit events of this module's
    callers (the admin token, the server acting for it, ``test``): the runtime manager
    and other background writers of the store do not count."""
    with plane.container.db.session() as session:
        counts = {
            t.__tablename__: int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in APPLY_WRITES
        }
        counts["gitops_intents"] = int(
            session.scalar(select(func.count()).select_from(GitopsIntent)) or 0
        )
        counts["audit_events"] = int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.actor.like("%admin:%") | (AuditEvent.actor == "test"))
            )
            or 0
        )
        return counts


def mlflow_versions(plane: Plane) -> int:
    s = plane.settings
    client = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    return len(client.search_model_versions())


def wait_builds(plane: Plane, build_ids: list[str]) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        with plane.client() as client:
            for build_id in build_ids:
                done[build_id] = client.build(build_id)
        return all(b["status"] in ("succeeded", "failed") for b in done.values())

    wait_until(finished, BUILD_SECONDS, f"builds {build_ids} to finish")
    return done


def wait_serving(plane: Plane, name: str, build_id: str) -> dict[str, Any]:
    """Once the deployment exists (made by the server, not this test), until it serves
    ``build_id`` with its replicas ready."""

    def exists() -> bool:
        with plane.container.db.session() as session:
            found = session.scalar(select(Deployment.id).where(Deployment.name == name))
            return found is not None

    wait_until(exists, BUILD_SECONDS, f"deployment {name} to be made")
    with plane.client() as client:
        return client.wait_deployment(name, build_id, timeout=BUILD_SECONDS)


def audit_actions(plane: Plane, subject: str) -> list[str]:
    with plane.container.db.session() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.subject == subject)
                .order_by(AuditEvent.id)
            )
        )


def settled(plane: Plane) -> dict[str, int]:
    """``rows`` once what the last apply set going is over: no intent the server's loop
    could still carry out (its build finished), and two equal reads in a row."""
    seen: list[dict[str, int]] = []

    def steady() -> bool:
        with plane.container.db.session() as session:
            waiting = session.scalar(
                select(func.count())
                .select_from(GitopsIntent)
                .join(Build, GitopsIntent.build_id == Build.id)
                .where(
                    GitopsIntent.status.in_(["pending", "running"]),
                    Build.status.in_(["succeeded", "failed"]),
                )
            )
        seen.append(rows(plane))
        return not waiting and len(seen) > 1 and seen[-1] == seen[-2]

    wait_until(steady, 30, "the store to settle")
    return seen[-1]


# ---- tests ------------------------------------------------------------------------------


def test_apply_registers_builds_and_deploys_with_no_client_connected(
    plane: Plane, tmp_path: Path
) -> None:
    onnx_bytes, sample = graphs.gemm_classifier()
    spec = write_repo(
        tmp_path,
        spec_text(
            "gemm",
            "  - {name: exact}\n  - {name: fast, recipe: int8-dynamic}\n",
            "deployment:\n  name: gemm\n  build: exact\n  drift: {actions: [alert, rollback]}\n",
        ),
        onnx_bytes,
        sample,
    )
    plan = apply_json(plane, spec)  # the CLI exits with the plan: nobody waits
    assert plan["changed"] and not plan["dry_run"]
    assert kinds(plan) == ["register-version", "create-build", "create-build", "deploy"]
    deploy = plan["actions"][-1]
    assert deploy["after_build"] and deploy["intent_id"] and deploy["then"] == "deploy"
    exact, fast = plan["actions"][1]["build_id"], plan["actions"][2]["build_id"]
    assert deploy["build_id"] == exact

    # the worker builds; the API process's intent loop deploys once the build succeeded
    deployment = wait_serving(plane, "gemm", exact)
    with plane.client() as client:
        [version] = client.models("gemm")
    assert deployment["status"] == "ready"
    assert version["tags"]["team"] == "gitops"
    assert version["tags"]["shipway.sample_sha256"] == hashlib.sha256(sample).hexdigest()
    assert version["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert {b["status"] for b in wait_builds(plane, [exact, fast]).values()} == {"succeeded"}
    with plane.container.db.session() as session:
        row = session.scalar(select(Deployment).where(Deployment.name == "gemm"))
        assert row is not None
        assert row.drift_policy == {"actions": ["alert", "rollback"], "webhook_url": None}
        intent = session.get(GitopsIntent, deploy["intent_id"])
        assert intent is not None and intent.status == "done"
    assert "gitops.apply" in audit_actions(plane, "model/gemm")
    assert "gitops.intent.done" in audit_actions(plane, "deployment/gemm")
    row_in = graphs.clustered(np.random.default_rng(1), np.zeros((1, 16)), 1)[0].tolist()
    answer = httpx.post(
        deployment["infer_url"],
        json={"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": row_in}]},
        timeout=30,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
    assert abs(sum(answer.json()["outputs"][0]["data"]) - 1.0) < 1e-4  # softmax

    # the same spec again: nothing to do, nothing written
    before, registered = settled(plane), mlflow_versions(plane)
    second = shipway(plane, "apply", "-f", str(spec))
    assert "no changes" in second.stdout
    again = apply_json(plane, spec)
    assert not again["changed"]
    assert kinds(again) == ["version", "build", "build", "deployment"]
    assert rows(plane) == before and mlflow_versions(plane) == registered

    # the registry trigger's path: the last applied spec, for a version registered otherwise
    assert gitops.last_applied(plane.container, "gemm") is not None
    assert gitops.last_applied(plane.container, "nothing-applied") is None
    with pytest.raises(NotFound, match=r"no shipway\.yaml was applied for model 'nothing'"):
        gitops.builds_for_version(plane.container, "nothing", 1, actor="test")


def test_a_changed_model_file_makes_a_new_version_and_a_rollout(
    plane: Plane, tmp_path: Path
) -> None:
    deployment = (
        "deployment:\n"
        "  name: twin\n"
        "  build: fp32\n"
        "  rollout:\n"
        "    strategy: canary\n"
        # slow analyses: the rollout is still running when the test looks at it
        "    settings: {stepWeights: [50, 100], intervalSeconds: 300}\n"
    )
    v1, sample = two_inputs(2.0)
    spec = write_repo(tmp_path, spec_text("twin", "  - {name: fp32}\n", deployment), v1, sample)
    first = shipway(plane, "apply", "-f", str(spec), "--wait")
    assert "register-version" in first.stdout and "serves build" in first.stdout

    v2, _ = two_inputs(3.0)
    (tmp_path / "model" / "model.onnx").write_bytes(v2)

    # a dry run says what will happen and changes nothing
    before, registered = settled(plane), mlflow_versions(plane)
    dry = apply_json(plane, spec, "--dry-run")
    assert dry["dry_run"] and dry["changed"]
    assert [a["kind"] for a in dry["actions"] if a["changed"]] == [
        "register-version",
        "create-build",
        "start-rollout",
    ]
    table = shipway(plane, "apply", "-f", str(spec), "--dry-run").stdout
    assert "dry run: nothing changed" in table and "start-rollout" in table
    assert rows(plane) == before and mlflow_versions(plane) == registered

    plan = apply_json(plane, spec)
    start = plan["actions"][-1]
    assert start["kind"] == "start-rollout" and start["after_build"]
    candidate = plan["actions"][1]["build_id"]
    assert start["build_id"] == candidate

    # the intent loop starts the rollout once the build succeeded: no client connected
    found: dict[str, Any] = {}

    def rollout_started() -> bool:
        with plane.client() as client:
            found.update(
                next(
                    (r for r in client.rollouts("twin") if r["candidate_build_id"] == candidate), {}
                )
            )
        return bool(found)

    wait_until(rollout_started, BUILD_SECONDS, "the rollout of the new build")
    assert found["running"] and found["created_by"].startswith("gitops:")
    assert found["spec"]["step_weights"] == [50, 100]

    running = apply_json(plane, spec)  # the rollout under way: nothing to do
    assert not running["changed"]
    assert running["actions"][-1]["kind"] == "rollout"
    assert running["actions"][-1]["rollout_id"] == found["id"]

    # rolled back: the same build is not rolled out again, and the plan says why
    with plane.client() as client:
        client.operate_rollout("twin", found["id"], "abort")
        wait_until(
            lambda: not client.rollout("twin", found["id"])["running"], BUILD_SECONDS, "the abort"
        )
    before = settled(plane)
    after = apply_json(plane, spec, code=1)  # the spec's build cannot be served: exit 1
    assert not after["changed"] and len(after["problems"]) == 1
    blocked = after["actions"][-1]
    assert blocked["kind"] == "blocked" and "not rolled out again" in blocked["detail"]
    assert found["id"] in blocked["detail"]
    assert rows(plane) == before

    # a process died carrying the intent out (still claimed, long ago): the intent loop
    # takes it up again, finds the rolled-back rollout it started and starts no other
    with plane.container.db.session() as session:
        session.execute(
            update(GitopsIntent)
            .where(GitopsIntent.id == start["intent_id"])
            .values(status="running", updated_at=GitopsIntent.created_at - timedelta(hours=1))
        )

    def intent_over() -> bool:
        with plane.container.db.session() as session:
            intent = session.get(GitopsIntent, start["intent_id"])
            assert intent is not None
            return intent.status not in ("running", "pending")

    wait_until(intent_over, BUILD_SECONDS, "the stale intent to be taken up again")
    with plane.container.db.session() as session:
        intent = session.get(GitopsIntent, start["intent_id"])
        assert intent is not None and intent.status == "done", intent.message
        assert intent.message == f"rollout {found['id']} was started (rolled-back)"
        started = session.scalar(
            select(func.count()).select_from(Rollout).where(Rollout.candidate_build_id == candidate)
        )
    assert started == 1


def test_a_failed_build_fails_the_wait_and_is_not_rebuilt(plane: Plane, tmp_path: Path) -> None:
    onnx_bytes, sample = graphs.gemm_classifier()
    # an int8 build held to exact FP32 answers with no layer kept in FP32 cannot pass
    builds = (
        "  - name: strict\n"
        "    recipe: int8-dynamic\n"
        "    options: {minCosine: 1.0, minRowCosine: 1.0, maxFp32Layers: 0}\n"
    )
    deployment = "deployment:\n  name: strict\n  build: strict\n"
    spec = write_repo(tmp_path, spec_text("strict", builds, deployment), onnx_bytes, sample)
    waited = shipway(plane, "apply", "-f", str(spec), "--wait", code=1)
    assert "failed" in waited.stderr
    before = settled(plane)
    # nothing to change, yet not "no changes": the CLI names what stands in the way
    refused = shipway(plane, "apply", "-f", str(spec), "--json", code=1)
    plan = json.loads(refused.stdout)
    assert not plan["changed"]
    assert kinds(plan) == ["version", "build-failed", "blocked"]
    assert "not rebuilt from the same inputs" in plan["actions"][1]["detail"]
    assert len(plan["problems"]) == 2
    assert f"not applied: build/strict: {plan['actions'][1]['build_id']}" in refused.stderr
    table = shipway(plane, "apply", "-f", str(spec), code=1)
    assert "no changes" not in table.stdout
    assert "not applied: deployment/strict: build strict" in table.stderr
    assert rows(plane) == before
    with plane.client() as client, pytest.raises(Exception, match="404"):
        client.deployment("strict")
    with plane.container.db.session() as session:
        intent = session.scalar(select(GitopsIntent).where(GitopsIntent.deployment == "strict"))
        assert intent is not None and intent.status == "failed"
        assert intent.message and "failed" in intent.message

    # asked for, the same inputs are built again (a worker that died, say)
    retry = shipway(plane, "apply", "-f", str(spec), "--json", "--retry-failed")
    retried = json.loads(retry.stdout)
    assert [a["kind"] for a in retried["actions"] if a["changed"]] == ["create-build", "deploy"]
    again = retried["actions"][1]["build_id"]
    assert again and again != plan["actions"][1]["build_id"] and not retried["problems"]
    assert wait_builds(plane, [again])[again]["status"] == "failed"  # the same gate again


def test_bad_specs_and_files_leave_nothing_behind(plane: Plane, tmp_path: Path) -> None:
    onnx_bytes, sample = two_inputs(1.0)
    good = spec_text("bad", "  - {name: fp32}\n", "deployment:\n  name: bad\n  build: fp32\n")
    spec = write_repo(tmp_path, good, onnx_bytes, sample)
    before, registered = settled(plane), mlflow_versions(plane)

    spec.write_text(good.replace("{name: fp32}", "{name: fp32, recipe: int9}"))
    refused = shipway(plane, "apply", "-f", str(spec), code=1)
    assert (
        "shipway.yaml line 9: builds[0].recipe: 'int9' is not one of fp32, fp16, int8, "
        "int8-dynamic" in refused.stderr
    )
    # errors start with the name of the file given, whatever it is
    named = tmp_path / "int8.yaml"
    named.write_text(good.replace("{name: fp32}", "{name: fp32, recipe: int9}"))
    assert "int8.yaml line 9: builds[0].recipe: 'int9'" in (
        shipway(plane, "apply", "-f", str(named), code=1).stderr
    )
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    assert "empty.yaml: the file is empty; it needs apiVersion" in (
        shipway(plane, "apply", "-f", str(empty), code=1).stderr
    )
    spec.write_text(good.replace("  build: fp32", "  build: fp16"))
    assert (
        "deployment.build: 'fp16' names no build"
        in shipway(plane, "apply", "-f", str(spec), code=1).stderr
    )

    spec.write_text(good.replace("model/model.onnx", "model/missing.onnx"))
    missing = shipway(plane, "apply", "-f", str(spec), code=2)
    assert "model.onnx: model/missing.onnx: no such file" in missing.stderr

    # what registration refuses names the field and file it is about
    spec.write_text(good)
    (tmp_path / "model" / "sample.npz").write_bytes(graphs.npz(x=np.zeros((2, 4), np.float32)))
    mismatch = shipway(plane, "apply", "-f", str(spec), code=1)
    assert (
        "shipway.yaml line 6: model.sample (model/sample.npz): sample arrays do not match "
        "the model inputs" in mismatch.stderr
    )
    (tmp_path / "model" / "sample.npz").write_bytes(sample)
    webhook = "  drift: {actions: [webhook], webhookUrl: 'http://127.0.0.1:9/x'}\n"
    spec.write_text(good + webhook)
    assert (
        "shipway.yaml line 13: deployment.drift.actions: a webhook action needs "
        "SHIPWAY_WEBHOOK_SECRET" in shipway(plane, "apply", "-f", str(spec), code=1).stderr
    )

    spec.write_text(good)
    (tmp_path / "model" / "model.onnx").write_bytes(b"not an onnx file")
    garbage = shipway(plane, "apply", "-f", str(spec), code=1)
    assert "422" in garbage.stderr

    url = f"{plane.settings.resolved_api_url}/api/v1/apply"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    no_parts = httpx.post(url, data={"spec": good}, headers=headers, trust_env=False)
    assert no_parts.status_code == 422
    assert "'model/model.onnx'" in no_parts.json()["detail"]
    parts = [("files", ("model/model.onnx", onnx_bytes)), ("files", ("model/sample.npz", sample))]
    viewer = httpx.post(
        url,
        data={"spec": good},
        files=parts,
        headers={"Authorization": f"Bearer {VIEWER}"},
        trust_env=False,
    )
    assert viewer.status_code == 403
    twice = httpx.post(
        url, data={"spec": good}, files=[*parts, parts[0]], headers=headers, trust_env=False
    )
    assert twice.status_code == 422 and "two file parts are named" in twice.json()["detail"]
    no_spec = httpx.post(url, files=parts, headers=headers, trust_env=False)
    assert no_spec.status_code == 422 and "spec" in no_spec.text
    bad_name = httpx.post(
        url,
        data={"spec": good, "spec_name": "a\x07b"},
        files=parts,
        headers=headers,
        trust_env=False,
    )
    assert bad_name.status_code == 422 and "spec_name" in bad_name.json()["detail"]
    assert rows(plane) == before and mlflow_versions(plane) == registered

    # the same files through the API, as a dry run: a plan, nothing written
    dry = httpx.post(
        url, data={"spec": good, "dry_run": "true"}, files=parts, headers=headers, trust_env=False
    )
    assert dry.status_code == 200 and dry.json()["dry_run"] and dry.json()["changed"]
    assert rows(plane) == before and mlflow_versions(plane) == registered


def test_a_version_that_breaks_clients_is_refused_before_anything_is_written(
    plane: Plane, tmp_path: Path
) -> None:
    onnx_bytes, sample = two_inputs(1.0)
    spec = write_repo(
        tmp_path,
        spec_text("renamed", "  - {name: fp32}\n", "deployment:\n  name: renamed\n  build: fp32\n"),
        onnx_bytes,
        sample,
    )
    shipway(plane, "apply", "-f", str(spec), "--wait")
    # a scaling change: --wait returns once the replicas it asks for are ready
    spec.write_text(spec.read_text().replace("  build: fp32\n", "  build: fp32\n  replicas: 2\n"))
    scaled = shipway(plane, "apply", "-f", str(spec), "--wait")
    assert "update-scaling" in scaled.stdout and "from 1 replica to 2 replicas" in scaled.stdout
    with plane.client() as client:
        replicas = client.deployment("renamed")["replicas"]
    assert sum(r["state"] == "ready" for r in replicas) == 2, replicas
    other, other_sample = graphs.gemm_classifier()  # input x, output probs: clients break
    (tmp_path / "model" / "model.onnx").write_bytes(other)
    (tmp_path / "model" / "sample.npz").write_bytes(other_sample)
    before, registered = settled(plane), mlflow_versions(plane)
    refused = shipway(plane, "apply", "-f", str(spec), code=1)
    assert "409" in refused.stderr and "allowSignatureChange" in refused.stderr
    assert rows(plane) == before and mlflow_versions(plane) == registered


def test_builds_for_a_version_follow_the_last_applied_spec(plane: Plane, tmp_path: Path) -> None:
    onnx_bytes, sample = two_inputs(1.0)
    spec = write_repo(tmp_path, spec_text("trigger", "  - {name: fp32}\n"), onnx_bytes, sample)
    plan = apply_json(plane, spec)
    wait_builds(plane, [plan["actions"][1]["build_id"]])
    v2_onnx, v2_sample = two_inputs(5.0)
    registered = models.register(
        plane.container, models.Registration("trigger", v2_onnx, v2_sample, {}), "test"
    )
    built = gitops.builds_for_version(plane.container, "trigger", registered.version, actor="test")
    assert built.changed
    assert [(a.kind.value, a.version) for a in built.actions] == [
        ("version", registered.version),
        ("create-build", registered.version),
    ]
    again = gitops.builds_for_version(plane.container, "trigger", registered.version, actor="t")
    assert not again.changed and again.actions[1].build_id == built.actions[1].build_id
    with pytest.raises(NotFound, match="no version 9"):
        gitops.builds_for_version(plane.container, "trigger", 9, actor="test")


def test_wait_follows_the_rollout_and_fails_when_it_is_rolled_back(
    plane: Plane, tmp_path: Path
) -> None:
    deployment = (
        "deployment:\n"
        "  name: waiter\n"
        "  build: fp32\n"
        "  rollout: {strategy: canary, settings: {stepWeights: [50, 100], intervalSeconds: 300}}\n"
    )
    v1, sample = two_inputs(2.0)
    spec = write_repo(tmp_path, spec_text("waiter", "  - {name: fp32}\n", deployment), v1, sample)
    shipway(plane, "apply", "-f", str(spec), "--wait")
    (tmp_path / "model" / "model.onnx").write_bytes(two_inputs(4.0)[0])
    env = {**settings_env(plane.settings), "COLUMNS": "250"}
    with subprocess.Popen(
        shipway_cmd("apply", "-f", str(spec), "--wait"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as waiting:
        found: dict[str, Any] = {}

        def rollout_running() -> bool:
            with plane.client() as client:
                found.update(next((r for r in client.rollouts("waiter") if r["running"]), {}))
            return bool(found)

        try:
            wait_until(rollout_running, BUILD_SECONDS, "the rollout of the new version")
            with plane.client() as client:
                client.operate_rollout("waiter", found["id"], "abort")
            out, err = waiting.communicate(timeout=120)
        finally:
            if waiting.poll() is None:
                waiting.kill()
    assert waiting.returncode == 1, out + err
    assert f"rollout {found['id']} rolled-back" in out


def test_two_applies_at_once_register_one_version(plane: Plane) -> None:
    onnx_bytes, sample = two_inputs(7.0)
    files = {"model/model.onnx": onnx_bytes, "model/sample.npz": sample}
    source = gitops.SpecSource(spec_text("twice", "  []\n"), lambda path: files[path], "test")
    plans: list[gitops.Plan] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            plans.append(gitops.apply(plane.container, source, dry_run=False, actor="test"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(plans) == 2
    assert sorted(p.actions[0].kind.value for p in plans) == ["register-version", "version"]
    with plane.client() as client:
        assert len(client.models("twice")) == 1


def test_an_apply_waits_for_another_of_the_same_model_then_says_so(plane: Plane) -> None:
    onnx_bytes, sample = two_inputs(8.0)
    files = {"model/model.onnx": onnx_bytes, "model/sample.npz": sample}
    source = gitops.SpecSource(spec_text("busy", "  []\n"), lambda path: files[path], "test")
    key = int.from_bytes(hashlib.sha256(b"shipway.gitops.apply:busy").digest()[:8], "big")
    before = rows(plane)
    with gitops._exclusive(plane.container, "busy"):  # another apply of the model runs
        with pytest.raises(Conflict, match="another apply of model 'busy' is running; try"):
            gitops.apply(plane.container, source, dry_run=False, actor="test", wait_seconds=0.5)
        # the lock is held outside any transaction: nothing for the server's
        # idle_in_transaction_session_timeout to end
        with plane.container.db.session() as session:
            states = list(
                session.scalars(
                    text(
                        "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.classid::bigint = :high AND l.objid::bigint = :low"
                    ),
                    {"high": key >> 32, "low": key & 0xFFFFFFFF},
                )
            )
        assert states == ["idle"]
    assert rows(plane) == before
    plan = gitops.apply(plane.container, source, dry_run=False, actor="test", wait_seconds=0)
    assert plan.actions[0].kind.value == "register-version"


def test_the_intent_loop_waits_for_a_running_apply_of_the_model(plane: Plane) -> None:
    onnx_bytes, sample = two_inputs(9.0)
    files = {"model/model.onnx": onnx_bytes, "model/sample.npz": sample}
    text_ = spec_text("race", "  - {name: fp32}\n", "deployment:\n  name: race\n  build: fp32\n")
    source = gitops.SpecSource(text_, lambda path: files[path], "test")
    plan = gitops.apply(plane.container, source, dry_run=False, actor="test")
    deploy = plan.actions[-1]
    assert deploy.kind.value == "deploy" and deploy.intent_id is not None
    assert deploy.build_id is not None
    with gitops._exclusive(plane.container, "race"):  # an apply of the model runs
        # the build succeeds meanwhile; nobody carries the intent out under the apply
        assert wait_builds(plane, [deploy.build_id])[deploy.build_id]["status"] == "succeeded"
        assert gitops.carry_out_intent(plane.container, deploy.intent_id) == "pending"
        gitops.process_intents(plane.container)
        with plane.container.db.session() as session:
            intent = session.get(GitopsIntent, deploy.intent_id)
            assert intent is not None and intent.status == "pending"
            assert session.scalar(select(Deployment).where(Deployment.name == "race")) is None
    # the apply over: the server's intent loop deploys
    assert wait_serving(plane, "race", deploy.build_id)["build_id"] == deploy.build_id


HOLD_LOCK = """
import sys
from pathlib import Path
from shipway.container import Container
from shipway.services import gitops
from shipway.settings import Settings
home = Path(sys.argv[1])
container = Container(Settings(home=home, database_url=f"sqlite:///{home / 'shipway.db'}"))
with gitops._exclusive(container, "local"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_on_sqlite_another_process_applying_the_model_is_waited_for(tmp_path: Path) -> None:
    """``shipway up`` runs the API and the worker as two processes on one SQLite file."""
    home = tmp_path / "home"
    container = Container(Settings(home=home, database_url=f"sqlite:///{home / 'shipway.db'}"))
    try:
        with subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            try:
                assert holder.stdout is not None and holder.stdin is not None
                assert holder.stdout.readline() == "held\n"
                busy = pytest.raises(Conflict, match="another apply of model 'local'")
                with busy, gitops._exclusive(container, "local", wait_seconds=0.3):
                    pass
                with gitops._exclusive(container, "other", wait_seconds=0):
                    pass  # another model's lock is its own
                holder.stdin.close()
                assert holder.wait(60) == 0
            finally:
                if holder.poll() is None:
                    holder.kill()
        with gitops._exclusive(container, "local", wait_seconds=0):
            pass  # the holder gone, its lock went with it
    finally:
        container.close()
