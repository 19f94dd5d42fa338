"""``POST /api/v1/hooks/mlflow`` with MLflow delivering: a real MLflow 3 tracking server
holds a webhook made with ``MlflowClient().create_webhook`` that points at a live
Shipway API process; registering a version through Shipway, or setting an alias on it,
makes that server sign and send the event, and the builds the model's ``shipway.yaml``
asks for appear (queued by a real Celery worker that consumes only the hook queue, built by
one that consumes only the build queue, as the chart splits them).

MLflow refuses to deliver to private addresses and to plain ``http`` by default
(``mlflow/utils/validation.py``'s ``_validate_webhook_url`` at creation and
``mlflow/webhooks/ssrf.py`` at connect time, against DNS rebinding). Both are MLflow
server settings: the server here runs with ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` and
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https``, as a cluster-internal MLflow calling an
in-cluster Shipway must too. ``MLFLOW_WEBHOOK_CACHE_TTL=1``: the server caches who
listens to an event for a minute by default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from mlflow import MlflowClient
from mlflow.webhooks.delivery import _generate_hmac_signature
from sqlalchemy import select

from shipway.container import Container
from shipway.settings import Settings
from shipway.store.models import Build, ModelVersion
from tests.support import graphs
from tests.support.mlflow import mlflow_server as run_mlflow_server
from tests.support.processes import shipway_process
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration

SECRET = "mlflow-hook-secret"
ADMIN = "admin-token"
MODEL = "mlhooked"
EVENTS = ["model_version.created", "model_version_alias.created"]

SPEC = """\
apiVersion: shipway.io/v1alpha1
kind: ModelRelease
model:
  name: {model}
  onnx: model.onnx
  sample: sample.npz
builds:
  - name: fp32
    recipe: fp32
    target: onnxruntime-cpu
triggers:
  mlflow:
    events: [{events}]
    aliases: [champion]
