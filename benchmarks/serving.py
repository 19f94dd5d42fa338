"""Shipway against plain Triton, end to end: real sentences through the gateway.

One real tritonserver (``TritonProcess``, the local Python backend running ONNX Runtime)
serves paraphrase-MiniLM-L3 twice, and the real gateway (``shipway serve gateway``,
routes from a SQLite store) stands in front of it with a deployment for each arm:

- ``naive``: the registered FP32 ONNX as plain Triton would serve it, no Shipway
  optimization: packaged with ``ServingOptions(trim_padding=False, max_batch_size=0)``
  (``max_batch_size: 0``, so no dynamic batching: every request runs alone, as sent;
  one instance, the same warm-up request), and clients that pad every sentence to 128
  tokens, as a client of a fixed-shape model does.
- ``shipway``: the build a user gets from ``shipway build --recipe R --target T``
  (default ``int8`` on ``onnxruntime-cpu``), made by the real build pipeline
  (``BuildPipeline.run``: calibration, gate, benchmark, per-build trim check,
  packaging with Shipway's defaults: trimming where the check allows it, length
  buckets, dynamic batching up to 8 rows), and clients that send each sentence at its
  real length (Shipway's client does not pad).

The sentences are real English (CPython's reference documentation, tokenized with
MiniLM's WordPiece vocabulary; the bench extra): 128 calibrate the build, 128 more are
the registration's reference sample (the gate's held-out rows, the trim check's
sample), and ``--sentences`` others, disjoint from both, are the load. Clients are
closed-loop threads of this process (tritonclient HTTP, binary tensors, asking for
the pooled sentence embedding, output ``461``); client ``i`` of ``c`` sends sentences
``i, i + c, ...``. At each concurrency level the two arms alternate round by round
(ABBA), ``--rounds`` rounds of ``--seconds`` each, so a shared machine's drift hits
both.

Definitions (latencies as the client sees them, gateway included):

- ``rps(arm, c)``: answered requests per second at ``c`` clients, the median over
  rounds; ``p50``/``p99(arm, c)``: percentiles of every latency of the arm at ``c``,
  rounds pooled.
- ``c_naive``: the fewest clients at which naive reaches its peak, i.e. the smallest
  level whose ``rps`` is at least 95 % of naive's highest (its requests run one at a
  time, so more clients only queue: within noise, every level past the first reaches
  the same rate, with a longer tail); the **p99 bound** is ``p99(naive, c_naive)``.
- ``c_shipway``: among the levels where ``p99(shipway, c) <= bound``, the one with
  the highest ``rps(shipway, c)``.
- ``throughput_ratio = rps(shipway, c_shipway) / rps(naive, c_naive)``: how much more
  load Shipway serves with a tail latency no worse than plain Triton's at its best;
  ``null`` if no Shipway level meets the bound. ``p50_ms_*``/``p99_ms_*`` are each
  arm's at its own level (``concurrency_naive``/``concurrency_shipway``).
- ``min_cosine_served``: every load sentence sent once through the gateway to the
  Shipway arm at its real length (8 in flight, so the served model stacks and
  trims them as under load), its pooled embedding against FP32 ONNX Runtime's for the
  same sentence padded to 128 (what the naive arm answers); the minimum over sentences.

Where the time goes: ``cpu_ms_per_request`` per arm (tritonserver with its Python
backend stubs, the gateway, the client threads; CPU seconds over answered requests)
and ``rows_per_execution`` (Triton's inference over execution counts: how many
requests the served model ran together); ``engine_cpu_ms_per_request``, each arm's
engine alone in ONNX Runtime on one thread, sentence by sentence as its clients send
them (measured once Triton has stopped; ``null`` for an engine that is no ONNX file),
says how much of Triton's share is the model. The machine's cores are shared by
Triton, the gateway and the clients, and by whatever else runs:
``other_processes_cpus`` is how many CPUs other processes kept busy, on average over
the sweep (machine-wide busy time from ``/proc/stat`` less these three).

Run: .venv/bin/python benchmarks/serving.py
[--recipe int8] [--target onnxruntime-cpu] [--seconds 5] [--rounds 3]
[--concurrency 1,2,4,8,16] [--sentences 256]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import psutil

from _serving_common import (
    PADDED,
    Request,
    cosines,
    embeddings,
    gateway_process,
    requests_of,
    route,
    run_load,
    tree_cpu_seconds,
)
from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target, parse
from shipway.builds.triton_config import ServingOptions
from shipway.engines import evaluate
from shipway.errors import InvalidInput
from shipway.examples import minilm, text
from shipway.registry.signature import Signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from shipway.store.db import Database
from shipway.store.models import Build, ModelVersion

if TYPE_CHECKING:
    from shipway.container import Container

ARMS = ("naive", "shipway")
NAIVE_MODEL = "minilm-naive"
NAIVE_OPTIONS = ServingOptions(trim_padding=False, max_batch_size=0)
CALIBRATION_ROWS = 128
SAMPLE_ROWS = 128
COSINE_CLIENTS = 8
SATURATED = 0.95  # naive's peak, less the noise of a shared machine (module docstring)


@dataclass
class Level:
    """One arm at one concurrency: each round's rate, every latency (s)."""

    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(self.rates)

    def ms(self, q: float) -> float:
        return 1000 * float(np.percentile(self.latencies, q))

    def to_dict(self) -> dict[str, float]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.ms(50), 2),
            "p99_ms": round(self.ms(99), 2),
        }


