"""The whole local story as a user drives it: `shipway up`, then the CLI.

Register MiniLM → build fp32 for onnxruntime-cpu → deploy → infer through the
gateway with tritonclient → compare with ONNX Runtime run directly → Ctrl-C stops
everything, Triton replicas included.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from shipway.examples import minilm
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from tests.integration.test_triton import infer
from tests.support.answers import token_state_error
from tests.support.processes import settings_env, shipway_cmd, shipway_up
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.e2e


def cli(settings: Settings, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        shipway_cmd(*args), env=settings_env(settings), capture_output=True, text=True, timeout=600
    )
    if ok:
        assert result.returncode == 0, (
            f"shipway {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def per_variant(settings: Settings) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(f"{settings.gateway_url}/metrics").text.splitlines():
        if line.startswith("shipway_gateway_requests_total{"):
            variant = line.split('variant="', 1)[1].split('"', 1)[0]
            counts[variant] = counts.get(variant, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_register_build_deploy_infer(
    tmp_path: Path, triton_dist: TritonDistribution, minilm_onnx: Path, minilm_sample: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        api_port=free_port(),
        gateway_port=free_port(),
        triton_home=triton_dist.home,
    )
    with shipway_up(settings, tmp_path / "up.log"):
        version = json.loads(
            cli(
                settings,
                "models",
                "register",
                "minilm",
                "--onnx",
                str(minilm_onnx),
                "--sample",
                str(minilm_sample),
                "--tag",
                "team=search",
                "--json",
            ).stdout
        )
        assert version["version"] == 1 and version["tags"]["team"] == "search"

        build = json.loads(
            cli(
                settings,
                "builds",
                "create",
                "minilm",
                "--version",
                "1",
                "--recipe",
                "fp32",
                "--target",
                "onnxruntime-cpu",
                "--wait",
                "--json",
            ).stdout
        )
        assert build["status"] == "succeeded" and build["progress"] == 1.0

        deployment = json.loads(
            cli(settings, "deploy", "minilm", "--build", build["id"], "--json").stdout
        )
        assert deployment["status"] == "ready"
        assert deployment["infer_url"] == f"{settings.gateway_url}/v2/models/minilm/infer"

        status = json.loads(cli(settings, "status", "--json").stdout)
        assert status["api_url"] == settings.resolved_api_url
        assert status["gateway_url"] == settings.gateway_url
        assert status["builds"] == {"succeeded": 1}
        assert len(status["deployments"][0]["replicas"]) == 1
        replica_url = status["deployments"][0]["replicas"][0]["url"]

        inputs = minilm.make_inputs(4, seq_len=24, seed=3)
        served = infer(settings.gateway_url, "minilm", inputs, binary=True)
        expected = ort.InferenceSession(str(minilm_onnx)).run([minilm.HIDDEN_STATE], inputs)[0]
        diff = token_state_error(served, expected, inputs["attention_mask"])  # trimmed
        print(f"e2e: max |gateway - onnxruntime| = {diff:.3e} over {served.shape}")
        assert served.shape == (4, 24, 384)
        assert diff < 1e-4

        # Drift through the CLI: a handful of sampled requests is not enough to say.
        drift = json.loads(cli(settings, "drift", "status", "minilm", "--json").stdout)
        assert [v["verdict"] for v in drift["variants"]] == ["insufficient-data"]
        table = cli(settings, "drift", "status", "minilm").stdout
        assert "insufficient-data" in table and "Drift of minilm" in table
        policy = json.loads(
            cli(settings, "drift", "policy", "minilm", "--action", "alert", "--json").stdout
        )
        assert policy == {"actions": ["alert"], "webhook_url": None}
        refused = cli(settings, "drift", "policy", "minilm", "--action", "page", ok=False)
        assert refused.returncode == 1 and refused.stderr == (
            "error: 422: body.actions.0 must be 'alert', 'webhook' or 'rollback', got 'page'\n"
        )

        # A second build as a sticky 50 % arm: one key always lands on one arm.
        second = json.loads(
            cli(settings, "builds", "create", "minilm", "--version", "1", "--wait", "--json").stdout
        )
        cli(
            settings,
            "variants",
            "set",
            "minilm",
            "arm-b",
            "--build",
            second["id"],
            "--weight",
            "50",
        )
        routed = json.loads(cli(settings, "route", "minilm", "--split", "sticky", "--json").stdout)
        assert {v["name"]: v["weight"] for v in routed["variants"]} == {"arm-b": 50, "stable": 50}
        wait_until(
            lambda: any(
                r["variant"] == "arm-b" and r["state"] == "ready"
                for r in json.loads(cli(settings, "status", "--json").stdout)["deployments"][0][
                    "replicas"
                ]
            ),
            120,
            "arm-b ready",
        )
        time.sleep(2 * settings.routes_refresh_seconds)
        body = {
            "inputs": [
                {"name": n, "shape": [1, 4], "datatype": "INT64", "data": v}
                for n, v in (
                    ("input_ids", [101, 2000, 2001, 102]),
                    ("attention_mask", [1, 1, 1, 1]),
                )
            ],
            "outputs": [{"name": "461"}],
        }
        arms = {}
        for key in ("alice", "bob", "carol", "dave", "erin", "frank"):
            before = per_variant(settings)
            for _ in range(3):
                response = httpx.post(
                    f"{settings.gateway_url}/v2/models/minilm/infer",
                    json=body,
                    headers={"x-shipway-key": key},
                    timeout=30,
                )
                assert response.status_code == 200
            moved = {v: n - before.get(v, 0) for v, n in per_variant(settings).items()}
            arms[key] = next(v for v, n in moved.items() if n)
            assert moved[arms[key]] == 3, moved  # all three on one arm
        assert set(arms.values()) == {"stable", "arm-b"}, arms

        # Bad input through the CLI: clear messages, non-zero exits.
        unknown = cli(settings, "builds", "create", "nope", "--version", "1", ok=False)
        assert unknown.returncode == 1 and "model 'nope' is not registered" in unknown.stderr
        bad_onnx = tmp_path / "bad.onnx"
        bad_onnx.write_bytes(b"not onnx")
        broken = cli(
            settings,
            "models",
            "register",
            "minilm",
            "--onnx",
            str(bad_onnx),
            "--sample",
            str(minilm_sample),
            ok=False,
        )
        assert broken.returncode == 1 and "422: not a valid ONNX model" in broken.stderr
        denied = cli(settings, "--token", "wrong", "status", ok=False)
        assert denied.returncode == 1 and "401: unknown token" in denied.stderr
        models = json.loads(cli(settings, "models", "list", "--json").stdout)
        assert [m["version"] for m in models] == [1]  # the failed registration left nothing
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{replica_url}/v2/health/live", timeout=2)  # the replica went with `up`
