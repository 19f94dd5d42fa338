"""Which signature changes break the clients of the serving build."""

from __future__ import annotations

from shipway.registry.compatibility import breaking_changes
from shipway.registry.signature import Signature, TensorSpec


def sig(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Signature:
    return Signature(tuple(inputs), tuple(outputs))


X = TensorSpec("x", "float32", ("batch", 4))
Y = TensorSpec("y", "float32", ("batch", 4))
SERVING = sig([X], [Y])


def test_the_same_signature_breaks_nothing() -> None:
    assert breaking_changes(SERVING, sig([X], [Y])) == []


def test_a_renamed_input_is_named() -> None:
    renamed = sig([TensorSpec("features", "float32", ("batch", 4))], [Y])
    changes = breaking_changes(SERVING, renamed)
    assert changes == [
        "input 'x' is gone (the candidate's inputs: 'features')",
        "new input 'features' that clients do not send",
    ]


def test_dtype_rank_and_size_changes_break() -> None:
    assert breaking_changes(SERVING, sig([TensorSpec("x", "float16", ("batch", 4))], [Y])) == [
        "input 'x' dtype float32 -> float16"
    ]
    assert breaking_changes(SERVING, sig([TensorSpec("x", "float32", ("batch", 2, 2))], [Y])) == [
        "input 'x' rank 2 -> 3 ([batch, 4] -> [batch, 2, 2])"
    ]
    assert breaking_changes(SERVING, sig([TensorSpec("x", "float32", ("batch", 8))], [Y])) == [
        "input 'x' axis 1 size 4 -> 8"
    ]
    assert breaking_changes(SERVING, sig([X], [TensorSpec("y", "float32", ("batch", 5))])) == [
        "output 'y' axis 1 size 4 -> 5"
    ]
    assert breaking_changes(SERVING, sig([X], [TensorSpec("z", "float32", ("batch", 4))])) == [
        "output 'y' is gone (the candidate's outputs: 'z')"
    ]


def test_what_clients_can_still_send_and_read_is_compatible() -> None:
    # a fixed input axis made free accepts what it accepted; an extra output is unread
    looser = sig([TensorSpec("x", "float32", ("batch", "n"))], [Y, TensorSpec("p", "int64", ())])
    assert breaking_changes(SERVING, looser) == []
    # but a free input axis made fixed refuses sizes clients send, and readers of a fixed
    # output size cannot count on it any more
    free = sig([TensorSpec("x", "float32", ("batch", "n"))], [Y])
    assert breaking_changes(free, SERVING) == ["input 'x' axis 1 was free, now fixed at 4"]
    loose_out = sig([X], [TensorSpec("y", "float32", ("batch", None))])
    assert breaking_changes(SERVING, loose_out) == ["output 'y' axis 1 size 4 -> free"]
