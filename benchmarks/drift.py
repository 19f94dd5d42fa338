"""Drift detection: power, false alarms and cost, on windows with known answers.

- power_shift_0_25sd: 200 windows of 1,000 rows of 10 standard-normal features, one
  feature's mean shifted by 0.25 sigma; share flagged. The reference profile keeps
  10,000 rows per feature (a reference sample as large as drift monitoring wants).
- false_alarm_rate: 200 windows of the same size with no shift; share flagged.
- token_power: MiniLM inputs (sampled token ids, shipway.examples.minilm), 200
  windows of 1,000 rows with 5 % of the tokens drawn from another part of the
  vocabulary; share flagged (its own false-alarm rate is reported too).
- ms_per_window_10k: one window of 10,000 rows (10 numeric features, MiniLM token
  ids and lengths, a 384-wide embedding) tested on one core, median of 5.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drift.py
Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import numpy as np

from shipway.drift import profile as profiles
from shipway.drift.detect import Verdict, detect
from shipway.examples import minilm

WINDOWS = 200
ROWS = 1000


def tabular(rng: np.random.Generator, rows: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    x = rng.normal(size=(rows, 10)).astype(np.float32)
    x[:, 3] += shift
    return {"x": x}


def shifted_tokens(seed: int, rows: int, share: float) -> dict[str, np.ndarray]:
    inputs = minilm.make_inputs(rows, seq_len=32, seed=seed)
    rng = np.random.default_rng(seed + 1)
    ids = inputs["input_ids"]
    swap = (rng.random(ids.shape) < share) & (inputs["attention_mask"] == 1)
    ids[swap] = rng.integers(20000, 22000, size=int(swap.sum()))
    return inputs


def main() -> None:
    rng = np.random.default_rng(0)
    reference = profiles.build(tabular(rng, 10_000))
    flagged = lambda report: report.verdict is Verdict.DRIFT  # noqa: E731
    power = np.mean([flagged(detect(reference, tabular(rng, ROWS, 0.25))) for _ in range(WINDOWS)])
    false_alarms = np.mean([flagged(detect(reference, tabular(rng, ROWS))) for _ in range(WINDOWS)])
    print(f"numeric: power {power:.3f}, false alarms {false_alarms:.3f}")

    token_reference = profiles.build(minilm.make_inputs(5000, seq_len=32, seed=1))
    token_power = np.mean(
        [
            flagged(detect(token_reference, shifted_tokens(100 + i, ROWS, 0.05)))
            for i in range(WINDOWS)
        ]
    )
    token_false = np.mean(
        [
            flagged(detect(token_reference, shifted_tokens(1000 + i, ROWS, 0.0)))
            for i in range(WINDOWS)
        ]
    )
    print(f"tokens: power {token_power:.3f}, false alarms {token_false:.3f}")

    big_inputs = {**tabular(rng, 10_000), **minilm.make_inputs(10_000, seq_len=32, seed=3)}
    ref_inputs = {**tabular(rng, 5_000), **minilm.make_inputs(5_000, seq_len=32, seed=4)}
    embed = lambda n: {"461": rng.normal(size=(n, 384))}  # noqa: E731
    big_reference = profiles.build(ref_inputs, embed(5_000))
    window_outputs = embed(10_000)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        detect(big_reference, big_inputs, window_outputs)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"10k-row window: {statistics.median(timings):.1f} ms (runs {[round(t) for t in timings]})"
    )
    print(
        json.dumps(
            {
                "power_shift_0_25sd": round(float(power), 3),
                "false_alarm_rate": round(float(false_alarms), 3),
                "token_power": round(float(token_power), 3),
                "ms_per_window_10k": round(statistics.median(timings), 1),
                "token_false_alarm_rate": round(float(token_false), 3),
                "windows": WINDOWS,
                "rows_per_window": ROWS,
            }
        )
    )


if __name__ == "__main__":
    main()