def equal_p99(results: dict[int, dict[str, Level]]) -> dict[str, Any]:
    """``throughput_ratio`` and the levels it is read at (the module docstring). Pure."""
    best = max(per["naive"].rps for per in results.values())
    c_naive = min(c for c, per in results.items() if per["naive"].rps >= SATURATED * best)
    naive = results[c_naive]["naive"]
    bound = naive.ms(99)
    within = [c for c in results if results[c]["shipway"].ms(99) <= bound]
    c_shipway = max(within, key=lambda c: (results[c]["shipway"].rps, -c)) if within else None
    out: dict[str, Any] = {
        "throughput_ratio": None,
        "p50_ms_naive": round(naive.ms(50), 2),
        "p99_ms_naive": round(bound, 2),
        "p50_ms_shipway": None,
        "p99_ms_shipway": None,
        "p99_bound_ms": round(bound, 2),
        "concurrency_naive": c_naive,
        "concurrency_shipway": c_shipway,
        "rps_naive": round(naive.rps, 1),
        "rps_shipway": None,
    }
    if c_shipway is not None:
        shipway = results[c_shipway]["shipway"]
        out |= {
            "throughput_ratio": round(shipway.rps / naive.rps, 3),
            "p50_ms_shipway": round(shipway.ms(50), 2),
            "p99_ms_shipway": round(shipway.ms(99), 2),
            "rps_shipway": round(shipway.rps, 1),
        }
    return out


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def build_shipway(
    container: Container,
    version: ModelVersion,
    recipe: str,
    target: str,
    repo: Path,
) -> Build:
    """The build through the real pipeline (the code a worker runs), its packaged Triton
    model copied into ``repo``. Raises ``SystemExit`` (JSON) when the build fails."""
    from shipway.builds.pipeline import BuildPipeline  # MLflow: see ``main``

    with container.db.session() as session:
        row = Build(model_version_id=version.id, recipe=recipe, target=target, options={})
        session.add(row)
        session.flush()
        build_id = row.id
    started = time.monotonic()
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    with container.db.session() as session:
        build = session.get(Build, build_id)
        assert build is not None
        session.expunge(build)
    print(f"build {recipe}/{target}: {build.status} in {time.monotonic() - started:.1f}s")
    if build.status != "succeeded":
        raise SystemExit(
            json.dumps({"error": f"the {recipe}/{target} build failed: {build.error}"})
        )
    fetched = container.registry.download(
        version.mlflow_run_id, build.artifact_path or "", container.settings.home / "fetched"
    )
    name = build.triton_model_name or ""
    shutil.copytree(fetched / name, repo / name)
    return build


