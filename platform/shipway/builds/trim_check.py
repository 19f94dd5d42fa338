"""Does trimming change this build's answers? The packaging-time equivalence check.

Trimming (``triton_models/padding.py``) is only a speed-up when the engine's answer for
a row does not depend on how much padding the row was sent with, nor on which other
requests' rows it is stacked with. That holds for an FP32 transformer (the mask is an
attention bias; MiniLM-L3's answers agree within 3e-7 trimmed and untrimmed: max 2.4e-07
on its example reference sample, ``minilm.make_inputs(64, 32)``), and for a static INT8
build (fixed Q/DQ scales). It does not hold for an engine that computes something over
the whole tensor, padding positions or other rows included: an ``int8-dynamic`` build's
``DynamicQuantizeLinear`` takes its scale from the min and max of the whole activation
tensor, so padded positions' states (and batch-mates' states) move every real row's
quantization (MiniLM-L3's pooled embedding moves by up to 1.3e-1 trimmed on
``minilm.make_inputs(64, 32)``, 5.7e-2 on ``text.sentences(32)`` padded to 64). The
accuracy gate judged the engine on rows as the client sends them (padded, and untrimmed
the Python backend runs each request alone), so such an engine must be served untrimmed,
or what is served is not what was gated.

So a build is trimmed only when this check, run on the version's reference sample
through the built engine, finds every answer the same trimmed as served untrimmed. It
runs what the served model runs: untrimmed, each request alone, padded as sent;
trimmed, rows of several requests stacked (up to ``max_batch_size``) and cut to the
group's longest real row (``padding.fit``, ``padding.restore``). Concretely (the
``arrangements``): the first ``MAX_ALONE`` rows each alone, and the rows in batches of
up to ``max_batch_size``, at the sample's own length, each run padded and trimmed;
each trimmed batch's row is also compared with that row run alone and padded (stacked
vs alone: what a request gets trimmed vs untrimmed). At the next bucket past the
sample's length (as a client padding to a fixed length sends it) the rows alone run
again, and the batches whose rows all fill the sample's length (nothing to trim there).
The rows are capped at ``MAX_ROWS`` and at ``MAX_TOKENS`` positions as sent (rows x
length), so a long-sequence model's check stays cheap; the report says how many ran.

Tolerance (``Tolerance``): every float output must agree within ``numpy.allclose``
with ``rtol`` ``RTOL`` and ``atol`` the larger of ``ATOL`` (the floor: the bound the
served-vs-ONNX Runtime tests hold Triton to) and ``ULPS`` units in the last place of
the engine's float precision at the output's largest magnitude in that run
(``ULPS * eps * max|output|``). For an FP32 engine that term is ~5e-7 x the magnitude
and the floor decides; for an FP16 engine (eps 2^-10) it is ~4e-3 x the magnitude:
rounding to fp16 alone moves an FP16 MiniLM-L3's pooled output by up to 4.9e-4 and its
token states by 2.0e-3 between untrimmed and trimmed on ``minilm.make_inputs(64, 32)``
(at most one fp16 ulp of the output's largest value), which is noise, not padding
leaking in. An ``int8-dynamic`` engine is FP32 (its movement on the same samples,
5.7e-2..1.3e-1, is far past the floor). The engine's precision is the
narrowest float type its graph holds (``packaging.engine_precision``) or an output's
own dtype, if narrower. Token-level outputs are compared where the mask is non-zero
(the served model answers zeros elsewhere); integer, bool and string outputs must be
equal exactly.

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
ATOL = 1e-4  # the floor of the absolute tolerance, whatever the precision
ULPS = 4  # units in the last place of the engine's precision, at the output's magnitude
# Machine epsilon (the spacing of floats at 1.0) per precision an engine computes in.
EPSILON = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
MAX_ROWS = 32  # reference rows checked: enough to meet the padding, cheap to run
MAX_ALONE = 16  # of which this many are also run alone
MAX_TOKENS = 32 * 128  # rows x sent length: a long-sequence model checks fewer rows

Arrays = Mapping[str, np.ndarray]
Run = Callable[[Arrays], Arrays]  # inputs -> every output, by name; raises when it fails


@dataclass(frozen=True)
class Tolerance:
    """How far a trimmed answer may be from the untrimmed one (the module docstring):
    ``rtol`` ``RTOL``, ``atol`` ``max(ATOL, ULPS * eps * max|untrimmed|)`` where ``eps``
    is ``precision``'s (``EPSILON``) or the output dtype's, whichever is coarser."""

    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in EPSILON:
            raise ValueError(f"unknown precision {self.precision!r}, expected one of {EPSILON}")

    def epsilon(self, dtype: np.dtype) -> float:
        own = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0
        return max(EPSILON[self.precision], own)

    def atol(self, want: np.ndarray) -> float:
        """The absolute tolerance for an output whose untrimmed answer is ``want``."""
        finite = np.abs(want[np.isfinite(want)])
        magnitude = float(finite.max(initial=0.0))
        return max(ATOL, ULPS * self.epsilon(want.dtype) * magnitude)

    def describe(self) -> str:
        if EPSILON[self.precision] <= EPSILON["float32"]:
            return f"rtol {RTOL:g}, atol {ATOL:g}"
        return (
            f"rtol {RTOL:g}, atol the larger of {ATOL:g} and {ULPS} {self.precision} ulps "
            "of the output's largest magnitude"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"rtol": RTOL, "atol": ATOL, "precision": self.precision, "ulps": ULPS}


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
    tolerance: Tolerance = Tolerance()
    sample_rows: int = 0  # rows of the sample with a real position (``rows`` of them ran)
    stacked: int = 0  # rows compared stacked in a trimmed batch vs run alone, padded
    tokens: int = 0  # positions the engine ran, padded and trimmed runs together
    seconds: float | None = None  # set by the caller that timed it

    @property
    def agrees(self) -> bool:
        return self.problem is None and self.runs > 0 and not self.differs

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "sample_rows": self.sample_rows,
            "max_rows": MAX_ROWS,
            "max_tokens": MAX_TOKENS,
            "runs": self.runs,
            "stacked_rows": self.stacked,
            "tokens": self.tokens,
            "sent_lengths": list(self.lengths),
            "tolerance": self.tolerance.to_dict(),
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in sorted(self.max_abs_diff.items())},
            "differs": list(self.differs),
            **({"seconds": self.seconds} if self.seconds is not None else {}),
            **({"problem": self.problem} if self.problem else {}),
        }


def arrangements(rows: int, max_batch: int) -> list[np.ndarray]:
    """Row indices run together: the first ``MAX_ALONE`` rows alone (a request with a
    row of its own, as the untrimmed model runs every request), then consecutive
    batches of up to ``max_batch`` rows, except a 1-row batch already run alone."""
    batch = max(1, max_batch)
    alone = [np.array([i]) for i in range(min(rows, MAX_ALONE))]
    groups = [np.arange(start, min(start + batch, rows)) for start in range(0, rows, batch)]
    return alone + [g for g in groups if g.size > 1 or g[0] >= MAX_ALONE]


def differences(
    padded: Arrays,
    trimmed: Arrays,
    mask: np.ndarray,
    token_outputs: Sequence[str],
    tolerance: Tolerance = Tolerance(),
) -> dict[str, tuple[float | None, bool]]:
    """Per output of ``padded``: (largest absolute difference, None when not float or
    not comparable; whether the trimmed answer stands for the padded one). ``trimmed``
    token outputs are restored to the request's shape as the served model restores
    them (after checking they have its rows and trailing axes: ``restore`` would
    broadcast one row over many), and the padded ones zeroed where ``mask`` is zero."""
    result: dict[str, tuple[float | None, bool]] = {}
    for name, want in padded.items():
        want = np.asarray(want)
        got = trimmed.get(name)
        if got is None:
            result[name] = (None, False)
            continue
        got = np.asarray(got)
        if name in token_outputs and want.ndim >= 2 and want.shape[:2] == mask.shape:
            if got.ndim != want.ndim or got.shape[0] != want.shape[0]:
                result[name] = (None, False)
                continue
            if got.shape[2:] != want.shape[2:]:
                result[name] = (None, False)
                continue
            got = padding.restore(got, mask)
            want = want.copy()
            want[np.asarray(mask) == 0] = 0
        if got.shape != want.shape:
            result[name] = (None, False)
        elif np.issubdtype(want.dtype, np.floating):
            both = np.isfinite(want) & np.isfinite(got)
            diff = float(np.max(np.abs(want[both] - got[both]), initial=0.0))
            atol = tolerance.atol(want)
            same = np.allclose(got, want, rtol=RTOL, atol=atol, equal_nan=True)
            result[name] = (diff, bool(same and np.array_equal(both, np.isfinite(want))))
        else:
            result[name] = (None, bool(np.array_equal(got, want)))
    return result


@dataclass
class _Tally:
    worst: dict[str, float] = field(default_factory=dict)
    differs: set[str] = field(default_factory=set)

    def add(self, found: Mapping[str, tuple[float | None, bool]]) -> None:
        for name, (diff, same) in found.items():
            if diff is not None:
                self.worst[name] = max(self.worst.get(name, 0.0), diff)
            if not same:
                self.differs.add(name)


def check(
    run: Run,
    sample: Arrays,
    mask_name: str,
    sequence_inputs: Sequence[str],
    token_outputs: Sequence[str],
    max_batch: int,
    buckets: Sequence[int] = padding.DEFAULT_BUCKETS,
    precision: str = "float32",
) -> TrimCheck:
    """Run ``sample`` (every input batched: rows on axis 0) padded and trimmed in each
    of ``arrangements`` at the sample's length and at the next bucket past it, and
    compare (see the module docstring; ``precision``: the engine's, for ``Tolerance``).
    Rows without a real position are left out (the served model runs them at their
    group's length, documented as length-dependent)."""
    tolerance = Tolerance(precision)
    mask = np.asarray(sample[mask_name])
    real = padding.real_lengths(mask)
    sent = int(mask.shape[1])
    eligible = np.flatnonzero(real > 0)
    keep = eligible[: min(MAX_ROWS, max(1, MAX_TOKENS // max(1, sent)))]
    if keep.size == 0:
        return TrimCheck(problem="the reference sample has no row with a real position")
    rows = {name: np.asarray(value)[keep] for name, value in sample.items()}
    lengths = (sent, padding.bucket(sent + 1, buckets))
    checked: list[int] = []
    tally = _Tally()
    runs = stacked = tokens = 0
    alone: dict[tuple[int, int], tuple[Arrays, np.ndarray]] = {}  # (length, row) -> padded
    trimmed_at_sent: set[tuple[int, ...]] = set()

    def found(problem: str | None = None) -> TrimCheck:
        return TrimCheck(
            len(keep), runs, tuple(checked), tally.worst, tuple(sorted(tally.differs)),
            problem, tolerance, int(eligible.size), stacked, tokens,
        )  # fmt: skip

    for length in lengths:
        for index in arrangements(len(keep), max_batch):
            if length != sent and index.size > 1 and tuple(index) in trimmed_at_sent:
                continue  # compared at the sample's own length already
            feeds = {
                name: padding.fit(value[index], length) if name in sequence_inputs else value[index]
                for name, value in rows.items()
            }
            longest = int(real[keep][index].max())
            try:
                padded = run(feeds)
            except Exception as exc:
                if length == sent:
                    return found(f"the engine failed on the sample: {exc}")
                break  # the model cannot run that long a row: no client sends it either
            tokens += index.size * length
            if length not in checked:
                checked.append(length)
            if index.size == 1:
                alone[(length, int(index[0]))] = (padded, feeds[mask_name])
            if longest >= length:
                continue  # nothing to trim in this arrangement
            cut = {
                name: padding.fit(value, longest) if name in sequence_inputs else value
                for name, value in feeds.items()
            }
            try:
                trimmed = run(cut)
            except Exception as exc:
                return found(f"the engine failed on the sample trimmed to {longest}: {exc}")
            tokens += index.size * longest
            runs += 1
            if length == sent:
                trimmed_at_sent.add(tuple(index))
            tally.add(differences(padded, trimmed, feeds[mask_name], token_outputs, tolerance))
            if index.size == 1:
                continue
            # Stacked vs alone: untrimmed, each request runs alone; trimmed, its row
            # runs stacked with others'. Each row's answer must not depend on them.
            for position, row in enumerate(index.tolist()):
                if (length, row) not in alone:
                    continue
                want, row_mask = alone[(length, row)]
                mine = {
                    name: value[position : position + 1]
                    for name, value in ((n, np.asarray(v)) for n, v in trimmed.items())
                    if value.ndim >= 1 and value.shape[0] == index.size
                }
                tally.add(differences(want, mine, row_mask, token_outputs, tolerance))
                stacked += 1
    return found(
        None
        if runs
        else (
            "the reference sample has no padding to trim, and the engine did not run it "
            "padded further"
        )
    )
