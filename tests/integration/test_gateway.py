"""The gateway in front of real tritonservers: forwarding, errors, routes from the
store, shadows and samples."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from shipway.builds.accuracy import AgreementRule
from shipway.examples import minilm
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.gateway.store_routes import load_table
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from shipway.store.db import Database, migrate
from shipway.store.models import (
    Build,
    Deployment,
    ModelVersion,
    Replica,
    ReplicaState,
    Split,
    Variant,
)
from tests.integration.conftest import RunningTriton
from tests.integration.test_triton import infer
from tests.support.answers import token_state_error
from tests.support.gateway import (
    answers,
    flaky_replicas,
    gateway_series,
    infer_flaky,
    running_gateway,
)
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        home=tmp_path, routes_refresh_seconds=0.2, health_check_seconds=0.3, **overrides
    )


def table_of(**deployments: tuple[VariantRoute, ...]) -> RoutingTable:
    return RoutingTable({n: DeploymentRoute(n, v) for n, v in deployments.items()})


def test_inference_through_the_gateway_matches_onnxruntime(
    tmp_path: Path,
    minilm_triton: RunningTriton,
    minilm_onnx: Path,
    minilm_inputs: dict[str, np.ndarray],
) -> None:
    replica = ReplicaRoute(minilm_triton.process.url, minilm_triton.model_name)
    table = table_of(web=(VariantRoute("stable", 100, (replica,)),))
    expected = ort.InferenceSession(str(minilm_onnx)).run([minilm.HIDDEN_STATE], minilm_inputs)[0]
    with running_gateway(settings_for(tmp_path, sample_rate=1.0), lambda: table) as (url, _):
        for binary in (True, False):
            served = infer(url, "web", minilm_inputs, binary)
            assert token_state_error(served, expected, minilm_inputs["attention_mask"]) < 1e-4

        metadata = httpx.get(f"{url}/v2/models/web").json()
        assert metadata["name"] == "web"
        assert {i["name"] for i in metadata["inputs"]} == {"input_ids", "attention_mask"}
        assert httpx.get(f"{url}/v2/models/web/ready").status_code == 200

        metrics = httpx.get(f"{url}/metrics").text
        line = (
            'shipway_gateway_requests_total{code="200",deployment="web",'
            f'replica="{replica.url}",variant="stable"}} 2.0'
        )
        assert line in metrics
        assert (
            'shipway_gateway_request_seconds_count{deployment="web",variant="stable"} 2.0'
            in metrics
        )
        assert answers(url, "web") == {("stable", "2xx"): 2}

        # Both requests were sampled (rate 1.0), after their answers were sent; the admin
        # API returns their inputs.
        assert httpx.get(f"{url}/admin/samples/web/stable").status_code == 401
        auth = {"Authorization": f"Bearer {Settings().token}"}

        def samples() -> list[dict[str, object]]:
            address = f"{url}/admin/samples/web/stable?limit=5"
            return httpx.get(address, headers=auth).json()["samples"]  # type: ignore[no-any-return]

        wait_until(lambda: len(samples()) >= 2, 30, "two samples")
        kept = samples()
        assert len(kept) == 2
        assert kept[0]["inputs"]["input_ids"] == minilm_inputs["input_ids"].tolist()  # type: ignore[index]


def test_errors_are_kserve_shaped(tmp_path: Path, minilm_triton: RunningTriton) -> None:
    replica = ReplicaRoute(minilm_triton.process.url, minilm_triton.model_name)
    gone = ReplicaRoute(f"http://127.0.0.1:{free_port()}", "m")
    table = table_of(
        web=(VariantRoute("stable", 100, (replica,)),),
        cold=(VariantRoute("stable", 100, ()),),
        gone=(VariantRoute("stable", 100, (gone,)),),
    )
    with running_gateway(settings_for(tmp_path), lambda: table) as (url, _):
        response = httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": []})
        assert response.status_code == 404
        assert response.json() == {"error": "deployment 'nope' does not exist"}
        cold = httpx.post(f"{url}/v2/models/cold/infer", json={"inputs": []})
        assert cold.status_code == 503 and "no ready replica" in cold.json()["error"]
        # Triton's own 400 for a malformed request comes back as it was, not retried.
        bad = httpx.post(f"{url}/v2/models/web/infer", json={"inputs": []})
        assert bad.status_code == 400 and "error" in bad.json()
        # A replica that is gone: a 502 after the retry found no other, not a hang or trace.
        down = httpx.post(f"{url}/v2/models/gone/infer", json={"inputs": []})
        assert down.status_code == 502 and "no replica could be reached" in down.json()["error"]
        assert httpx.get(f"{url}/v2/nothing/here").status_code == 404
        # A binary-tensor header length that is no number: the client's fault, said so.
        odd = httpx.post(
            f"{url}/v2/models/web/infer",
            content=b"{}",
            headers={"inference-header-content-length": "twelve"},
        )
        assert odd.status_code == 400 and "must be a byte count" in odd.json()["error"]
        auth = {"Authorization": f"Bearer {settings_for(tmp_path).token}"}
        for limit in ("0", "many", "100000"):
            samples = httpx.get(f"{url}/admin/samples/web/stable?limit={limit}", headers=auth)
            assert samples.status_code == 400 and "limit must be" in samples.json()["error"]
        # Unknown names share one metric label: probing names cannot grow /metrics.
        for name in ("a1", "a2", "a3"):
            httpx.post(f"{url}/v2/models/{name}/infer", json={"inputs": []})
        no_route = [
            line
            for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith("shipway_gateway_no_route_total")
        ]
        assert sorted(no_route) == [
            'shipway_gateway_no_route_total{deployment="(unknown)"} 4.0',
            'shipway_gateway_no_route_total{deployment="cold"} 1.0',
        ]
        # Every answer to a known deployment once, by class; variant "" when none was
        # chosen (no serving variant; a request refused before the choice).
        assert answers(url, "web") == {("stable", "4xx"): 1, ("", "4xx"): 1}
        assert answers(url, "cold") == {("", "no_ready_replica"): 1}
        assert answers(url, "gone") == {("stable", "connection_reset"): 1}
        assert answers(url, "nope") == answers(url, "(unknown)") == {}


def test_routes_come_from_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    migrate(url)
    db = Database(url)
    with db.session() as session:
        mv = ModelVersion(
            name="m", version=1, mlflow_run_id="r", onnx_sha256="0", signature={}, tags={}
        )
        session.add(mv)
        session.flush()
        build = Build(model_version_id=mv.id, recipe="fp32", target="onnxruntime-cpu")
        mv2 = ModelVersion(
            name="m", version=2, mlflow_run_id="r2", onnx_sha256="1", signature={}, tags={}
        )
        session.add_all([build, mv2])
        session.flush()
        newer = Build(model_version_id=mv2.id, recipe="int8", target="onnxruntime-cpu")
        session.add(newer)
        session.flush()
        d = Deployment(name="web", build_id=build.id, split=Split.STICKY, sticky_header="x-user")
        d.variants = [
            Variant(name="stable", build_id=build.id, weight=80),
            Variant(name="canary", build_id=build.id, weight=20),
        ]
        d.replicas = [
            Replica(
                variant="stable",
                build_id=build.id,
                url="http://s1",
                triton_model_name="t",
                state=ReplicaState.READY,
            ),
            Replica(
                variant="stable",
                build_id=build.id,
                url="http://s2",
                triton_model_name="t",
                state=ReplicaState.DRAINING,
            ),
            Replica(
                variant="canary",
                build_id=build.id,
                url="http://c1",
                triton_model_name="t",
                state=ReplicaState.STARTING,
            ),
            # Stable changing build: the new build's replica is ready beside the old one.
            Replica(
                variant="stable",
                build_id=newer.id,
                url="http://s3",
                triton_model_name="t2",
                state=ReplicaState.READY,
            ),
        ]
        session.add(d)
    route = load_table(db).get("web")
    db.dispose()
    assert route is not None and route.sticky and route.sticky_header == "x-user"
    variants = {v.name: v for v in route.variants}
    assert variants["stable"].weight == 80
    assert [r.url for r in variants["stable"].replicas] == ["http://s1", "http://s3"]  # no s2
    assert variants["canary"].replicas == ()  # starting: not yet
    # Each replica's registered version is its own build's.
    assert [(r.triton_model_name, r.version) for r in variants["stable"].replicas] == [
        ("t", 1),
        ("t2", 2),
    ]
    assert route.versions() == (1, 2) and route.pinned(2).choose(None, 0.0).replicas == (  # type: ignore[union-attr]
        variants["stable"].replicas[1],
    )


def test_shadow_traffic_is_compared_and_never_answers(
    tmp_path: Path, triton_dist: TritonDistribution
) -> None:
    with flaky_replicas(triton_dist, tmp_path, 2) as replicas:
        (live, _), (shadow, shadow_flag) = replicas
        table = table_of(
            flaky=(
                VariantRoute("stable", 100, (ReplicaRoute(live.url, "flaky"),)),
                VariantRoute(
                    "shadow",
                    0,
                    (ReplicaRoute(shadow.url, "flaky"),),
                    shadow_share=1.0,
                    agreement=AgreementRule(batched=False),  # the flaky model: no batch axis
                ),
            )
        )
        with running_gateway(settings_for(tmp_path), lambda: table) as (url, _):

            def outcomes() -> dict[str, float]:
                counted = gateway_series(url, "shipway_gateway_shadow_total", "flaky")
                return {dict(k)["outcome"]: v for k, v in counted.items()}

            # The mirrors run after the answers: each phase waits for all 5 of its own
            # before the next begins (a mirror still in flight when the shadow starts
            # failing would otherwise count as an error of the first phase).
            assert all(infer_flaky(url) == 200 for _ in range(5))
            wait_until(lambda: sum(outcomes().values()) >= 5, 60, "the first 5 shadows")
            assert outcomes() == {"agree": 5}
            shadow_flag.touch()  # the shadow now fails: users must not notice
            assert all(infer_flaky(url) == 200 for _ in range(5))
            wait_until(lambda: sum(outcomes().values()) >= 10, 60, "the next 5 shadows")
            assert outcomes() == {"agree": 5, "error": 5}
            # Mirrors are no answers: only the 10 live requests are counted, on stable.
            assert answers(url, "flaky") == {("stable", "2xx"): 10}