def naive_build(
    container: Container,
    version: ModelVersion,
    signature: Signature,
    repo: Path,
    sample: dict[str, np.ndarray],
) -> Build:
    """The registered FP32 ONNX packaged untrimmed and unbatched into ``repo``, and a
    build row for it (no pipeline run: plain Triton has none), for the gateway to route."""
    package_repository(
        repo, NAIVE_MODEL, minilm.onnx_path(), signature, Target.ONNXRUNTIME_CPU,
        NAIVE_OPTIONS, sample=sample,
    )  # fmt: skip
    with container.db.session() as session:
        build = Build(
            model_version_id=version.id,
            recipe="fp32",
            target=Target.ONNXRUNTIME_CPU.value,
            status="succeeded",
            triton_model_name=NAIVE_MODEL,
        )
        session.add(build)
        session.flush()
        session.expunge(build)
    return build


def engine_cpu_ms(path: Path, encoded: dict[str, np.ndarray], pad: bool) -> float:
    """CPU ms per request of the engine alone: ONNX Runtime in this process on one
    thread (``time.thread_time``), each sentence once as the arm's clients send it
    (padded to 128, or at its real length, one row a run), after Triton has stopped.
    Against ``cpu_ms_per_request``'s ``triton`` it says what serving adds (Triton's
    HTTP, the Python backend's stub, the wrapper, idle ONNX Runtime threads spinning);
    the served Shipway model stacks rows trimmed to their longest, so it is a guide."""
    session = evaluate.session(path, threads=1)
    lengths = encoded["attention_mask"].sum(axis=1)
    feeds = [
        {k: v[row : row + 1, : PADDED if pad else int(n)] for k, v in encoded.items()}
        for row, n in enumerate(lengths)
    ]
    session.run([minilm.SENTENCE_EMBEDDING], feeds[0])  # ONNX Runtime's first run
    started = time.thread_time()
    for feed in feeds:
        session.run([minilm.SENTENCE_EMBEDDING], feed)
    return round(1000 * (time.thread_time() - started) / len(feeds), 2)


