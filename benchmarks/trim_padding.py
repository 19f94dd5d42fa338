"""What trimming padding and batching by length buy at real sentence lengths.

One real tritonserver serves paraphrase-MiniLM-L3 twice, packaged as a build packages
it (``package_repository``, dynamic batching, max 8 rows): ``untrimmed``
(``trim_padding=False``, the config before trimming) and ``trimmed`` (the default: each
batch cut to its longest real row, requests grouped by length bucket; README,
"Trimmed padding and batching by length"). Real English sentences (CPython's
reference documentation, tokenized with MiniLM's WordPiece vocabulary; the bench
extra) are sent one per request by closed-loop clients, the same sentences in every
arm, alternating arms round by round:

- ``untrimmed-pad128``: the untrimmed model, clients padding to 128 (the naive setup);
- ``untrimmed-real``: the untrimmed model, clients sending their real lengths (Triton
  batches equal shapes only, so most requests run alone);
- ``trimmed-pad128``: the trimmed model, clients padding to 128;
- ``trimmed-real``: the trimmed model, clients sending their real lengths.

Clients ask for the pooled sentence embedding (output 461). ``min_cosine`` compares
every sentence's embedding from ``trimmed-pad128`` with ``untrimmed-pad128``'s.

``--recipe int8-dynamic`` serves the build's ``int8-dynamic`` engine instead (attention
kept as MatMuls, dynamic quantization, as ``shipway.builds.compile`` makes it). The
``trimmed`` model is then packaged with the default options, so it trims only if the
packaging-time check finds the engine answering trimmed as padded
(``packaging.trim_decision``); the JSON says what was decided (``trim_decision``) and
how far the served embeddings are from FP32's (``min_cosine_vs_fp32``).

Run: .venv/bin/python benchmarks/trim_padding.py [--recipe fp32] [--seconds 3] [--rounds 3]
[--clients 8]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from _serving_common import PADDED, cosines, embeddings, requests_of, run_load
from shipway.builds.packaging import package_repository, trim_decision
from shipway.builds.recipes import Target
from shipway.builds.triton_config import ServingOptions
from shipway.engines import evaluate, quantize
from shipway.examples import minilm, text
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings

ARMS = {  # arm: (model, pad to 128)
    "untrimmed-pad128": ("untrimmed", True),
    "untrimmed-real": ("untrimmed", False),
    "trimmed-pad128": ("trimmed", True),
    "trimmed-real": ("trimmed", False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per arm")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--sentences", type=int, default=256, help="distinct sentences")
    parser.add_argument(
        "--recipe", choices=("fp32", "int8-dynamic"), default="fp32", help="the engine served"
    )
    args = parser.parse_args()

    encoded = text.encode(text.sentences(args.sentences), seq_len=PADDED)
    lengths = encoded["attention_mask"].sum(axis=1)
    print(
        f"{len(lengths)} sentences: median {np.median(lengths):.0f} tokens, "
        f"mean {lengths.mean():.1f}, max {lengths.max()}"
    )
    dist = TritonDistribution(Settings().triton_home)
    dist.check()
    work = Path(tempfile.mkdtemp(prefix="shipway-trim-bench-"))
    fp32_path = minilm.onnx_path()
    onnx_path = fp32_path
    if args.recipe == "int8-dynamic":
        prepared = quantize.prepare(fp32_path, work / "prepared.onnx")
        onnx_path = quantize.dynamic(prepared, work / "int8-dynamic.onnx")
    signature = read_signature(load_model(onnx_path.read_bytes()))
    sample = {k: v[:2] for k, v in encoded.items()}
    decision = trim_decision(
        onnx_path, signature, "python", ServingOptions(), sample, "attention_mask"
    )
    print(f"trim decision: {decision.config_text()}")
    for model, trim in (("untrimmed", False), ("trimmed", True)):
        package_repository(
            work / "repo", model, onnx_path, signature, Target.ONNXRUNTIME_CPU,
            ServingOptions(trim_padding=trim), sample=sample,
        )  # fmt: skip
    triton = TritonProcess(dist, work / "repo", work / "triton.log")
    triton.start()
    try:
        triton.wait_ready(120)
        requests = {pad: requests_of(encoded, pad) for pad in (True, False)}
        untrimmed = embeddings(triton.url, "untrimmed", requests[True])
        trimmed = embeddings(triton.url, "trimmed", requests[True])
        cosine = cosines(untrimmed, trimmed)
        fp32 = evaluate.run(evaluate.session(fp32_path), encoded)[minilm.SENTENCE_EMBEDDING]
        vs_fp32 = cosines(fp32, trimmed)
        for model, pad in ARMS.values():  # warm both models and connections
            run_load(triton.url, model, requests[pad], args.clients, 1.0)
        rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
        latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
        failures = 0
        for round_ in range(args.rounds):
            for arm, (model, pad) in ARMS.items():
                rate, lat, errors = run_load(
                    triton.url, model, requests[pad], args.clients, args.seconds
                )
                rates[arm].append(rate)
                latencies[arm].extend(lat)
                failures += errors
                print(f"round {round_ + 1} {arm:17s} {rate:7.1f} rows/s  errors {errors}")
    finally:
        triton.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows_per_s = {arm: round(statistics.median(r), 1) for arm, r in rates.items()}
    p50 = {arm: round(1000 * float(np.percentile(v, 50)), 2) for arm, v in latencies.items()}
    p99 = {arm: round(1000 * float(np.percentile(v, 99)), 2) for arm, v in latencies.items()}
    base = rows_per_s["untrimmed-pad128"]
    result = {
        "recipe": args.recipe,
        "trim_decision": {"trim_padding": decision.trim, "reason": decision.reason},
        "sentences": len(lengths),
        "median_tokens": float(np.median(lengths)),
        "clients": args.clients,
        "rows_per_s": rows_per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "speedup_trimmed_vs_untrimmed_pad128": round(rows_per_s["trimmed-pad128"] / base, 2),
        "speedup_trimmed_real_vs_untrimmed_pad128": round(rows_per_s["trimmed-real"] / base, 2),
        "min_cosine_trimmed_vs_untrimmed": round(float(cosine.min()), 6),
        "min_cosine_vs_fp32": round(float(vs_fp32.min()), 6),
        "errors": failures,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
