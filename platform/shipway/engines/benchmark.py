"""Side-by-side throughput and latency of ONNX models on this machine, in one run.

Models are measured in alternating rounds (A B C A B C ...), so that drift of a shared
machine's speed lands on all of them alike; each figure is the median over rounds.
The batch is one the models accept: their fixed batch size when they declare one.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shipway.engines.calibration import Arrays, rows, take
from shipway.engines.evaluate import session
from shipway.errors import BuildFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    rows_per_second: float
    p50_ms: float  # per batch
    p99_ms: float
    batch: int
    size_mb: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def fixed_batch(sessions: Iterable[ort.InferenceSession], split: Iterable[str]) -> int | None:
    """The batch size the models fix on the first axis of the inputs that are split
    into rows (``split``), if any (a model exported with batch 1 accepts nothing else).
    Inputs the same for every row (a bias ``[4]``, a scale ``[3]``) go whole and fix
    nothing. Raises ``BuildFailed`` when the models fix different sizes."""
    names = set(split)
    fixed = {
        spec.shape[0]
        for sess in sessions
        for spec in sess.get_inputs()
        if spec.name in names
        and spec.shape
        and isinstance(spec.shape[0], int)
        and spec.shape[0] > 0
    }
    if len(fixed) > 1:
        raise BuildFailed(f"the benchmarked models fix different batch sizes: {sorted(fixed)}")
    return fixed.pop() if fixed else None


def side_by_side(
    models: dict[str, Path],
    inputs: Arrays,
    batch: int = 8,
    seconds: float = 1.0,
    rounds: int = 3,
    threads: int = 0,
    optional: frozenset[str] = frozenset(),
) -> dict[str, Measurement]:
    """Rows/s and per-batch latency of each model on ``batch`` rows of ``inputs``
    (repeated when there are fewer; inputs the same for every row go whole), or on the
    batch size the models fix; ``Rows`` without a batch axis are one request, run
    whole, so their figures are requests. A model in ``optional`` (the stable build,
    which may be another version) that fails on them is left out of the result
    (logged); any other failure raises ``BuildFailed``."""
    sessions = {label: session(path, threads) for label, path in models.items()}
    split = [name for name in inputs if name not in getattr(inputs, "constants", frozenset())]
    batch = (
        fixed_batch((s for label, s in sessions.items() if label not in optional), split) or batch
    )
    feed = take(inputs, np.arange(batch) % rows(inputs))
    return on_feeds(models, sessions, [feed], seconds, rounds, optional)


def on_feeds(
    models: dict[str, Path],
    sessions: dict[str, ort.InferenceSession] | None,
    feeds: Sequence[Arrays],
    seconds: float = 1.0,
    rounds: int = 3,
    optional: frozenset[str] = frozenset(),
    threads: int = 0,
) -> dict[str, Measurement]:
    """Rows/s and per-batch latency of each model over ``feeds`` (batches, possibly of
    different shapes: the real lengths of ``build.baselines``), run in turn, whole
    cycles only so every batch counts alike; ``batch`` is the mean rows per feed. Same
    failure rules as ``side_by_side``."""
    if not feeds:
        raise BuildFailed("benchmark: no batches to run")
    sessions = sessions or {label: session(path, threads) for label, path in models.items()}
    sessions = dict(sessions)
    sizes = [rows(feed) for feed in feeds]
    names = {label: [o.name for o in s.get_outputs()] for label, s in sessions.items()}
    for label, sess in list(sessions.items()):  # warm-up: allocations, kernel choice
        try:
            for _ in range(3 if len(feeds) == 1 else 1):
                for feed in feeds:
                    sess.run(names[label], feed)
        except Exception as exc:
            if label not in optional:
                raise BuildFailed(
                    f"benchmark: the {label} model failed on a batch of {sizes[0]} rows: {exc}"
                ) from exc
            log.warning("benchmark: leaving out %s, which failed on the inputs: %s", label, exc)
            del sessions[label]
    rates: dict[str, list[float]] = {label: [] for label in sessions}
    latencies: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(rounds):
        for label, sess in sessions.items():
            done, start = 0, time.perf_counter()
            while True:
                for feed, size in zip(feeds, sizes, strict=True):
                    t0 = time.perf_counter()
                    sess.run(names[label], feed)
                    t1 = time.perf_counter()
                    latencies[label].append(t1 - t0)
                    done += size
                if t1 - start >= seconds:
                    break
            rates[label].append(done / (t1 - start))
    return {
        label: Measurement(
            rows_per_second=statistics.median(rates[label]),
            p50_ms=float(np.percentile(latencies[label], 50) * 1000),
            p99_ms=float(np.percentile(latencies[label], 99) * 1000),
            batch=round(sum(sizes) / len(sizes)),
            size_mb=models[label].stat().st_size / 1e6,
        )
        for label in sessions
    }
