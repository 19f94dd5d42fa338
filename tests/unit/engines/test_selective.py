from __future__ import annotations

from shipway.engines.selective import Sensitivity, rank, search


def test_rank_puts_the_most_harmful_first_and_keeps_graph_order_on_ties() -> None:
    ranked = rank(
        [
            Sensitivity("q", 0.9999),
            Sensitivity("ffn_out", 0.990),
            Sensitivity("k", 0.9999),
            Sensitivity("ffn_in", 0.995),
        ]
    )
    assert [s.node for s in ranked] == ["ffn_out", "ffn_in", "q", "k"]


def test_search_keeps_the_fewest_layers_that_pass() -> None:
    # The candidate passes once both of the two worst layers stay in FP32.
    tried: list[tuple[str, ...]] = []

    def attempt(kept: tuple[str, ...]) -> tuple[bool, float]:
        tried.append(kept)
        cosine = 0.97 + 0.01 * len(kept)
        return cosine >= 0.99, cosine

    result = search(["a", "b", "c", "d"], attempt, max_kept=3)
    assert result.passed and result.kept_fp32 == ("a", "b")
    assert tried == [(), ("a",), ("a", "b")]  # stops at the first pass
    assert [verdict for _, verdict in result.tried] == [0.97, 0.98, 0.99]


def test_search_reports_the_last_try_when_nothing_passes() -> None:
    result = search(["a", "b", "c"], lambda kept: (False, len(kept)), max_kept=2)
    assert not result.passed
    assert result.kept_fp32 == ("a", "b") and result.verdict == 2
    assert len(result.tried) == 3


def test_search_with_no_budget_tries_only_full_quantization() -> None:
    result = search(["a"], lambda kept: (False, kept), max_kept=0)
    assert not result.passed and result.tried == [((), ())]
