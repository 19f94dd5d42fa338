"""Does trimming change this build's answers? The packaging-time equivalence check.

Trimming (``triton_models/padding.py``) is only a speed-up when the engine's answer for
a row does not depend on how much padding the row was sent with. That holds for an
FP32 transformer (the mask is an attention bias; MiniLM's pooled output is bit-equal
trimmed and padded), and for a static INT8 build (fixed Q/DQ scales). It does not hold
for an engine that computes something over the whole tensor, padding positions
included: an ``int8-dynamic`` build's ``DynamicQuantizeLinear`` takes its scale from
the min and max of the whole activation tensor, so padded positions' states move every
real row's quantization (MiniLM-L3: the pooled embedding moves by up to 6e-2 trimmed).
The accuracy gate judged the engine on rows as the client sends them (padded), so such
an engine must be served untrimmed, or what is served is not what was gated.

So a build is trimmed only when this check, run on the version's reference sample
through the built engine, finds every answer the same trimmed as padded: each
arrangement the served model can run a row in (the sample in batches of up to
``max_batch_size`` rows, and each row alone), at the sample's own length and padded
further to the next bucket (as a client padding to a fixed length sends it), against
the same arrangement trimmed to its longest real row, exactly as the served model trims
(``padding.fit``, ``padding.restore``). Every non-token output must agree within
``RTOL``/``ATOL`` (``numpy.allclose``; the same bound the served-vs-ONNX Runtime tests
hold Triton to), token-level outputs the same where the mask is non-zero (the served
model answers zeros elsewhere), integer, bool and string outputs exactly.

Pure: the engine is a callable (``Run``); ``packaging.trim_decision`` runs it with ONNX
Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipway.builds.triton_models import padding

RTOL = 1e-4
ATOL = 1e-4
MAX_ROWS = 32  # reference rows checked: enough to meet the padding, cheap to run
MAX_ALONE = 16  # of which this many are also run alone

Arrays = Mapping[str, np.ndarray]
Run = Callable[[Arrays], Arrays]  # inputs -> every output, by name; raises when it fails


@dataclass(frozen=True)
class TrimCheck:
    """What the check ran and found. ``agrees``: every output within tolerance in every
    run that trimming changed (and there was at least one); ``problem``: why the check
    could not decide (no rows to check, a run failed, nothing to trim)."""

    rows: int = 0
    runs: int = 0  # arrangement x length pairs whose trimmed run was shorter than sent
    lengths: tuple[int, ...] = ()  # sent lengths checked
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # float outputs
    differs: tuple[str, ...] = ()  # outputs outside the tolerance (or not exactly equal)
    problem: str | None = None

    @property
    def agrees(self) -> bool:
        return self.problem is None and self.runs > 0 and not self.differs

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "runs": self.runs,
            "sent_lengths": list(self.lengths),
            "tolerance": {"rtol": RTOL, "atol": ATOL},
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in sorted(self.max_abs_diff.items())},
            "differs": list(self.differs),
            **({"problem": self.problem} if self.problem else {}),
        }


def arrangements(rows: int, max_batch: int) -> list[np.ndarray]:
    """Row indices run together: consecutive batches of up to ``max_batch`` rows, then
    the first ``MAX_ALONE`` rows alone (a request with a row of its own)."""
    batch = max(1, max_batch)
    groups = [np.arange(start, min(start + batch, rows)) for start in range(0, rows, batch)]
    alone = [np.array([i]) for i in range(min(rows, MAX_ALONE))]
    return groups + ([] if batch == 1 else alone)


def differences(
    padded: Arrays, trimmed: Arrays, mask: np.ndarray, token_outputs: Sequence[str]
) -> dict[str, tuple[float | None, bool]]:
    """Per output of ``padded``: (largest absolute difference, None when not float;
    whether the trimmed answer stands for the padded one). ``trimmed`` token outputs
    are restored to the request's shape as the served model restores them, and the
    padded ones zeroed where ``mask`` is zero."""
    result: dict[str, tuple[float | None, bool]] = {}
    for name, want in padded.items():
        want = np.asarray(want)
        got = trimmed.get(name)
        if got is None:
            result[name] = (None, False)
            continue
        got = np.asarray(got)
        if name in token_outputs and want.ndim >= 2 and want.shape[:2] == mask.shape:
            got = padding.restore(got, mask)
            want = want.copy()
            want[np.asarray(mask) == 0] = 0
        if got.shape != want.shape:
            result[name] = (None, False)
        elif np.issubdtype(want.dtype, np.floating):
            both = np.isfinite(want) & np.isfinite(got)
            diff = float(np.max(np.abs(want[both] - got[both]), initial=0.0))
            same = np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
            result[name] = (diff, bool(same and np.array_equal(both, np.isfinite(want))))
        else:
            result[name] = (None, bool(np.array_equal(got, want)))
    return result


def check(
    run: Run,
    sample: Arrays,
    mask_name: str,
    sequence_inputs: Sequence[str],
    token_outputs: Sequence[str],
    max_batch: int,
    buckets: Sequence[int] = padding.DEFAULT_BUCKETS,
) -> TrimCheck:
    """Run ``sample`` (every input batched: rows on axis 0) padded and trimmed in each
    of ``arrangements`` at the sample's length and at the next bucket past it; see the
    module docstring. Rows without a real position are left out (the served model runs
    them at their group's length, documented as length-dependent)."""
    mask = np.asarray(sample[mask_name])
    real = padding.real_lengths(mask)
    keep = np.flatnonzero(real > 0)[:MAX_ROWS]
    if keep.size == 0:
        return TrimCheck(problem="the reference sample has no row with a real position")
    rows = {name: np.asarray(value)[keep] for name, value in sample.items()}
    sent = int(mask.shape[1])
    lengths = (sent, padding.bucket(sent + 1, buckets))
    checked: list[int] = []
    worst: dict[str, float] = {}
    differs: set[str] = set()
    runs = 0
    for length in lengths:
        for index in arrangements(len(keep), max_batch):
            feeds = {
                name: padding.fit(value[index], length) if name in sequence_inputs else value[index]
                for name, value in rows.items()
            }
            longest = int(real[keep][index].max())
            try:
                padded = run(feeds)
            except Exception as exc:
                if length == sent:
                    return TrimCheck(len(keep), problem=f"the engine failed on the sample: {exc}")
                break  # the model cannot run that long a row: no client sends it either
            if length not in checked:
                checked.append(length)
            if longest >= length:
                continue  # nothing to trim in this arrangement
            cut = {
                name: padding.fit(value, longest) if name in sequence_inputs else value
                for name, value in feeds.items()
            }
            try:
                trimmed = run(cut)
            except Exception as exc:
                return TrimCheck(
                    len(keep), runs, tuple(checked), worst, tuple(sorted(differs)),
                    problem=f"the engine failed on the sample trimmed to {longest}: {exc}",
                )  # fmt: skip
            runs += 1
            for name, (diff, same) in differences(
                padded, trimmed, feeds[mask_name], token_outputs
            ).items():
                if diff is not None:
                    worst[name] = max(worst.get(name, 0.0), diff)
                if not same:
                    differs.add(name)
    problem = None
    if runs == 0:
        problem = (
            "the reference sample has no padding to trim, and the engine did not run it "
            "padded further"
        )
    return TrimCheck(len(keep), runs, tuple(checked), worst, tuple(sorted(differs)), problem)
