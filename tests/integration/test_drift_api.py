"""Drift of live traffic through the API: a real gateway in front of a real Triton
samples the requests; the API checks them against the version's reference profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipway.api.app import create_app
from shipway.container import Container
from shipway.examples import minilm
from shipway.gateway.store_routes import load_table
from shipway.notify import webhook
from shipway.services import deployments, models
from shipway.settings import Settings
from shipway.store.models import (
    AuditEvent,
    Build,
    BuildStatus,
    Deployment,
    Replica,
    ReplicaState,
)
from tests.integration.conftest import RunningTriton
from tests.support.gateway import running_gateway, send_rows
from tests.support.services import free_port
from tests.support.webhook import receiver

pytestmark = pytest.mark.integration


def test_live_windows_are_checked_against_the_reference_profile(
    tmp_path: Path, minilm_triton: RunningTriton, minilm_onnx: Path
) -> None:
    port = free_port()
    settings = Settings(
        home=tmp_path / "home",
        gateway_port=port,
        sample_rate=1.0,
        routes_refresh_seconds=0.2,
        webhook_secret="s3cret",
        drift_check_seconds=0,  # checks on demand only, so the test sees each one
    )
    container = Container(settings)
    container.registry.initialize()
    reference = minilm.write_sample(tmp_path / "reference.npz", rows=400, seq_len=32, seed=1)
    version = models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), reference.read_bytes(), {}),
        actor="test",
    )
    with container.db.session() as session:
        builds = [
            Build(
                model_version_id=version.id,
                recipe="fp32",
                target="onnxruntime-cpu",
                status=BuildStatus.SUCCEEDED,
            )
            for _ in range(2)
        ]
        session.add_all(builds)
        session.flush()
        first_build, build_id = builds[0].id, builds[1].id
    deployments.deploy(container, "web", first_build, "test")
    deployments.deploy(container, "web", build_id, "test")  # replaces the first as stable
    with container.db.session() as session:  # the replica: the real Triton serving MiniLM
        deployment = session.query(Deployment).filter_by(name="web").one()
        session.add(
            Replica(
                deployment_id=deployment.id,
                variant="stable",
                build_id=build_id,
                url=minilm_triton.process.url,
                triton_model_name=minilm_triton.model_name,
                state=ReplicaState.READY,
            )
        )

    with (
        running_gateway(settings, lambda: load_table(container.db), port=port) as (gateway, _),
        TestClient(create_app(container)) as api,
        receiver([503]) as (hook, calls),  # the hook fails once: the call is retried
    ):
        api.headers["Authorization"] = f"Bearer {settings.token}"
        policy = {"actions": ["alert", "webhook", "rollback"], "webhook_url": hook}
        assert api.put("/api/v1/deployments/web/drift-policy", json=policy).status_code == 200
        refused = api.put("/api/v1/deployments/web/drift-policy", json={"actions": ["page"]})
        assert refused.status_code == 422

        def stable() -> dict:  # type: ignore[type-arg]
            response = api.get("/api/v1/deployments/web/drift")
            assert response.status_code == 200, response.text
            return next(v for v in response.json()["variants"] if v["variant"] == "stable")

        first = stable()
        assert first["verdict"] == "insufficient-data"  # never "no-drift" without data

        send_rows(gateway, "web", minilm.make_inputs(150, seq_len=32, seed=5))
        calm = stable()
        assert calm["verdict"] == "no-drift" and calm["rows"] == 150, calm
        tests = {f["name"]: f["test"] for f in calm["features"]}
        assert tests == {"attention_mask.sum": "ks", "input_ids": "chi-square", "461": "mmd"}
        assert calm["missing"] == []  # the token states are not relayed: not "missing"

        # Traffic turns to short requests: the lengths, and so the token mix, move.
        send_rows(gateway, "web", minilm.make_inputs(150, seq_len=8, seed=6))
        moved = stable()
        assert moved["verdict"] == "drift", moved
        drifted = {f["name"] for f in moved["features"] if f["drifted"]}
        assert "attention_mask.sum" in drifted

        # The breach: one signed webhook call (retried once, one event id), the
        # previous stable build back as stable, an audit event with the numbers.
        assert len(calls) == 2
        headers, body = calls[-1]
        assert webhook.verify("s3cret", body, headers[webhook.SIGNATURE_HEADER])
        event = json.loads(body)
        assert event["event"] == "drift.detected" and event["build_id"] == build_id
        assert "attention_mask.sum" in event["features"]
        assert {h[webhook.EVENT_HEADER] for h, _ in calls} == {event["id"]}
        assert api.get("/api/v1/deployments/web").json()["build_id"] == first_build
        with container.db.session() as session:
            detected = session.query(AuditEvent).filter_by(action="drift.detected").one()
        assert detected.details["outcomes"]["rollback"] == {"done": True, "to_build": first_build}
        assert detected.details["outcomes"]["webhook"]["attempts"] == 2

        exported = api.get("/metrics").text
        assert 'shipway_drift_detected{deployment="web",variant="stable"} 1.0' in exported
        assert 'shipway_drift_feature_p_adjusted{deployment="web",feature="attention_mask.sum"' in (
            exported
        )

        body = api.get("/api/v1/deployments/web/drift").json()
        assert len(calls) == 2  # still drifting: no second event
        assert [h["verdict"] for h in body["history"][1:4]] == [
            "drift",
            "no-drift",
            "insufficient-data",
        ]
        assert api.get("/api/v1/deployments/nope/drift").status_code == 404
        bad = api.get("/api/v1/deployments/web/drift", params={"min_rows": 1})
        assert bad.status_code == 422 and "min_rows" in bad.json()["detail"]
    container.close()
