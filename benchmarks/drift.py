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
- real_text_false_alarm_rate: real sentences, whose tokens are not independent
  draws. The corpus is CPython's bundled documentation (the pydoc topics, as
  shipway.examples.text takes them, and the docstrings of the standard library's
  sources), tokenized with the uncased BERT WordPiece vocabulary (the bench extra).
  For each of SPLITS random splits, REFERENCE_ROWS sentences make the reference
  profile and windows of ROWS sentences are drawn from the rest (never from the
  reference); share of the windows flagged (input_ids and attention_mask, as MiniLM
  gets them). _100_rows: the same with windows of 100 sentences (the API's default
  min_rows), where a first-order (mean design effect) correction still flags 3-6 times
  too many.
- real_text_token_power: the same windows with 5 % of their tokens moved to another
  part of the vocabulary (the shift of token_power); share flagged.
- real_text_other_corpus_power_10pct / _25pct / _100pct: windows with that share of
  their sentences from another corpus of real text (the docstrings of numpy's and
  scipy's sources); share flagged.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drift.py
Last line: one JSON object.
"""

from __future__ import annotations

import ast
import json
import os
import re
import statistics
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import numpy as np

from shipway.drift import profile as profiles
from shipway.drift.detect import Verdict, detect
from shipway.examples import minilm, text

WINDOWS = 200
ROWS = 1000
SPLITS = 25  # real text: reference/rest splits ...
NULL_PER_SPLIT = 20  # ... same-corpus windows drawn from each (500 in all)
SHIFTED_PER_SPLIT = 4  # ... windows per kind of shift (100 each)
REFERENCE_ROWS = 1000
SMALL_ROWS = 100  # the API's default min_rows: the smallest window judged
CODE = re.compile(r"[{}\[\]=<>|*_`\\]|\.\.\.|::|\(\)|>>>")  # code, not prose (examples.text)


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


def docstring_sentences(root: Path, skip: frozenset[str] = frozenset()) -> set[str]:
    """Prose sentences of the docstrings in the Python sources under ``root`` (parsed,
    never imported), with the rule examples.text applies to the pydoc topics."""
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in skip or part.startswith("test") for part in parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = re.sub(r"\s+", " ", ast.get_docstring(node) or "")
                found.update(
                    sentence
                    for sentence in re.split(r"(?<=[.!?]) ", doc)
                    if 60 <= len(sentence) <= 400
                    and sentence[0].isupper()
                    and not CODE.search(sentence)
                )
    return found


def corpora() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """CPython's documentation and numpy's and scipy's, tokenized for MiniLM."""
    import scipy

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    own = frozenset({"site-packages", "dist-packages", "idlelib", "tkinter", "turtledemo"})
    cpython = docstring_sentences(stdlib, own) | set(text.sentences(1_000_000))
    other = docstring_sentences(Path(np.__file__).parent) | docstring_sentences(
        Path(scipy.__file__).parent
    )
    return text.encode(sorted(cpython)), text.encode(sorted(other - cpython))


def rows_of(inputs: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[rows] for name, array in inputs.items()}


def draw(
    corpus: dict[str, np.ndarray], pool: np.ndarray, rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``rows`` sentences of ``corpus`` drawn without replacement from ``pool``."""
    return rows_of(corpus, rng.choice(pool, rows, replace=False))


def move_tokens(inputs: dict[str, np.ndarray], share: float, seed: int) -> dict[str, np.ndarray]:
    """``share`` of the kept tokens replaced by ids from another part of the vocabulary."""
    rng = np.random.default_rng(seed)
    ids = inputs["input_ids"].copy()
    swap = (rng.random(ids.shape) < share) & (inputs["attention_mask"] == 1)
    ids[swap] = rng.integers(20000, 22000, size=int(swap.sum()))
    return {**inputs, "input_ids": ids}


def real_text() -> dict[str, float]:
    cpython, other = corpora()
    size, other_size = len(cpython["input_ids"]), len(other["input_ids"])
    print(f"real text: {size} CPython sentences, {other_size} numpy/scipy sentences")
    flagged: dict[str, list[bool]] = {}

    def judge(
        kind: str, reference: profiles.ReferenceProfile, window: dict[str, np.ndarray]
    ) -> None:
        flagged.setdefault(kind, []).append(detect(reference, window).verdict is Verdict.DRIFT)

    for split in range(SPLITS):
        rng = np.random.default_rng(split)
        order = rng.permutation(size)
        reference = profiles.build(rows_of(cpython, order[:REFERENCE_ROWS]))
        rest = order[REFERENCE_ROWS:]
        for _ in range(NULL_PER_SPLIT):
            judge("same_corpus", reference, draw(cpython, rest, ROWS, rng))
            judge("same_corpus_small", reference, draw(cpython, rest, SMALL_ROWS, rng))
        for i in range(SHIFTED_PER_SPLIT):
            moved = move_tokens(draw(cpython, rest, ROWS, rng), 0.05, 10_000 * split + i)
            judge("tokens", reference, moved)
            for share in (0.1, 0.25, 1.0):
                theirs = draw(other, np.arange(other_size), int(ROWS * share), rng)
                ours = draw(cpython, rest, ROWS - int(ROWS * share), rng)
                window = {n: np.concatenate([ours[n], theirs[n]]) for n in theirs}
                judge(f"other_{int(share * 100)}pct", reference, window)
    rates = {kind: float(np.mean(values)) for kind, values in flagged.items()}
    print("real text, share of windows flagged:", {k: round(v, 3) for k, v in rates.items()})
    return rates


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
    real = real_text()
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
                "real_text_false_alarm_rate": round(real["same_corpus"], 4),
                "real_text_false_alarm_rate_100_rows": round(real["same_corpus_small"], 4),
                "real_text_windows": SPLITS * NULL_PER_SPLIT,
                "real_text_token_power": round(real["tokens"], 3),
                "real_text_other_corpus_power_10pct": round(real["other_10pct"], 3),
                "real_text_other_corpus_power_25pct": round(real["other_25pct"], 3),
                "real_text_other_corpus_power_100pct": round(real["other_100pct"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
