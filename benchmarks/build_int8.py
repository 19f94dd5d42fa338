"""INT8 builds of MiniLM: how much faster, and still the same model?

Registers paraphrase-MiniLM-L3 with real text (sentences of CPython's own reference
documentation, tokenized with the uncased BERT vocabulary; see
shipway.examples.text): held-out rows as the reference sample, other rows as the
calibration dataset. Builds it as fp32, int8, int8-dynamic and int8-dynamic with
quantized embeddings for onnxruntime-cpu, and int8 (NNCF) and bf16 for openvino-cpu when
the CPU has bfloat16 (fp32 forced to f32 otherwise), through the real build pipeline (the
code a worker runs), then measures the engines side by side with the fused FP32 baseline
(ONNX Runtime's transformer fusions, ``quantize.prepare(attention=True)``) in
alternating rounds: batch 8 and batch 1 at sequence 128, and batch 8 at the held-out
rows' real lengths (each batch cut to its longest row, ``builds.baselines``).
The int8-dynamic build picks its arm itself (``matmul`` or ``qattention``, see
``builds.baselines``); its name is ``int8_dynamic_arm``.

The cosines are the accuracy gate's own numbers from the int8 build report: the
attention-mask-aware mean-pooled embedding, held-out rows. The OpenVINO engines run in
OpenVINO, compiled with the precision their build was gated with (``openvino_*_precision``
is what OpenVINO read back); the ONNX ones in ONNX Runtime.

Run:  .venv/bin/python benchmarks/build_int8.py
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from shipway.builds import baselines
from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.engines import evaluate, openvino, quantize
from shipway.engines.benchmark import on_feeds
from shipway.engines.calibration import Rows, rows, take
from shipway.examples import minilm, text
from shipway.registry.signature import Signature
from shipway.services import models
from shipway.settings import Settings
from shipway.store.models import Build


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration-rows", type=int, default=128)
    parser.add_argument("--held-out-rows", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--method", default="percentile", help="int8 calibration method")
    args = parser.parse_args()

    sentences = text.sentences(args.calibration_rows + args.held_out_rows)
    calibration = text.encode(sentences[: args.calibration_rows])
    held_out = text.encode(sentences[args.calibration_rows :])
    tokens = held_out["attention_mask"].sum(1).mean()
    print(f"{len(sentences)} sentences; mean length {tokens:.1f} tokens")

    with tempfile.TemporaryDirectory(prefix="shipway-bench-") as tmp:
        home = Path(tmp)
        container = Container(Settings(home=home, build_bench_seconds=0.5, build_bench_rounds=1))
        container.registry.initialize()
        version = models.register(
            container,
            models.Registration(
                "minilm",
                minilm.onnx_path().read_bytes(),
                npz(held_out),
                {},
                npz(calibration),
            ),
            actor="benchmark",
        )
        pipeline = BuildPipeline(container.db, container.registry, container.settings)
        built: dict[str, Build] = {}
        seconds: dict[str, float] = {}
        ov_second = "bf16" if "BF16" in openvino.capabilities() else "fp32"
        plans = {
            "fp32": ("fp32", {}, "onnxruntime-cpu"),
            "int8": ("int8", {"calibration": args.method}, "onnxruntime-cpu"),
            "int8-dynamic": ("int8-dynamic", {}, "onnxruntime-cpu"),
            "int8-dynamic-emb": ("int8-dynamic", {"quantize_embeddings": True}, "onnxruntime-cpu"),
            "openvino-int8": ("int8", {}, "openvino-cpu"),
            f"openvino-{ov_second}": (ov_second, {}, "openvino-cpu"),
        }
        for recipe, (name, options, target) in plans.items():
            with container.db.session() as session:
                row = Build(
                    model_version_id=version.id,
                    recipe=name,
                    target=target,
                    options=options,
                )
                session.add(row)
                session.flush()
                build_id = row.id
            started = time.monotonic()
            pipeline.run(build_id)
            seconds[recipe] = time.monotonic() - started
            with container.db.session() as session:
                built[recipe] = session.get(Build, build_id)  # type: ignore[assignment]
            b = built[recipe]
            print(f"{recipe:>12}: {b.status} in {seconds[recipe]:.1f}s {b.error or ''}")
            if b.status != "succeeded":
                raise SystemExit(json.dumps({"error": f"{recipe} build failed: {b.error}"}))

        engines = {}
        sessions: dict[str, object] = {}
        outputs = [o["name"] for o in version.signature["outputs"]]
        for recipe, b in built.items():
            repo = container.registry.download(
                version.mlflow_run_id, b.artifact_path or "", home / "dl" / recipe
            )
            folder = repo / (b.triton_model_name or "") / "1"
            if recipe.startswith("openvino-"):
                hint = b.report["openvino"]["inference_precision_requested"]
                sessions[recipe] = openvino.Session(folder / "model.xml", hint, 0, outputs)
                engines[recipe] = folder / "model.bin"
            else:
                engines[recipe] = folder / "model.onnx"
        engines["fused-fp32"] = quantize.prepare(
            minilm.onnx_path(), home / "fused-fp32.onnx", attention=True
        )
        del engines["int8-dynamic-emb"]  # the same speed as int8-dynamic; built for its size
        for recipe, path in engines.items():
            if recipe not in sessions:
                sessions[recipe] = evaluate.session(path)

        results = {}
        for batch in (8, 1):
            feed = take(Rows(held_out), np.arange(batch) % rows(held_out))
            measured = on_feeds(engines, sessions, [feed], args.seconds, args.rounds)  # type: ignore[arg-type]
            results[batch] = measured
            for recipe, m in measured.items():
                print(
                    f"batch {batch} {recipe:>12}: {m.rows_per_second:7.1f} rows/s  "
                    f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  {m.size_mb:5.1f} MB"
                )
        real = baselines.real_length_batches(
            Rows(held_out), Signature.from_dict(version.signature), "attention_mask", 8
        )
        assert isinstance(real, baselines.RealLengths), real
        rl = on_feeds(engines, sessions, real.feeds, args.seconds, args.rounds)  # type: ignore[arg-type]
        for recipe, m in rl.items():
            print(
                f"real lengths {recipe:>12}: {m.rows_per_second:7.1f} rows/s  "
                f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms"
            )
        report = built["int8"].report
        print("int8 kept in FP32:", report["selective"]["kept_fp32"])
        dyn = built["int8-dynamic"].report
        emb = built["int8-dynamic-emb"].report
        print("int8-dynamic arms:", json.dumps(dyn.get("arms")))
        print("int8-dynamic build benchmark:", json.dumps(dyn["benchmark"]))
        b8, b1 = results[8], results[1]
        ov8 = built["openvino-int8"].report
        ov2 = built[f"openvino-{ov_second}"].report

        def ratio(measured: dict, a: str, b: str) -> float:
            return round(measured[a].rows_per_second / measured[b].rows_per_second, 3)

        summary = {
            "int8_speedup": round(b8["int8"].rows_per_second / b8["fp32"].rows_per_second, 3),
            "int8_dynamic_speedup": round(
                b8["int8-dynamic"].rows_per_second / b8["fp32"].rows_per_second, 3
            ),
            "int8_mean_cosine": round(report["accuracy"]["mean_cosine"], 5),
            "int8_min_cosine": round(report["accuracy"]["min_cosine"], 5),
            "build_seconds": round(seconds["int8"], 1),
            "int8_speedup_batch1": round(
                b1["int8"].rows_per_second / b1["fp32"].rows_per_second, 3
            ),
            "int8_dynamic_mean_cosine": round(dyn["accuracy"]["mean_cosine"], 5),
            "int8_fp32_layers_kept": len(report["selective"]["kept_fp32"]),
            "int8_speedup_vs_fused_fp32": ratio(b8, "int8", "fused-fp32"),
            "int8_dynamic_speedup_vs_fused_fp32": ratio(b8, "int8-dynamic", "fused-fp32"),
            "int8_dynamic_arm": dyn["benchmark"]["arm"],
            "real_lengths_mean": real.summary["mean_length"],
            "int8_speedup_vs_fused_fp32_real_lengths": ratio(rl, "int8", "fused-fp32"),
            "int8_dynamic_speedup_vs_fused_fp32_real_lengths": ratio(
                rl, "int8-dynamic", "fused-fp32"
            ),
            "fused_fp32_speedup_vs_raw_fp32": ratio(b8, "fused-fp32", "fp32"),
            "int8_dynamic_size_mb": dyn["size_mb"]["candidate"],
            "int8_dynamic_embeddings_size_mb": emb["size_mb"]["candidate"],
            "int8_dynamic_embeddings_mean_cosine": round(emb["accuracy"]["mean_cosine"], 5),
            "openvino_int8_speedup_vs_fused_fp32": ratio(b8, "openvino-int8", "fused-fp32"),
            "openvino_int8_speedup_vs_fused_fp32_real_lengths": ratio(
                rl, "openvino-int8", "fused-fp32"
            ),
            "openvino_int8_speedup_vs_fused_fp32_batch1": ratio(b1, "openvino-int8", "fused-fp32"),
            "openvino_int8_mean_cosine": round(ov8["accuracy"]["mean_cosine"], 5),
            "openvino_int8_min_cosine": round(ov8["accuracy"]["min_cosine"], 5),
            "openvino_int8_precision": ov8["openvino"]["inference_precision"],
            "openvino_int8_speedup_vs_onnxruntime_int8": ratio(b8, "openvino-int8", "int8"),
            "openvino_second_recipe": ov_second,
            "openvino_second_speedup_vs_fused_fp32": ratio(
                b8, f"openvino-{ov_second}", "fused-fp32"
            ),
            "openvino_second_speedup_vs_fused_fp32_real_lengths": ratio(
                rl, f"openvino-{ov_second}", "fused-fp32"
            ),
            "openvino_second_mean_cosine": round(ov2["accuracy"]["mean_cosine"], 5),
            "openvino_second_precision": ov2["openvino"]["inference_precision"],
            "calibration": args.method,
            "batch": 8,
            "seq_len": 128,
        }
        container.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
