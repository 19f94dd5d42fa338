"""What the gateway costs: the same load straight at Triton and through the gateway.

Serves MiniLM (batch 1, sequence 128) on one real tritonserver, runs the real
gateway process (`shipway serve gateway`, routes from a SQLite store) in front of
it, and drives closed-loop load with the tritonclient HTTP client, alternating
direct and gateway rounds at each concurrency. The throughput ratio is taken at
the concurrency where direct Triton saturates (its throughput stops growing); the
added latency at one client.

Clients ask for the sentence embedding (output 461, 1.5 KB in binary), what a
client of an embedding service wants. `--output onnx::Shape_422` asks for the token
states instead (~200 KB an answer): the gateway's cost grows with the bytes it
relays (see the README's serving section).

Run: .venv/bin/python benchmarks/gateway.py [--seconds 3] [--rounds 4]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http

from _serving_common import cpu_seconds, gateway_process, route, run_load
from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.examples import minilm
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from shipway.store.db import Database, migrate
from shipway.store.models import Build, ModelVersion

SEQ = 128
MODEL = "minilm-bench"


def make_request() -> list[triton_http.InferInput]:
    inputs = minilm.make_inputs(1, seq_len=SEQ, seed=5, min_tokens=SEQ)
    tensors = []
    for name, value in inputs.items():
        tensor = triton_http.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value, binary_data=True)
        tensors.append(tensor)
    return tensors


def populate_store(url: str, replica_url: str) -> None:
    migrate(url)
    db = Database(url)
    with db.session() as session:
        mv = ModelVersion(
            name="minilm", version=1, mlflow_run_id="-", onnx_sha256="-", signature={}, tags={}
        )
        session.add(mv)
        session.flush()
        build = Build(
            model_version_id=mv.id,
            recipe="fp32",
            target="onnxruntime-cpu",
            status="succeeded",
            triton_model_name=MODEL,
        )
        session.add(build)
        session.flush()
        route(session, "minilm", build, replica_url, MODEL)
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per mode and concurrency")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts to try")
    parser.add_argument(
        "--output",
        default=minilm.SENTENCE_EMBEDDING,
        help="output to request: '461', the pooled sentence embedding (1.5 KB), or "
        "'onnx::Shape_422', the token states (~200 KB per answer)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    dist = TritonDistribution(Settings().triton_home)
    dist.check()
    with tempfile.TemporaryDirectory(prefix="shipway-bench-") as tmp:
        serve(args, levels, dist, Path(tmp))


def serve(
    args: argparse.Namespace, levels: list[int], dist: TritonDistribution, work: Path
) -> None:
    """Triton and the gateway in ``work``, measured, stopped."""
    onnx_path = minilm.onnx_path()
    signature = read_signature(load_model(onnx_path.read_bytes()))
    package_repository(work / "repo", MODEL, onnx_path, signature, Target.ONNXRUNTIME_CPU)
    triton = TritonProcess(dist, work / "repo", work / "triton.log")
    triton.start()
    try:
        triton.wait_ready(120)
        db_url = f"sqlite:///{work / 'state.db'}"
        populate_store(db_url, triton.url)
        with gateway_process(
            work, db_url, ["minilm"], extra_env={"SHIPWAY_SAMPLE_RATE": "0.1"}
        ) as (gateway, gateway_proc):
            measure(args, levels, triton, gateway, gateway_proc.pid)
    finally:
        triton.stop()


def measure(
    args: argparse.Namespace,
    levels: list[int],
    triton: TritonProcess,
    gateway: str,
    gateway_pid: int,
) -> None:
    """Direct and gateway rounds at each concurrency; prints the JSON line."""
    request = make_request()
    targets = {"direct": (triton.url, MODEL), "gateway": (gateway, "minilm")}
    run_load(triton.url, MODEL, [request], 2, 1.0)  # warm up Triton and ONNX Runtime
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    errors = 0
    gateway_cpu, gateway_requests = np.zeros(2), 0
    for clients in levels:
        per = results.setdefault(
            clients, {m: {"tput": [], "lat": [], "p50": [], "p99": []} for m in targets}
        )
        for round_index in range(args.rounds):
            order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
            for mode in order:
                url, model = targets[mode]
                cpu_before = cpu_seconds(gateway_pid)
                tput, lat, errs = run_load(
                    url, model, [request], clients, args.seconds, args.output
                )
                if mode == "gateway":
                    gateway_cpu += cpu_seconds(gateway_pid) - cpu_before
                    gateway_requests += len(lat) + clients  # + each client's warm-up
                per[mode]["tput"].append(tput)
                per[mode]["lat"].extend(lat)
                per[mode]["p50"].append(float(np.percentile(lat, 50)))
                per[mode]["p99"].append(float(np.percentile(lat, 99)))
                errors += errs
                print(
                    f"clients={clients} {mode:>7}: {tput:7.1f} req/s  "
                    f"p50 {np.percentile(lat, 50) * 1e3:6.2f} ms  "
                    f"p99 {np.percentile(lat, 99) * 1e3:6.2f} ms  errors {errs}",
                    flush=True,
                )

    direct = {c: statistics.median(r["direct"]["tput"]) for c, r in results.items()}
    best = max(direct.values())
    saturation = min(c for c, t in direct.items() if t >= 0.95 * best)
    sat = results[saturation]
    # Paired by round (each gateway round next to a direct round, ABBA order), so a
    # shared machine's drift in speed cancels; the median over rounds is reported.
    ratio = statistics.median(
        g / d for g, d in zip(sat["gateway"]["tput"], sat["direct"]["tput"], strict=True)
    )
    one = results[min(levels)]
    p50 = 1e3 * statistics.median(
        g - d for g, d in zip(one["gateway"]["p50"], one["direct"]["p50"], strict=True)
    )
    p99 = 1e3 * statistics.median(
        g - d for g, d in zip(one["gateway"]["p99"], one["direct"]["p99"], strict=True)
    )
    summary = {
        "throughput_ratio": round(float(ratio), 3),
        "p50_added_ms": round(float(p50), 3),
        "p99_added_ms": round(float(p99), 3),
        "errors": errors,
        "output": args.output,
        "saturation_clients": saturation,
        "direct_rps_at_saturation": round(statistics.median(sat["direct"]["tput"]), 1),
        "gateway_rps_at_saturation": round(statistics.median(sat["gateway"]["tput"]), 1),
        "gateway_cpu_ms_per_request": round(gateway_cpu.sum() / max(1, gateway_requests) * 1e3, 3),
        "gateway_user_ms_per_request": round(gateway_cpu[0] / max(1, gateway_requests) * 1e3, 3),
        "gateway_system_ms_per_request": round(gateway_cpu[1] / max(1, gateway_requests) * 1e3, 3),
        "direct_p50_ms_one_client": round(float(np.percentile(one["direct"]["lat"], 50) * 1e3), 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
