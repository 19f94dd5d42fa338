"""Drift in production, end to end: `shipway up`, two builds deployed one after the
other, a drift policy with a signed webhook and rollback; calm traffic through the
gateway is left alone, then shifted traffic raises one drift event, the webhook
receives it signed, and the build that was stable before serves again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipway.examples import minilm
from shipway.notify import webhook
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from tests.e2e.test_local_story import cli
from tests.support.gateway import send_rows
from tests.support.processes import shipway_up
from tests.support.services import free_port, wait_until
from tests.support.webhook import receiver

pytestmark = pytest.mark.e2e


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
    with shipway_up(settings, tmp_path / "up.log"):
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

            send_rows(settings.gateway_url, "minilm", minilm.make_inputs(150, seq_len=32, seed=5))
            assert verdict() == "no-drift"
            assert calls == []

            short = minilm.make_inputs(150, seq_len=8, seed=6)  # short requests now
            send_rows(settings.gateway_url, "minilm", short)
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
            send_rows(settings.gateway_url, "minilm", minilm.make_inputs(5, seq_len=16, seed=7))
            assert len(calls) == 1  # one breach, one event
