from __future__ import annotations

from shipway.cli.main import report_lines


def test_report_headline() -> None:
    report = {
        "accuracy": {
            "passed": True,
            "mean_cosine": 0.99612,
            "min_cosine": 0.9931,
            "threshold": 0.99,
        },
        "selective": {"kept_fp32": ["layer.0/output/MatMul"]},
        "benchmark": {
            "speedup_vs_fp32": 1.96,
            "speedup_vs_stable": 0.8,
            "stable_build": "abc",
            "performance_regression": True,
        },
        "size_mb": {"candidate": 18.2, "fp32": 69.1},
    }
    assert report_lines(report) == [
        "accuracy gate passed: mean cosine 0.9961, worst 0.9931 (threshold 0.99)",
        "kept in FP32: layer.0/output/MatMul",
        "speed: 1.96x FP32, 0.80x stable (abc) — PERFORMANCE REGRESSION against stable",
        "size: 18.2 MB (FP32 69.1 MB)",
    ]
    assert report_lines({}) == []