def stats(url: str, model: str) -> tuple[int, int]:
    """(inferences, executions) Triton counted for ``model`` so far."""
    counted = httpx.get(f"{url}/v2/models/{model}/stats", trust_env=False).json()
    first = counted["model_stats"][0]
    return int(first["inference_count"]), int(first["execution_count"])


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a test's timeout, a CI job cancelled) unwinds like an exception, so the
    ``finally`` blocks stop Triton and the gateway and remove the temporary folder."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="int8", help="the Shipway arm's build recipe")
    parser.add_argument(
        "--target", default="onnxruntime-cpu", help="the Shipway arm's build target"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per arm and level")
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="client counts to sweep")
    parser.add_argument("--sentences", type=int, default=256, help="distinct load sentences")
    args = parser.parse_args()
    try:
        recipe, target = parse(args.recipe, args.target)
        levels = sorted({int(c) for c in args.concurrency.split(",")})
    except InvalidInput as exc:
        parser.error(str(exc))
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if min(levels) < 1:
        parser.error("--concurrency levels must be at least 1")
    if not 0 < args.seconds < math.inf or args.rounds < 1 or args.sentences < 1:
        parser.error("--seconds must be positive and finite, --rounds and --sentences at least 1")

    # imported once the options are checked: the build pipeline and the registration
    # import MLflow (~3 s), which a refused option need not wait for
    from shipway.container import Container
    from shipway.services import models

    wanted = CALIBRATION_ROWS + SAMPLE_ROWS + args.sentences
    sentences = text.sentences(wanted)
    if len(sentences) < wanted:
        parser.error(
            f"--sentences {args.sentences}: the corpus has {len(sentences)} sentences, "
            f"{CALIBRATION_ROWS + SAMPLE_ROWS} of them calibrate and sample the build; "
            f"at most {len(sentences) - CALIBRATION_ROWS - SAMPLE_ROWS} are left for the load"
        )
    try:
        calibration = text.encode(sentences[:CALIBRATION_ROWS])
    except InvalidInput as exc:  # the bench extra is not installed
        raise SystemExit(str(exc)) from None
    sample = text.encode(sentences[CALIBRATION_ROWS : CALIBRATION_ROWS + SAMPLE_ROWS])
    load = text.encode(sentences[CALIBRATION_ROWS + SAMPLE_ROWS :])
    lengths = load["attention_mask"].sum(axis=1)
    print(
        f"{len(lengths)} load sentences: median {np.median(lengths):.0f} tokens, "
        f"mean {lengths.mean():.1f}, max {lengths.max()}"
    )
    # FP32 ONNX Runtime, padded to 128: the reference for the served embeddings
    reference = evaluate.run(evaluate.session(minilm.onnx_path()), load)
    reference_pooled = reference[minilm.SENTENCE_EMBEDDING]
    dist = TritonDistribution(Settings().triton_home)
    dist.check()

    with tempfile.TemporaryDirectory(prefix="shipway-serving-bench-") as tmp:
        home = Path(tmp)
        repo = home / "repo"
        db_url = f"sqlite:///{home / 'shipway.db'}"
        settings = Settings(
            home=home,
            database_url=db_url,
            mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            mlflow_registry_uri=None,
            mlflow_artifact_root=None,
            triton_onnx_backend="python",
            serving_trim_padding=True,
            build_bench_seconds=0.5,
            build_bench_rounds=1,
        )
        container = Container(settings)
        try:
            container.registry.initialize()
            version = models.register(
                container,
                models.Registration(
                    "minilm", minilm.onnx_path().read_bytes(), npz(sample), {}, npz(calibration)
                ),
                actor="benchmark",
            )
            started = time.monotonic()
            shipway = build_shipway(container, version, recipe.value, target.value, repo)
            build_seconds = time.monotonic() - started
            signature = Signature.from_dict(version.signature)
            naive = naive_build(container, version, signature, repo, sample)
        finally:
            container.close()
        triton = TritonProcess(dist, repo, home / "triton.log")
        triton.start()
        try:
            triton.wait_ready(180)
            db = Database(db_url)
            with db.session() as session:
                route(session, "naive", naive, triton.url, NAIVE_MODEL)
                route(session, "shipway", shipway, triton.url, shipway.triton_model_name or "")
            db.dispose()
            with gateway_process(home, db_url, list(ARMS)) as (gateway, gateway_proc):
                measured = measure(
                    args, levels, gateway, triton, gateway_proc.pid,
                    {"naive": NAIVE_MODEL, "shipway": shipway.triton_model_name or ""},
                    {"naive": requests_of(load, pad=True), "shipway": requests_of(load, pad=False)},
                )  # fmt: skip
        finally:
            triton.stop()
        engine = repo / (shipway.triton_model_name or "") / "1" / "model.onnx"
        engine_cpu = {
            "naive": engine_cpu_ms(minilm.onnx_path(), load, pad=True),
            "shipway": engine_cpu_ms(engine, load, pad=False) if engine.exists() else None,
        }

    served = measured.pop("served")
    vs_fp32 = cosines(reference_pooled, served)
    report = shipway.report or {}
    serving = report.get("serving", {})
    accuracy = report.get("accuracy", {})
    summary = {
        **measured.pop("ratio"),
        "min_cosine_served": round(float(vs_fp32.min()), 6),
        "mean_cosine_served": round(float(vs_fp32.mean()), 6),
        "cosine_reference": "FP32 ONNX Runtime, each sentence padded to 128",
        "recipe": recipe.value,
        "target": target.value,
        "trim_padding": serving.get("trim_padding"),
        "trim_reason": serving.get("reason"),
        "gate_min_cosine": accuracy.get("min_cosine"),
        "build_seconds": round(build_seconds, 1),
        "naive_config": "fp32, trim_padding=False, max_batch_size 0 (no dynamic batching), "
        "1 instance, clients pad to 128",
        "concurrency": levels,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "sentences": len(lengths),
        "median_tokens": float(np.median(lengths)),
        "mean_tokens": round(float(lengths.mean()), 1),
        **measured,
        "engine_cpu_ms_per_request": engine_cpu,
        "cpus": psutil.cpu_count(),
    }
    print(json.dumps(summary))


