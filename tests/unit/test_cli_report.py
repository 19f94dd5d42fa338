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
        "accuracy gate passed: mean cosine 0.9961 (threshold 0.99), worst row 0.9931 (floor 0.98)",
        "kept in FP32: layer.0/output/MatMul",
        "speed: 1.96x FP32, 0.80x stable (abc) — PERFORMANCE REGRESSION against stable",
        "size: 18.2 MB (FP32 69.1 MB)",
    ]
    tiny = {"size_mb": {"candidate": 0.0012, "fp32": 0.0031}}
    assert report_lines(tiny) == ["size: 0.0012 MB (FP32 0.0031 MB)"]
    strict = {"accuracy": {**report["accuracy"], "rule": {"min_row_cosine": 0.995}}}
    assert report_lines(strict)[0].endswith("worst row 0.9931 (floor 0.995)")
    assert report_lines({}) == []


def test_drift_tables_and_sparkline() -> None:
    from shipway.cli.main import drift_rows, sparkline

    assert sparkline([0.0, 0.5, 1.0]) == "▁▄█" and sparkline([]) == ""
    body = {
        "variants": [
            {
                "variant": "stable",
                "build_id": "b1",
                "verdict": "drift",
                "rows": 300,
                "score": 0.41,
                "min_p_adjusted": 1e-9,
                "features": [
                    {
                        "name": "attention_mask.sum",
                        "test": "ks",
                        "p_value": 1e-10,
                        "p_adjusted": 1e-9,
                        "statistic": 0.41,
                        "drifted": True,
                    }
                ],
                "missing": ["age"],
            }
        ],
        "history": [
            {"variant": "stable", "score": 0.41},
            {"variant": "stable", "score": 0.02},
        ],
    }
    variants, features = drift_rows(body)
    assert variants == [["stable (b1)", "drift", 300, "0.410", "1e-09", "▁█"]]
    assert features == [
        ["stable", "attention_mask.sum", "ks", "1e-10", "1e-09", "0.410", "DRIFT"],
        ["stable", "age", "", "", "", "", "missing from traffic"],
    ]


def test_a_timeline_check_shows_the_bound_it_was_judged_on() -> None:
    """A p99 ratio of 5.11 against 2 passes when its confidence bound (1.01) is within the
    limit: the cell shows the bound, so 'passed' does not read as a bug."""
    from shipway.cli.rollouts import _numbers

    cell = _numbers(
        {
            "p99_ratio": {"outcome": "passed", "value": 5.11, "limit": 2.0, "bound": 1.01},
            "requests": {"outcome": "passed", "value": 40.0, "limit": 20.0, "bound": None},
            "error_rate": {"outcome": "inconclusive", "value": None, "limit": 0.05},
        }
    )
    assert cell == (
        "p99_ratio 5.11 (lower bound 1.01)/2 passed; requests 40/20 passed; "
        "error_rate -/0.05 inconclusive"
    )
