from __future__ import annotations

from shipway.cli.main import report_lines


def test_report_headline_names_top1_and_each_failure() -> None:
    report = {
        "accuracy": {
            "passed": False,
            "mean_cosine": 0.99999,
            "min_cosine": 0.99998,
            "threshold": 0.99,
            "top1_agreement": 0.625,
            "min_top1": 0.99,
            "failures": ["output 'probs': top1 agreement 0.6250 < 0.99"],
        }
    }
    assert report_lines(report) == [
        "accuracy gate FAILED: mean cosine 1.0000 (threshold 0.99), worst row 1.0000 "
        "(floor 0.98); top-1 agreement 0.6250 (threshold 0.99)",
        "  output 'probs': top1 agreement 0.6250 < 0.99",
    ]


def test_report_headline_of_a_model_with_integer_outputs_only() -> None:
    accuracy = {"passed": True, "mean_cosine": None, "min_cosine": None, "threshold": 0.99}
    assert report_lines({"accuracy": accuracy}) == ["accuracy gate passed: exact outputs"]
