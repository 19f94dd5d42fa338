"""Accuracy-driven selective quantization: keep the fewest layers in FP32 that let the
candidate pass the accuracy gate.

Measured on MiniLM: most of the INT8 error can sit in one or two layers (an
activation-outlier FFN projection), so a sweep that quantizes one layer at a time
ranks the layers by the error each adds on its own, and the search then keeps the
worst 0, 1, 2, ... of them in FP32 until the gate passes. The search is written over
callables so it holds no I/O of its own and is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Verdict = TypeVar("Verdict")


@dataclass(frozen=True)
class Sensitivity:
    node: str
    # The gate's lowest metric (mean cosine; top-1 agreement for class scores) of the
    # model with only this node quantized, against FP32 on calibration rows.
    score: float

    @property
    def error(self) -> float:
        return 1.0 - self.score


def rank(sensitivities: Sequence[Sensitivity]) -> list[Sensitivity]:
    """Most harmful first; ties keep graph order so the result is deterministic."""
    order = {s.node: i for i, s in enumerate(sensitivities)}
    return sorted(sensitivities, key=lambda s: (-s.error, order[s.node]))


@dataclass
class Selection(Generic[Verdict]):
    kept_fp32: tuple[str, ...]
    verdict: Verdict
    passed: bool
    tried: list[tuple[tuple[str, ...], Verdict]] = field(default_factory=list)


def search(
    ranked: Sequence[str],
    attempt: Callable[[tuple[str, ...]], tuple[bool, Verdict]],
    max_kept: int,
) -> Selection[Verdict]:
    """Try keeping the top 0..max_kept ranked nodes in FP32; stop at the first pass.

    ``attempt(kept)`` builds and gates one candidate. When nothing passes, the last
    try is returned, failed, with every try recorded for the build report.
    """
    tried: list[tuple[tuple[str, ...], Verdict]] = []
    for count in range(0, min(max_kept, len(ranked)) + 1):
        kept = tuple(ranked[:count])
        passed, verdict = attempt(kept)
        tried.append((kept, verdict))
        if passed:
            return Selection(kept, verdict, True, tried)
    kept, verdict = tried[-1]
    return Selection(kept, verdict, False, tried)
