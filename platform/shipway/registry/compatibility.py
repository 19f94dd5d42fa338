"""Would a new build break the clients of the one serving now? Pure; no I/O.

Clients are written against the serving model's signature: they send its inputs by
name, dtype and shape, and read its outputs the same way. A candidate whose signature
differs in a way those requests or readers cannot absorb would answer them with 400s
(a renamed input) or hand them tensors they do not expect, so a rollout, a variant or
a redeploy of such a build is refused before any traffic moves, unless the caller
says the change is intended (``allow_signature_change``).

What breaks, input side (what clients send): an input gone or renamed, a new input
(clients do not send it), another dtype, another rank, a fixed size changed, an axis
that was free (symbolic) now fixed. A fixed axis that becomes free accepts what it
accepted before, so it does not break.

Output side (what clients read): an output gone or renamed, another dtype, another
rank, a fixed size changed or made free. New outputs break nobody.
"""

from __future__ import annotations

from shipway.registry.signature import Dim, Signature, TensorSpec


def breaking_changes(serving: Signature, candidate: Signature) -> list[str]:
    """Each change that would break a client of ``serving``, in words; [] when none."""
    changes: list[str] = []
    for side, old, new in (
        ("input", serving.inputs, candidate.inputs),
        ("output", serving.outputs, candidate.outputs),
    ):
        theirs = {spec.name: spec for spec in new}
        for spec in old:
            if spec.name not in theirs:
                names = ", ".join(repr(s.name) for s in new)
                changes.append(f"{side} {spec.name!r} is gone (the candidate's {side}s: {names})")
                continue
            changes.extend(_tensor_changes(side, spec, theirs[spec.name]))
        if side == "input":
            known = {spec.name for spec in old}
            changes.extend(
                f"new input {spec.name!r} that clients do not send"
                for spec in new
                if spec.name not in known
            )
    return changes


def _tensor_changes(side: str, old: TensorSpec, new: TensorSpec) -> list[str]:
    what = f"{side} {old.name!r}"
    if old.dtype != new.dtype:
        return [f"{what} dtype {old.dtype} -> {new.dtype}"]
    if len(old.shape) != len(new.shape):
        return [f"{what} rank {len(old.shape)} -> {len(new.shape)} ({_show(old)} -> {_show(new)})"]
    changes = []
    for axis, (was, now) in enumerate(zip(old.shape, new.shape, strict=True)):
        if isinstance(was, int) and isinstance(now, int):
            if was != now:
                changes.append(f"{what} axis {axis} size {was} -> {now}")
        elif isinstance(now, int) and side == "input":  # free before: clients vary it
            changes.append(f"{what} axis {axis} was free, now fixed at {now}")
        elif isinstance(was, int) and side == "output":  # readers count on the size
            changes.append(f"{what} axis {axis} size {was} -> free")
    return changes


def _show(spec: TensorSpec) -> str:
    return "[" + ", ".join(_dim(d) for d in spec.shape) + "]"


def _dim(dim: Dim) -> str:
    return "?" if dim is None else str(dim)
