"""The local end-to-end story: what ``make demo`` runs.

Starts Shipway (API, worker, runtime manager, gateway), registers the MiniLM model
with a reference sample, builds it, deploys it, sends an inference through the
gateway with ``tritonclient`` and compares with ONNX Runtime run directly; then
builds it as INT8 (calibrated, gated on accuracy, benchmarked against the stable
FP32 build), rolls it out as a canary under live traffic (25 %, then 100 %, each
step analysed against stable), checks the served embeddings against FP32 again, and
stops.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shipway.builds.accuracy import cosine_rows
from shipway.cli.client import ApiClient
from shipway.cli.supervisor import Supervisor
from shipway.examples import minilm
from shipway.settings import Settings

MODEL = "minilm"


def infer_via_gateway(
    gateway_url: str, deployment: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(gateway_url.removeprefix("http://"))
    try:
        tensors = []
        for name, value in inputs.items():
            tensor = triton_http.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value, binary_data=True)
            tensors.append(tensor)
        result = client.infer(deployment, tensors)
        return {
            name: result.as_numpy(name) for name in (minilm.HIDDEN_STATE, minilm.SENTENCE_EMBEDDING)
        }
    finally:
        client.close()


def reference_outputs(onnx_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [minilm.HIDDEN_STATE, minilm.SENTENCE_EMBEDDING]
    return dict(zip(names, session.run(names, inputs), strict=True))


@contextmanager
def live_traffic(gateway_url: str) -> Iterator[None]:
    """Clients asking for sentence embeddings while the canary is judged: an analysis
    needs requests to judge."""
    inputs = minilm.make_inputs(1, seq_len=32, seed=11)
    body = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "INT64", "data": v.ravel().tolist()}
            for k, v in inputs.items()
        ],
        "outputs": [{"name": minilm.SENTENCE_EMBEDDING}],
    }
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30.0, trust_env=False) as http:
            while not stop.is_set():
                try:
                    http.post(f"{gateway_url}/v2/models/{MODEL}/infer", json=body)
                except httpx.HTTPError:
                    stop.wait(0.2)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


# FP32 served by Triton's ONNX Runtime against ONNX Runtime here: the same graph and
# kernels, so only thread-count summation order differs (seen: ~1e-6)
FP32_TOLERANCE = 1e-4


def run_demo(settings: Settings, say: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    supervisor = Supervisor(settings)
    say("starting Shipway (API, worker, runtime manager, gateway)…")
    supervisor.start()
    try:
        with (
            ApiClient(settings.resolved_api_url, settings.token) as api,
            tempfile.TemporaryDirectory() as tmp,
        ):
            sample = minilm.write_sample(Path(tmp) / "reference.npz")
            version = api.register(MODEL, minilm.onnx_path(), sample, {"source": "demo"})
            say(f"registered {MODEL} version {version['version']} in MLflow")
            build = api.create_build(MODEL, version["version"], "fp32", "onnxruntime-cpu")
            build = api.wait_build(build["id"])
            if build["status"] != "succeeded":
                raise RuntimeError(f"build {build['id']} failed: {build['error']}")
            say(f"built {build['id']} → {build['artifact_path']}")
            deployment = api.deploy(MODEL, build["id"])
            deployment = api.wait_deployment(MODEL, build["id"])
            say(f"deployed: {deployment['infer_url']}")
            # a rerun replaces the last run's stable build: the gateway serves the new one
            # from its next read of the routes
            time.sleep(settings.routes_refresh_seconds + 0.5)
            inputs = minilm.make_inputs(4, seq_len=32, seed=7)
            expected = reference_outputs(minilm.onnx_path(), inputs)
            served = infer_via_gateway(settings.gateway_url, MODEL, inputs)
            diff = float(
                np.max(np.abs(served[minilm.HIDDEN_STATE] - expected[minilm.HIDDEN_STATE]))
            )
            if diff > FP32_TOLERANCE:
                raise RuntimeError(
                    f"the served FP32 build differs from ONNX Runtime by {diff:.2e} "
                    f"(tolerance {FP32_TOLERANCE:.0e})"
                )
            say(f"inference through the gateway matches ONNX Runtime: max |diff| = {diff:.2e}")

            int8 = api.create_build(MODEL, version["version"], "int8", "onnxruntime-cpu")
            int8 = api.wait_build(int8["id"])
            if int8["status"] != "succeeded":
                raise RuntimeError(f"INT8 build {int8['id']} failed: {int8['error']}")
            report = int8["report"]
            say(
                f"built INT8 {int8['id']}: mean cosine {report['accuracy']['mean_cosine']:.4f} "
                f"on held-out rows, {report['benchmark']['speedup_vs_fp32']:.2f}x FP32, "
                f"{report['benchmark']['speedup_vs_stable']:.2f}x the stable build"
            )
            canary = {"steps": [25, 100], "interval_s": 2.0, "thresholds": {"min_requests": 10}}
            with live_traffic(settings.gateway_url):
                rollout = api.start_rollout(
                    MODEL, {"build_id": int8["id"], "strategy": "canary", "settings": canary}
                )
                say(f"canary rollout {rollout['id']}: INT8 at 25 %, then 100 %, under traffic")
                while rollout["running"]:
                    time.sleep(1.0)
                    rollout = api.rollout(MODEL, rollout["id"])
            if rollout["phase"] != "succeeded":
                raise RuntimeError(f"the INT8 canary {rollout['phase']}: {rollout['reason']}")
            steps = [e["reason"] for e in rollout["timeline"] if e["event"] == "rollout.step"]
            say(f"INT8 promoted after analyses at {', '.join(steps)} against FP32")
            deployment = api.wait_deployment(MODEL, int8["id"])
            time.sleep(settings.routes_refresh_seconds + 0.5)  # the gateway's next read
            quantized = infer_via_gateway(settings.gateway_url, MODEL, inputs)
            cosine = float(
                cosine_rows(
                    quantized[minilm.SENTENCE_EMBEDDING], expected[minilm.SENTENCE_EMBEDDING]
                ).min()
            )
            say(f"INT8 now serves; its sentence embeddings against FP32: worst cosine {cosine:.4f}")
            return {
                "model": MODEL,
                "version": version["version"],
                "build_id": build["id"],
                "int8_build_id": int8["id"],
                "rollout_id": rollout["id"],
                "infer_url": deployment["infer_url"],
                "output_shape": list(served[minilm.HIDDEN_STATE].shape),
                "max_abs_diff": diff,
                "int8_speedup_vs_fp32": report["benchmark"]["speedup_vs_fp32"],
                "int8_min_cosine_served": cosine,
                "seconds": round(time.monotonic() - started, 1),
            }
    finally:
        supervisor.stop()