def measure(
    args: argparse.Namespace,
    levels: list[int],
    gateway: str,
    triton: TritonProcess,
    gateway_pid: int,
    models_by_arm: dict[str, str],
    requests: dict[str, list[Request]],
) -> dict[str, Any]:
    """The served embeddings, then the sweep: both arms at every level, ABBA by round."""
    served = embeddings(gateway, "shipway", requests["shipway"], clients=COSINE_CLIENTS)
    for arm in ARMS:  # warm both models, the gateway's routes and the connections
        run_load(gateway, arm, requests[arm], max(levels), min(1.0, args.seconds))
    triton_pid = triton.pid
    assert triton_pid is not None
    me = psutil.Process()
    results: dict[int, dict[str, Level]] = {}
    cpu = {arm: np.zeros(3) for arm in ARMS}  # triton, gateway, clients
    answered = dict.fromkeys(ARMS, 0)
    counts = {arm: np.array(stats(triton.url, models_by_arm[arm])) for arm in ARMS}
    errors = 0
    machine_before, started = busy_cpu_seconds(), time.monotonic()
    for clients in levels:
        results[clients] = {arm: Level() for arm in ARMS}
        for round_index in range(args.rounds):
            for arm in ARMS if round_index % 2 == 0 else ARMS[::-1]:
                before = _cpu(triton_pid, gateway_pid, me)
                rate, latencies, failed = run_load(
                    gateway, arm, requests[arm], clients, args.seconds
                )
                cpu[arm] += _cpu(triton_pid, gateway_pid, me) - before
                answered[arm] += len(latencies) + clients  # + each client's first request
                errors += failed
                level = results[clients][arm]
                level.rates.append(rate)
                level.latencies.extend(latencies)
                print(
                    f"clients={clients:<3} {arm:>7}: {rate:7.1f} req/s  "
                    f"p50 {np.percentile(latencies, 50) * 1e3:7.2f} ms  "
                    f"p99 {np.percentile(latencies, 99) * 1e3:7.2f} ms  errors {failed}",
                    flush=True,
                )
    # CPUs kept busy by other processes than these three, on average over the sweep
    others = busy_cpu_seconds() - machine_before - sum(v.sum() for v in cpu.values())
    others_cpus = max(0.0, others) / (time.monotonic() - started)
    rows_per_execution = {}
    for arm in ARMS:
        inferences, executions = np.array(stats(triton.url, models_by_arm[arm])) - counts[arm]
        rows_per_execution[arm] = round(float(inferences / max(1, executions)), 2)
    return {
        "served": served,
        "ratio": equal_p99(results),
        "by_concurrency": {
            str(c): {arm: level.to_dict() for arm, level in per.items()}
            for c, per in results.items()
        },
        "cpu_ms_per_request": {
            arm: dict(
                zip(
                    ("triton", "gateway", "clients"),
                    (round(float(v), 2) for v in 1000 * cpu[arm] / max(1, answered[arm])),
                    strict=True,
                )
            )
            for arm in ARMS
        },
        "rows_per_execution": rows_per_execution,
        "errors": errors,
        "other_processes_cpus": round(others_cpus, 2),
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (not idle or waiting on I/O),
    from /proc/stat (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is in user


def _cpu(triton_pid: int, gateway_pid: int, me: psutil.Process) -> np.ndarray:
    """CPU seconds so far: Triton with its stubs, the gateway, this process (clients)."""
    mine = me.cpu_times()
    return np.array(
        [
            tree_cpu_seconds(triton_pid),
            tree_cpu_seconds(gateway_pid),
            mine.user + mine.system,
        ]
    )


if __name__ == "__main__":
    main()
