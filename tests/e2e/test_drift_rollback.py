"""Drift in production, end to end: `shipway up`, two builds deployed one after the
other, a drift policy with a signed webhook and rollback; calm traffic through the
gateway is left alone, then shifted traffic raises one drift event, the webhook
receives it signed, and the build that was stable before serves again.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipway.examples import minilm
from shipway.notify import webhook
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from tests.e2e.test_local_story import cli, up_is_healthy
from tests.support.processes import settings_env, shipway_cmd
from tests.support.services import free_port, wait_until
from tests.support.webhook import receiver

pytestmark = pytest.mark.e2e


def send(settings: Settings, inputs: dict[str, np.ndarray]) -> None:
    with httpx.Client(timeout=30) as client:
        for row in range(len(inputs["input_ids"])):
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
            response = client.post(f"{settings.gateway_url}/v2/models/minilm/infer", json=body)
            assert response.status_code == 200, response.text


def test_shifted_traffic_raises_one_event_calls_the_hook_and_rolls_back(
    tmp_path: Path, triton_dist: TritonDistribution, minilm_onnx: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        api_port=free_port(),
        gateway_port=free_port(),
        triton_home=triton_dist.home,
        sample_rate=1.0,
        drift_check_seconds=2.0,
        webhook_secret="e2e-secret",
    )
    reference = minilm.write_sample(tmp_path / "reference.npz", rows=400, seq_len=32, seed=1)
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        shipway_cmd("up"), env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: up_is_healthy(settings) or up.poll() is not None, 120, "shipway up")
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        cli(settings, "models", "register", "minilm", "--onnx", str(minilm_onnx),
            "--sample", str(reference))  # fmt: skip
        first, second = (
            json.loads(
                cli(
                    settings, "builds", "create", "minilm", "--version", "1", "--wait", "--json"
                ).stdout
            )["id"]
            for _ in range(2)
        )
        cli(settings, "deploy", "minilm", "--build", first)
        cli(settings, "deploy", "minilm", "--build", second)  # replaces the first

        with receiver([]) as (hook, calls):
            cli(settings, "drift", "policy", "minilm", "--action", "alert", "--action",
                "webhook", "--action", "rollback", "--webhook-url", hook)  # fmt: skip

            def verdict() -> str:
                body = json.loads(cli(settings, "drift", "status", "minilm", "--json").stdout)
                return str(body["variants"][0]["verdict"])

            send(settings, minilm.make_inputs(150, seq_len=32, seed=5))
            assert verdict() == "no-drift"
            assert calls == []

            send(settings, minilm.make_inputs(150, seq_len=8, seed=6))  # short requests now
            wait_until(lambda: len(calls) >= 1, 60, "the drift webhook")
            headers, body = calls[0]
            assert webhook.verify("e2e-secret", body, headers[webhook.SIGNATURE_HEADER])
            event = json.loads(body)
            assert event["event"] == "drift.detected" and event["build_id"] == second

            def first_serves() -> bool:
                status = json.loads(cli(settings, "status", "--json").stdout)
                deployment = status["deployments"][0]
                replicas = deployment["replicas"]
                return (
                    deployment["build_id"] == first
                    and deployment["status"] == "ready"
                    and bool(replicas)
                    and all(r["build_id"] == first for r in replicas if r["state"] == "ready")
                )

            wait_until(first_serves, 120, "the previous stable build serving again")
            send(settings, minilm.make_inputs(5, seq_len=16, seed=7))  # and it answers
            assert len(calls) == 1  # one breach, one event
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
