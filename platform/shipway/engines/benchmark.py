"""Side-by-side throughput and latency of ONNX models on this machine, in one run.

Models are measured in alternating rounds (A B C A B C ...), so that drift of a shared
machine's speed lands on all of them alike; each figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shipway.engines.calibration import Arrays, rows, take
from shipway.engines.evaluate import session


@dataclass(frozen=True)
class Measurement:
    rows_per_second: float
    p50_ms: float  # per batch
    p99_ms: float
    batch: int
    size_mb: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def side_by_side(
    models: dict[str, Path],
    inputs: Arrays,
    batch: int = 8,
    seconds: float = 1.0,
    rounds: int = 3,
    threads: int = 0,
) -> dict[str, Measurement]:
    # ``batch`` rows, repeated when there are fewer (constants whole); a model without
    # a batch axis runs its one request, so its figures are requests.
    feed = take(inputs, np.arange(batch) % rows(inputs))
    batch = rows(feed)
    sessions = {label: session(path, threads) for label, path in models.items()}
    names = {label: [o.name for o in s.get_outputs()] for label, s in sessions.items()}
    for label, sess in sessions.items():  # warm-up: allocations, kernel choice
        for _ in range(3):
            sess.run(names[label], feed)
    rates: dict[str, list[float]] = {label: [] for label in models}
    latencies: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, sess in sessions.items():
            done, start = 0, time.perf_counter()
            while True:
                t0 = time.perf_counter()
                sess.run(names[label], feed)
                t1 = time.perf_counter()
                latencies[label].append(t1 - t0)
                done += 1
                if t1 - start >= seconds:
                    break
            rates[label].append(done * batch / (t1 - start))
    return {
        label: Measurement(
            rows_per_second=statistics.median(rates[label]),
            p50_ms=float(np.percentile(latencies[label], 50) * 1000),
            p99_ms=float(np.percentile(latencies[label], 99) * 1000),
            batch=batch,
            size_mb=path.stat().st_size / 1e6,
        )
        for label, path in models.items()
    }
