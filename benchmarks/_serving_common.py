"""What the serving benchmarks share (``gateway.py``, ``trim_padding.py``, ``serving.py``).

Real sentences as Triton requests (padded to 128 or at their real lengths), closed-loop
load with the tritonclient HTTP client (binary tensors, one output asked for), the
gateway process (``shipway serve gateway``) in front of routes written to a SQLite
store, and CPU accounting from ``/proc`` (Linux). Imported as a top-level module:
each benchmark runs as a script from this folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import tritonclient.http as triton_http
from sqlalchemy.orm import Session

from shipway.examples import minilm
from shipway.store.models import Build, Deployment, Replica, ReplicaState, Variant

PADDED = 128  # tokens: what a client that pads sends, MiniLM's longest input

Request = list[triton_http.InferInput]


def requests_of(encoded: dict[str, np.ndarray], pad: bool) -> list[Request]:
    """One request per sentence, INT64 binary tensors: padded to 128, or cut to its
    real length (the mask's sum; ``text.encode`` pads on the right)."""
    lengths = encoded["attention_mask"].sum(axis=1)
    out = []
    for row, length in enumerate(lengths):
        tensors = []
        for name, value in encoded.items():
            array = np.ascontiguousarray(value[row : row + 1, : PADDED if pad else int(length)])
            tensor = triton_http.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        out.append(tensors)
    return out


def run_load(
    url: str,
    model: str,
    requests: list[Request],
    clients: int,
    seconds: float,
    output: str = minilm.SENTENCE_EMBEDDING,
) -> tuple[float, list[float], int]:
    """Closed loop: each client sends its next request when the last one answered;
    client ``i`` starts at request ``i`` and steps by ``clients``. Each client first
    sends one untimed request (its connection opened and warm), then all start
    together. Returns answered requests per second, their latencies (s) and failures."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [time.perf_counter() + 3600]
    wanted = [triton_http.InferRequestedOutput(output, binary_data=True)]

    def client(index: int) -> None:
        nonlocal errors
        conn = triton_http.InferenceServerClient(
            url.removeprefix("http://"), connection_timeout=60, network_timeout=60
        )
        mine: list[float] = []
        failed = 0
        at = index
        try:
            conn.infer(model, requests[at % len(requests)], outputs=wanted)
        except Exception:
            failed += 1
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                conn.infer(model, requests[at % len(requests)], outputs=wanted)
                mine.append(time.perf_counter() - t0)
            except Exception:
                failed += 1
            at += clients
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - began), latencies, errors


def embeddings(
    url: str,
    model: str,
    requests: list[Request],
    clients: int = 1,
    output: str = minilm.SENTENCE_EMBEDDING,
) -> np.ndarray:
    """``output`` for every request, in order, ``[requests, width]``; ``clients``
    requests in flight at once (so a batching model stacks them with others)."""
    wanted = [triton_http.InferRequestedOutput(output, binary_data=True)]
    local = threading.local()
    opened: list[triton_http.InferenceServerClient] = []

    def one(request: Request) -> np.ndarray:
        if not hasattr(local, "conn"):
            local.conn = triton_http.InferenceServerClient(
                url.removeprefix("http://"), network_timeout=60
            )
            opened.append(local.conn)
        return local.conn.infer(model, request, outputs=wanted).as_numpy(output)

    try:
        with ThreadPoolExecutor(clients) as pool:
            return np.concatenate(list(pool.map(one, requests)))
    finally:
        for conn in opened:
            conn.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[rows, width]`` arrays."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cpu_seconds(pid: int) -> np.ndarray:
    """[user, system] CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return np.array([int(fields[11]), int(fields[12])]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (tritonserver
    and its Python-backend stubs, where the model runs). A descendant that exited is
    not counted."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def route(
    session: Session, deployment: str, build: Build, replica_url: str, model_name: str
) -> Deployment:
    """A ready deployment of ``build`` with one ready replica at ``replica_url``
    serving Triton model ``model_name``: what the gateway routes ``deployment`` to."""
    row = Deployment(name=deployment, build_id=build.id, status="ready")
    row.variants = [Variant(name="stable", build_id=build.id, weight=100)]
    row.replicas = [
        Replica(
            variant="stable",
            build_id=build.id,
            url=replica_url,
            triton_model_name=model_name,
            state=ReplicaState.READY,
        )
    ]
    session.add(row)
    return row


@contextmanager
def gateway_process(
    home: Path,
    db_url: str,
    deployments: list[str],
    timeout: float = 60.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real gateway (``shipway serve gateway``, routes from the store at ``db_url``,
    already migrated) on a free port, logging to ``home/gateway.log``; yields its URL
    and process once every deployment answers ready through it, and stops it on exit.
    Raises ``SystemExit`` naming the log when it does not get ready."""
    from shipway.runtime.triton_process import free_port

    port = free_port()
    env = {
        **os.environ,
        "SHIPWAY_HOME": str(home),
        "SHIPWAY_DATABASE_URL": db_url,
        "SHIPWAY_GATEWAY_PORT": str(port),
        **(extra_env or {}),
    }
    log = home / "gateway.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipway.cli.main", "serve", "gateway", "--no-migrate"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        waiting = list(deployments)
        while waiting:
            try:
                if httpx.get(f"{url}/v2/models/{waiting[0]}/ready", timeout=1).status_code == 200:
                    waiting.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"gateway did not get ready for {waiting}; see {log}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