"""


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """An MLflow tracking server on a SQL backend (webhooks need one) that may deliver
    to this machine."""
    env = {
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    with run_mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", env) as url:
        yield url


@pytest.fixture
def plane(
    tmp_path: Path, postgres_url: str, redis_url: str, mlflow_server: str
) -> Iterator[tuple[Container, str]]:
    """Shipway on the MLflow server: an API process MLflow can call, and a worker."""
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
        mlflow_tracking_uri=mlflow_server,
        api_port=free_port(),
        api_tokens={ADMIN: "admin"},
        mlflow_webhook_secret=SECRET,
        drift_check_seconds=0,
        rollout_tick_seconds=0,
    )
    container = Container(settings)
    api = settings.resolved_api_url
    try:
        with (
            shipway_process(
                settings, "serve", "api", "--no-migrate", log=tmp_path / "api.log"
            ) as proc,
            # split as the chart runs them: deliveries on one worker, builds on another
            shipway_process(
                settings,
                *("serve", "worker", "--no-migrate", "--consume", "hooks"),
                log=tmp_path / "hooks-worker.log",
            ),
            shipway_process(
                settings,
                *("serve", "worker", "--no-migrate", "--consume", "builds"),
                log=tmp_path / "worker.log",
            ),
        ):

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "api.log").read_text()[-3000:])
                try:
                    return httpx.get(f"{api}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, 60, "the Shipway API")
            yield container, api
    finally:
        container.close()


def deliveries(api: str, **match: Any) -> list[dict[str, Any]]:
    found = httpx.get(
        f"{api}/api/v1/hooks/deliveries", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert found.status_code == 200, found.text
    return [d for d in found.json() if all(d.get(k) == v for k, v in match.items())]


def one_delivery(api: str, timeout: float = 90, **match: Any) -> dict[str, Any]:
    """The delivery matching ``match`` once it is finished (not queued)."""
    seen: list[dict[str, Any]] = []

    def done() -> bool:
        seen[:] = deliveries(api, **match)
        return len(seen) == 1 and seen[0]["status"] != "queued"

    try:
        wait_until(done, timeout, f"an MLflow delivery {match}")
    except TimeoutError:
        raise AssertionError(f"{match}: {seen}; all: {deliveries(api)}") from None
    return seen[0]


def builds_of(container: Container, version: int) -> list[Build]:
    with container.db.session() as session:
        query = (
            select(Build)
            .join(ModelVersion)
            .where(ModelVersion.name == MODEL, ModelVersion.version == version)
        )
        return list(session.scalars(query))


def apply(container: Container, events: list[str]) -> None:
    from shipway.services import gitops

    onnx, sample = graphs.gemm_classifier()
    files = {"model.onnx": onnx, "sample.npz": sample}
    text = SPEC.format(model=MODEL, events=", ".join(events))
    source = gitops.SpecSource(text=text, read=lambda path: files[path], origin="test")
    gitops.apply(container, source, dry_run=False, actor="test")


def register(api: str, seed: int) -> int:
    onnx, sample = graphs.gemm_classifier(rows=16 + seed)
    response = httpx.post(
        f"{api}/api/v1/models/{MODEL}/versions",
        files={"onnx": ("m.onnx", onnx), "sample": ("s.npz", sample)},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["version"])


def test_mlflow_delivers_signed_events_and_the_spec_s_builds_appear(
    plane: tuple[Container, str], mlflow_server: str
) -> None:
    container, api = plane
    client = MlflowClient(mlflow_server)
    webhook = client.create_webhook(
        name="shipway",
        url=f"{api}/api/v1/hooks/mlflow",
        events=EVENTS,
        secret=SECRET,
    )
    assert webhook.url.endswith("/api/v1/hooks/mlflow")

    # The spec asks for builds on a "champion" alias only. Applying it registers
    # version 1 (its model_version.created is ignored: no spec yet, or one without it).
    apply(container, ["model_version_alias.created"])
    assert len(builds_of(container, 1)) == 1  # apply's own build

    # A version registered through Shipway: MLflow announces it; the spec does not ask.
    two = register(api, 1)
    ignored = one_delivery(api, model=MODEL, version=two, event="model_version.created")
    assert ignored["status"] == "ignored"
    assert "does not list 'model_version.created'" in ignored["message"]

    # An alias the spec does not list: ignored, saying so; then "champion": built.
    client.set_registered_model_alias(MODEL, "staging", str(two))
    staging = one_delivery(api, alias="staging")
    assert staging["status"] == "ignored" and "does not list 'staging'" in staging["message"]
    assert builds_of(container, two) == []
    client.set_registered_model_alias(MODEL, "champion", str(two))
    champion = one_delivery(api, alias="champion")
    assert champion["status"] == "applied", champion
    assert champion["provider"] == "mlflow" and champion["version"] == two
    built = builds_of(container, two)
    assert [(b.recipe, b.target) for b in built] == [("fp32", "onnxruntime-cpu")]

    # The spec now asks on every new version: the next registration is built.
    apply(container, ["model_version.created"])
    three = register(api, 2)
    created = one_delivery(api, model=MODEL, version=three, event="model_version.created")
    assert created["status"] == "applied", created
    assert [(b.recipe, b.target) for b in builds_of(container, three)] == [
        ("fp32", "onnxruntime-cpu")
    ]


def test_signed_by_mlflow_s_own_function_replayed_or_late(
    plane: tuple[Container, str],
) -> None:
    """The checks MLflow's server cannot be made to fail: a replayed delivery id, a
    delivery older than the 300 s window, another secret. Signed with MLflow's own
    ``_generate_hmac_signature``, posted to the live API."""
    _, api = plane
    body = '{"entity": "model_version", "action": "created", "data": {"name": "x", "version": "1"}}'

    def post(delivery: str, timestamp: int, secret: str = SECRET) -> httpx.Response:
        return httpx.post(
            f"{api}/api/v1/hooks/mlflow",
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "X-MLflow-Delivery-Id": delivery,
                "X-MLflow-Timestamp": str(timestamp),
                "X-MLflow-Signature": _generate_hmac_signature(
                    secret, delivery, str(timestamp), body
                ),
            },
        )

    now = int(time.time())
    first = post("d-1", now)
    assert first.status_code == 200, first.text  # no spec for model x: ignored, recorded
    assert "has no triggers.mlflow" in first.json()["detail"]
    again = post("d-1", now)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    late = post("d-2", now - 301)
    assert late.status_code == 401
    assert "s old; deliveries are accepted within 300 s of now" in late.json()["detail"]
    other = post("d-3", now, secret="another")
    assert other.status_code == 401 and "does not match" in other.json()["detail"]
    assert [d["delivery_id"] for d in deliveries(api)] == ["d-1"]


def test_a_version_shipway_does_not_hold_is_retried_then_fails_naming_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """MLflow announces a version before Shipway's registration has stored it: the worker's
    attempts before the last leave the delivery queued (the task retries); the last
    records the failure with the reason. A finished delivery is not run again."""
    from shipway.errors import Unavailable
    from shipway.services import hooks
    from shipway.store.models import HookDelivery

    container = Container(Settings(home=tmp_path / "home", database_url=postgres_url))
    try:
        with container.db.session() as session:
            row = HookDelivery(
                key="mlflow:late-1",
                provider="mlflow",
                delivery_id="late-1",
                event="model_version.created",
                model="elsewhere",
                version=4,
            )
            session.add(row)
        with pytest.raises(Unavailable, match="'elsewhere' version 4 is not registered"):
            hooks.process(container, row.id, final=False)
        assert hooks.get(container, row.id).status == "queued"
        assert hooks.process(container, row.id, final=True) == "failed"
        failed = hooks.get(container, row.id)
        assert failed.status == "failed" and failed.finished_at is not None
        assert "versions registered in MLflow directly cannot be built" in (failed.message or "")
        assert hooks.process(container, row.id, final=True) == "failed"  # left alone
    finally:
        container.close()


def test_oversized_signed_values_are_refused_not_stored(tmp_path: Path, postgres_url: str) -> None:
    """Signed, so past the signature check, but not storable (PostgreSQL's integer and
    bounded columns, no NUL in text) or not parseable (nested too deeply): 400 naming
    the field, nothing recorded; a timestamp too long to be one is a bad signature (401).
    The largest values that fit are stored."""
    from fastapi.testclient import TestClient

    from shipway.api.app import create_app
    from shipway.services import hooks

    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        mlflow_webhook_secret=SECRET,
        drift_check_seconds=0,
        rollout_tick_seconds=0,
    )
    container = Container(settings)

    def post(api: TestClient, body: str, delivery: str, stamp: str = "") -> httpx.Response:
        stamp = stamp or str(int(time.time()))
        return api.post(
            "/api/v1/hooks/mlflow",
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "X-MLflow-Delivery-Id": delivery,
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": _generate_hmac_signature(SECRET, delivery, stamp, body),
            },
        )

    def created(name: str, version: str) -> str:
        data = {"name": name, "version": version}
        return json.dumps({"entity": "model_version", "action": "created", "data": data})

    try:
        with TestClient(create_app(container)) as api:
            for delivery, body, message in (
                ("o-1", created("m", str(2**31)), "data.version must be a whole number"),
                ("o-2", created("m", "9" * 5000), "data.version must be a whole number"),
                ("o-3", created("m" * 201, "1"), "data.name must be at most 200"),
                ("o-4", created("m\x00", "1"), "data.name must not contain control"),
                ("o-5", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
            ):
                response = post(api, body, delivery)
                assert response.status_code == 400, response.text
                assert message in response.json()["detail"]
            for stamp in ("9" * 400, "1" * 5000):
                late = post(api, created("m", "1"), "o-6", stamp)
                assert late.status_code == 401, late.text
                assert "whole seconds since the epoch" in late.json()["detail"]
            assert hooks.list_deliveries(container) == []

            fits = post(api, created("m" * 200, str(2**31 - 1)), "o-7")
            assert fits.status_code == 200, fits.text  # no spec: recorded as ignored
            (stored,) = hooks.list_deliveries(container)
            assert (stored.model, stored.version) == ("m" * 200, 2**31 - 1)
            assert stored.finished_at == stored.received_at  # ignored as received
    finally:
        container.close()
