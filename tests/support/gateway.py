"""Run the real gateway (uvicorn, uvloop, httptools) in a thread, and real Triton
replicas of the test models, for integration tests."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from shipway.examples import minilm
from shipway.gateway.app import Gateway
from shipway.gateway.routing import RoutingTable
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from tests.support.services import free_port, wait_until

MODELS = Path(__file__).parent / "models"


@contextmanager
def running_gateway(
    settings: Settings, load_table: Callable[[], RoutingTable], port: int | None = None
) -> Iterator[tuple[str, Gateway]]:
    port = port or free_port()
    gateway = Gateway(settings, load_table)
    server = uvicorn.Server(
        uvicorn.Config(
            gateway,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            loop="uvloop",
            http="httptools",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "gateway")
    try:
        yield f"http://127.0.0.1:{port}", gateway
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def flaky_replicas(
    dist: TritonDistribution, workdir: Path, count: int
) -> Iterator[list[tuple[TritonProcess, Path]]]:
    """``count`` tritonservers serving the flaky model; each with its own failure flag."""
    started: list[tuple[TritonProcess, Path]] = []
    repo = workdir / "flaky-repo"
    shutil.copytree(MODELS, repo, dirs_exist_ok=True)
    try:
        for index in range(count):
            flag = workdir / f"fail-{index}"
            process = TritonProcess(dist, repo, workdir / f"flaky-{index}.log")
            process.start(extra_env={"FLAKY_FAIL_FLAG": str(flag)})
            started.append((process, flag))
        for process, _ in started:
            process.wait_ready(60)
        yield started
    finally:
        for process, _ in started:
            process.stop()


def infer_flaky(url: str, deployment: str = "flaky", timeout: float = 10.0) -> int:
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    return httpx.post(f"{url}/v2/models/{deployment}/infer", json=body, timeout=timeout).status_code


def send_rows(gateway_url: str, deployment: str, inputs: dict[str, np.ndarray]) -> None:
    """One KServe request per row of int64 inputs, asking for the sentence embedding."""
    with httpx.Client(timeout=30) as client:
        for row in range(len(next(iter(inputs.values())))):
            body = {
                "inputs": [
                    {
                        "name": name,
                        "shape": [1, array.shape[1]],
                        "datatype": "INT64",
                        "data": array[row : row + 1].tolist(),
                    }
                    for name, array in inputs.items()
                ],
                "outputs": [{"name": minilm.SENTENCE_EMBEDDING}],
            }
            response = client.post(f"{gateway_url}/v2/models/{deployment}/infer", json=body)
            assert response.status_code == 200, response.text


def gateway_series(
    url: str, name: str, deployment: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric (e.g. ``shipway_gateway_responses_total``) for one
    deployment, keyed by their other labels, zeros left out."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("deployment") == deployment:
                labels = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if k != "deployment")
                )
                if sample.value:
                    found[labels] = sample.value
    return found


def answers(url: str, deployment: str) -> dict[tuple[str, str], float]:
    """``shipway_gateway_responses_total`` of a deployment: {(variant, class): count}."""
    return {
        (dict(labels)["variant"], dict(labels)["class"]): value
        for labels, value in gateway_series(
            url, "shipway_gateway_responses_total", deployment
        ).items()
    }


def timed(url: str, deployment: str) -> dict[str, float]:
    """``shipway_gateway_request_seconds_count`` of a deployment: {variant: count}."""
    return {
        dict(labels)["variant"]: value
        for labels, value in gateway_series(
            url, "shipway_gateway_request_seconds_count", deployment
        ).items()
    }
