"""The local end-to-end story: what ``make demo`` runs.

Starts Shipway (API, worker, runtime manager, gateway), registers the MiniLM model
with a reference sample, builds it, deploys it, sends an inference through the
gateway with ``tritonclient``, compares with ONNX Runtime run directly, and stops.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
        return {minilm.HIDDEN_STATE: result.as_numpy(minilm.HIDDEN_STATE)}
    finally:
        client.close()


def reference_outputs(onnx_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run([minilm.HIDDEN_STATE], inputs)[0]


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
            inputs = minilm.make_inputs(4, seq_len=32, seed=7)
            served = infer_via_gateway(settings.gateway_url, MODEL, inputs)[minilm.HIDDEN_STATE]
            expected = reference_outputs(minilm.onnx_path(), inputs)
            diff = float(np.max(np.abs(served - expected)))
            say(f"inference through the gateway matches ONNX Runtime: max |diff| = {diff:.2e}")
            return {
                "model": MODEL,
                "version": version["version"],
                "build_id": build["id"],
                "infer_url": deployment["infer_url"],
                "output_shape": list(served.shape),
                "max_abs_diff": diff,
                "seconds": round(time.monotonic() - started, 1),
            }
    finally:
        supervisor.stop()
