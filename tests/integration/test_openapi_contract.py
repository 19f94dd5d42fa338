"""The OpenAPI document is the contract: schemathesis runs every check over every
operation of the real API, served by uvicorn (on a SQLite and on a PostgreSQL store;
MLflow on SQLite, Redis broker, a real gateway for drift checks), with a fixed seed
and a bounded number of examples, through its own command line as a user runs it.

Every check means: no server error; every status and body as the document says
(RFC 3339 timestamps, one error shape); requests the document forbids are refused;
requests it allows are accepted; a 405 names every method of the path; auth is not
ignored; what was created can be read, what was deleted is gone (stateful phase).
Registered models, builds, deployments and a running rollout are there first, so
the cases reach past "not found".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shipway.api.app import create_app
from shipway.cli.client import ApiClient, ApiError
from shipway.container import Container
from shipway.gateway.store_routes import load_table
from shipway.settings import Settings
from tests.support.builds import publish_flaky_build, register_doubler
from tests.support.gateway import running_gateway
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration

ADMIN = "contract-admin-token"
SEED = 20261130
MAX_EXAMPLES = 30  # per operation and phase

# Rules that tie fields or files together, which JSON Schema cannot state: for these
# operations a schema-valid request may still be refused (422, with the reason).
ACROSS_FIELDS = {
    ("POST", "/api/v1/models/{name}/versions"): "the ONNX graph, the sample fitting it, tags",
    ("POST", "/api/v1/builds"): "a recipe/target pair with a build path",
    ("PUT", "/api/v1/deployments/{name}"): "replicas <= max_replicas",
    ("PUT", "/api/v1/deployments/{name}/variants/{variant}"): "live or shadow; replicas",
    ("PUT", "/api/v1/deployments/{name}/routing"): "weights sum to 100; shadows take none",
    ("PUT", "/api/v1/deployments/{name}/drift-policy"): "a webhook needs its URL and secret",
    ("POST", "/api/v1/deployments/{name}/rollouts"): "the strategy's settings",
    ("POST", "/api/v1/apply"): "the YAML spec, the files it names, the model in them",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default


def config_toml() -> str:
    """schemathesis.toml: every check, a fixed seed, bounded examples, the admin token,
    and the 422 allowance for the operations above (and those only)."""
    q = json.dumps  # a JSON string is a TOML basic string
    lines = [
        f"seed = {SEED}",
        "workers = 1",
        f"headers = {{ Authorization = {q('Bearer ' + ADMIN)} }}",
        "[checks]",
        "enabled = true",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "deterministic = true",
        'database = "none"',
    ]
    for method, path in ACROSS_FIELDS:
        lines += [
            "[[operations]]",
            f"include-method = {q(method)}",
            f"include-path = {q(path)}",
            "checks.positive_data_acceptance.expected-statuses = " + json.dumps([*ACCEPTED, "422"]),
        ]
    return "\n".join(lines) + "\n"


def seed(container: Container, api: TestClient) -> None:
    """Two versions with a succeeded build each, a deployment with a rollout running,
    another without, and a queued build."""
    v1, v2 = register_doubler(container, "m"), register_doubler(container, "m")
    stable, candidate = publish_flaky_build(container, v1), publish_flaky_build(container, v2)
    for name in ("web", "calm"):
        assert api.put(f"/api/v1/deployments/{name}", json={"build_id": stable}).status_code == 200
    started = api.post("/api/v1/deployments/web/rollouts", json={"build_id": candidate})
    assert started.status_code == 201, started.text
    queued = api.post("/api/v1/builds", json={"model": "m", "version": 1})
    assert queued.status_code == 202, queued.text


@contextmanager
def serving(app: FastAPI, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, 30, "the API")
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(params=["sqlite", "postgresql"])
def api_url(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[str]:
    """The API on either store: SQLite hands back naive timestamps, PostgreSQL refuses
    NUL characters and over-long strings; the document must hold on both."""
    gateway_port = free_port()
    settings = Settings(
        home=tmp_path / "home",
        database_url=request.getfixturevalue("postgres_url")
        if request.param == "postgresql"
        else None,
        broker_url=redis_url,
        result_backend=redis_url,
        api_tokens={ADMIN: "admin"},
        gateway_port=gateway_port,
        drift_check_seconds=0,
        rollout_tick_seconds=0,
        _env_file=None,
    )
    container = Container(settings)
    app = create_app(container)
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN}"
        seed(container, api)
    with (
        running_gateway(settings, lambda: load_table(container.db), port=gateway_port),
        serving(app, free_port()) as url,
    ):
        yield url
    container.close()


def test_the_api_keeps_its_openapi_contract(api_url: str, tmp_path: Path) -> None:
    document = httpx.get(f"{api_url}/openapi.json").json()
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert len(operations) == 28 and set(ACROSS_FIELDS) <= operations  # the whole API

    (tmp_path / "schemathesis.toml").write_text(config_toml())
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "--no-color",
            "run",
            f"{api_url}/openapi.json",
            "--checks",
            "all",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout)  # the numbers, for the record (-s)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    assert "Tested: 28" in run.stdout, run.stdout
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and int(counts[1]) == int(counts[2]) > 28 * MAX_EXAMPLES, run.stdout


def test_the_cli_client_reads_the_error_bodies(settings: Settings) -> None:
    """The CLI prints ``<status>: <detail>``: one sentence for every kind of error."""
    container = Container(settings)
    with serving(create_app(container), free_port()) as url, ApiClient(url, settings.token) as cli:
        with pytest.raises(ApiError) as invalid:
            cli.set_variant("web", "canary", build_id="0123456789ab", weight=101)
        assert (invalid.value.status, str(invalid.value)) == (
            422,
            "422: body.weight must be less than or equal to 100, got 101",
        )
        with pytest.raises(ApiError) as unknown:
            cli.build("0123456789ab")
        assert str(unknown.value) == "404: build '0123456789ab' does not exist"
        with pytest.raises(ApiError) as across:
            cli.create_build("m", 1, "fp16", "onnxruntime-cpu")
        assert str(across.value).startswith("422: recipe 'fp16' for target 'onnxruntime-cpu'")
    container.close()
