"""Drift of live traffic through the API: a real gateway in front of a real Triton
samples the requests; the API checks them against the version's reference profile."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from shipway.api.app import create_app
from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.container import Container
from shipway.examples import minilm
from shipway.gateway.store_routes import load_table
from shipway.notify import webhook
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.services import deployments, models
from shipway.services import drift as drift_service
from shipway.settings import Settings
from shipway.store.models import (
    AuditEvent,
    Deployment,
    Replica,
    ReplicaState,
    Variant,
)
from tests.integration.conftest import RunningTriton
from tests.support.builds import succeeded_builds
from tests.support.gateway import running_gateway, send_rows
from tests.support.services import free_port, wait_until
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
    first_build, build_id = succeeded_builds(container, version, 2)
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


def scorer_onnx() -> bytes:
    """y = x·W + b: three float features in, two scores out (a Gemm)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    weights = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1.0, -0.5, 0.5, 2.0, -1.0, 0.3])
    bias = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.1, -0.2])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"])], "scorer", [x], [y], [weights, bias]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def scorer_triton(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTriton]:
    """A real tritonserver serving the scorer as a build packages it."""
    root = tmp_path_factory.mktemp("scorer")
    (root / "scorer.onnx").write_bytes(scorer_onnx())
    signature = read_signature(load_model(scorer_onnx()))
    package_repository(
        root / "repo", "scorer-test", root / "scorer.onnx", signature, Target.ONNXRUNTIME_CPU
    )
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(120)
        yield RunningTriton(process, "scorer-test", signature)
    finally:
        process.stop()


def send_binary(client: httpx.Client, gateway_url: str, x: np.ndarray) -> str:
    """One KServe request with ``x`` as a binary tensor (the only way JSON-framed
    requests carry NaN); the scores asked for in binary too. Returns the variant that
    answered."""
    tensor = triton_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    wanted = [triton_http.InferRequestedOutput("y", binary_data=True)]
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor], wanted)
    response = client.post(
        f"{gateway_url}/v2/models/scores/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["Inference-Header-Content-Length"])
    scores = triton_http.InferenceServerClient.parse_response_body(
        response.content, header_length=header_length
    ).as_numpy("y")
    assert np.isnan(scores[np.isnan(x).any(axis=1)]).all()  # NaN in, NaN out
    return response.headers["x-shipway-variant"]


def test_nan_in_sampled_traffic_is_evidence_not_an_error(
    tmp_path: Path, scorer_triton: RunningTriton
) -> None:
    port = free_port()
    settings = Settings(
        home=tmp_path / "home",
        gateway_port=port,
        sample_rate=1.0,
        routes_refresh_seconds=0.2,
        drift_check_seconds=0,
    )
    container = Container(settings)
    container.registry.initialize()
    sample = io.BytesIO()
    np.savez(sample, x=np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32))
    version = models.register(
        container, models.Registration("scorer", scorer_onnx(), sample.getvalue(), {}), "test"
    )
    stable_build, canary_build = succeeded_builds(container, version, 2)
    deployments.deploy(container, "scores", stable_build, "test")
    with container.db.session() as session:  # a canary at 50 %, both on the real Triton
        deployment = session.query(Deployment).filter_by(name="scores").one()
        deployment.variants[0].weight = 50
        deployment.variants.append(Variant(name="canary", build_id=canary_build, weight=50))
        for variant, build_id in (("stable", stable_build), ("canary", canary_build)):
            session.add(
                Replica(
                    deployment_id=deployment.id,
                    variant=variant,
                    build_id=build_id,
                    url=scorer_triton.process.url,
                    triton_model_name=scorer_triton.model_name,
                    state=ReplicaState.READY,
                )
            )

    rng = np.random.default_rng(1)
    rows: Counter[str] = Counter()
    with (
        running_gateway(settings, lambda: load_table(container.db), port=port) as (gateway, _),
        TestClient(create_app(container)) as api,
        httpx.Client(timeout=30) as client,
    ):
        api.headers["Authorization"] = f"Bearer {settings.token}"

        def send_until_both_have(count: int) -> bool:
            x = rng.normal(size=(8, 3)).astype(np.float32)  # 8: the packaged max batch
            x[:2, 1] = np.nan  # two rows of every eight: a client's missing value
            rows[send_binary(client, gateway, x)] += 8
            return min(rows["stable"], rows["canary"]) >= count

        wait_until(lambda: send_until_both_have(100), 120, "100 sampled rows per variant")

        response = api.get("/api/v1/deployments/scores/drift", params={"min_rows": 50})
        assert response.status_code == 200, response.text
        for variant in response.json()["variants"]:
            assert variant["verdict"] == "drift", variant
            assert variant["rows"] == rows[variant["variant"]] and variant["missing"] == []
            results = {(f["name"], f["test"]): f for f in variant["features"]}
            shares = {k: f["statistic"] for k, f in results.items() if k[1] == "non-finite"}
            # x[1] and both scores of those rows: NaN in 2 rows of 8, none in the reference.
            assert shares == {("x[1]", "non-finite"): 0.25, ("y", "non-finite"): 0.25}
            assert results[("x[1]", "non-finite")]["drifted"]
            assert results[("y", "non-finite")]["drifted"]
            assert ("x[1]", "ks") in results and ("y", "mmd") in results  # finite values, tested

        # The rollout's drift check of the canary against stable: a number, not a 500.
        score = drift_service.score_between(container, "scores", "stable", "canary", min_rows=50)
        assert score is not None and math.isfinite(score)
        assert score < 0.5  # both carry the same traffic, NaN share included
        history = api.get("/api/v1/deployments/scores/drift", params={"min_rows": 50}).json()
        assert [h["verdict"] for h in history["history"]][:2] == ["drift", "drift"]
    container.close()
