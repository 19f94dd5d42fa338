"""Calls to a Triton server from tests: INT64 token tensors through tritonclient, several
requests at once (so the dynamic batcher can group them), and its execution counts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import tritonclient.http as triton_http

Arrays = dict[str, np.ndarray]


def infer_int64(url: str, model: str, request: Arrays) -> Arrays:
    """One request of INT64 inputs to ``model`` at ``url`` (http://host:port)."""
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, value in request.items():
            tensor = triton_http.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    finally:
        client.close()


def infer_together(url: str, model: str, requests: list[Arrays]) -> list[Arrays]:
    """The requests sent at once, one thread each; answers in the requests' order."""
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: infer_int64(url, model, r), requests))


def executions(url: str, model: str) -> tuple[int, int]:
    """(inferences, executions) Triton counted for ``model`` so far."""
    stats = httpx.get(f"{url}/v2/models/{model}/stats", trust_env=False).json()
    counted = stats["model_stats"][0]
    return counted["inference_count"], counted["execution_count"]
