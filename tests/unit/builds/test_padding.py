"""Trimming padding and batching by length: the served model's arithmetic
(``triton_models/padding.py``), which models trim (``triton_config.trim_plan``), the
config that says so, and the registration tags that name the mask or opt out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from shipway.builds import trim_check
from shipway.builds.accuracy import mask_input
from shipway.builds.packaging import (
    TrimDecision,
    engine_precision,
    package_repository,
    probe_fixed_outputs,
    trim_decision,
)
from shipway.builds.recipes import Target
from shipway.builds.triton_config import (
    ServingOptions,
    TrimPlan,
    check_mask_tag,
    render_config,
    token_outputs,
    trim_off_reason,
    trim_plan,
    trims_padding,
)
from shipway.builds.triton_models import padding
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec, load_model, read_signature
from shipway.settings import Settings
from tests.support.graphs import tiny_encoder

ENCODER = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
        TensorSpec("token_type_ids", "int64", ("batch", "seq")),
    ),
    outputs=(
        TensorSpec("last_hidden_state", "float32", ("batch", "seq", 384)),
        TensorSpec("pooled", "float32", ("batch", 384)),
        TensorSpec("logits", "float32", ("batch", 3)),
    ),
)


def _with_output(output: TensorSpec) -> Signature:
    """MiniLM's inputs with ``output`` for outputs."""
    return Signature(ENCODER.inputs, (output, ENCODER.outputs[1]))


# ---- the served model's arithmetic -------------------------------------------------


def test_real_length_is_one_past_the_last_real_position_whatever_the_padding() -> None:
    mask = np.array(
        [
            [1, 1, 1, 0, 0, 0],  # right padding
            [0, 0, 1, 1, 1, 1],  # left padding: nothing can be cut
            [1, 0, 1, 0, 0, 0],  # a hole inside: kept
            [0, 0, 0, 0, 0, 0],  # no real position
            [1, 1, 1, 1, 1, 1],
        ]
    )
    assert padding.real_lengths(mask).tolist() == [3, 6, 3, 0, 6]
    assert padding.real_lengths(mask.astype(np.float32) * 0.5).tolist() == [3, 6, 3, 0, 6]
    assert padding.real_lengths(mask.astype(bool)).dtype == np.int64
    assert padding.real_lengths(np.zeros((2, 0))).tolist() == [0, 0]  # no positions
    assert padding.restore(np.ones((2, 1, 3)), np.zeros((2, 0))).shape == (2, 0, 3)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 16), (1, 16), (16, 16), (17, 32), (32, 32), (33, 64), (128, 128), (129, 256), (300, 384)],
)
def test_bucket_is_the_smallest_that_holds_the_length(length: int, expected: int) -> None:
    assert padding.bucket(length) == expected


def test_buckets_are_configurable_and_checked() -> None:
    assert padding.bucket(9, (8, 24)) == 24
    assert padding.bucket(25, (8, 24)) == 48
    assert padding.check_buckets([8, 24]) == (8, 24)
    for bad in ([], [16, 16], [32, 16], [0, 16], [16.0], [True]):
        with pytest.raises(ValueError, match="length buckets"):
            padding.check_buckets(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="ascending"):
        ServingOptions(length_buckets=(64, 32))


def test_requests_group_by_bucket_and_by_the_shapes_they_must_share() -> None:
    sequence = ("ids", "mask")

    def key(longest: int, seq: int, extra: tuple[int, ...] = (4,)) -> object:
        inputs = {
            "ids": np.zeros((1, seq), np.int64),
            "mask": np.zeros((1, seq), np.int64),
            "x": np.zeros((1, *extra), np.float32),
        }
        return padding.group_key(longest, inputs, sequence, padding.DEFAULT_BUCKETS)

    # sent lengths do not matter (axis 1 is fitted), real lengths' buckets do
    assert key(5, 128) == key(16, 20)
    assert key(16, 20) != key(17, 20)
    assert key(5, 8, (4,)) != key(5, 8, (5,))  # another input's shape differs: not stacked
    keys = ["a", "b", "a", "c", "b"]
    assert padding.group(keys) == [[0, 2], [1, 4], [3]]


def test_fit_cuts_or_pads_the_sequence_axis_with_zeros() -> None:
    value = np.arange(1, 13).reshape(2, 6)
    assert padding.fit(value, 4).tolist() == [[1, 2, 3, 4], [7, 8, 9, 10]]
    assert padding.fit(value, 8).tolist() == [[1, 2, 3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12, 0, 0]]
    assert padding.fit(value, 6).shape == (2, 6)
    three = np.ones((1, 3, 2))
    assert padding.fit(three, 5).shape == (1, 5, 2)
    assert padding.fit(three, 5)[0, 3:].sum() == 0


def test_split_rows_gives_each_request_its_rows() -> None:
    stacked = np.arange(6)[:, None] * np.ones((1, 3))
    parts = padding.split_rows(stacked, [1, 3, 2])
    assert [p[:, 0].tolist() for p in parts] == [[0], [1, 2, 3], [4, 5]]


def test_restore_answers_in_the_requests_shape_with_zeros_wherever_masked() -> None:
    run = np.arange(1, 2 * 4 * 2 + 1, dtype=np.float32).reshape(2, 4, 2)  # run length 4
    mask = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0]])  # the request's length 6
    out = padding.restore(run, mask)
    assert out.shape == (2, 6, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :2], run[0, :2])
    np.testing.assert_array_equal(out[1, [0, 2, 3]], run[1, [0, 2, 3]])
    assert not out[mask == 0].any()  # past the mask and the hole inside it
    # a run longer than the request (a batch-mate's padding): cut back to its length
    assert padding.restore(np.ones((1, 8, 2)), np.ones((1, 3))).shape == (1, 3, 2)


# ---- which models trim ---------------------------------------------------------------


def test_token_outputs_are_those_whose_axis_1_is_the_masks_sequence_axis() -> None:
    plan = trim_plan(ENCODER, "attention_mask", ServingOptions())
    assert plan == TrimPlan(
        "attention_mask",
        ("input_ids", "attention_mask", "token_type_ids"),
        ("last_hidden_state",),
        (16, 32, 64, 128),
    )
    assert json.loads(plan.to_json())["token_outputs"] == ["last_hidden_state"]


def test_an_output_with_a_fixed_axis_1_of_the_same_size_is_not_token_level() -> None:
    signature = Signature(
        ENCODER.inputs,
        (TensorSpec("fixed", "float32", ("batch", 128, 8)), *ENCODER.outputs[1:]),
    )
    plan = trim_plan(signature, "attention_mask", ServingOptions())
    assert plan is not None and plan.token_outputs == ()


@pytest.mark.parametrize(
    ("signature", "mask", "options", "backend"),
    [
        (ENCODER, None, ServingOptions(), "python"),  # no mask input
        (ENCODER, "absent", ServingOptions(), "python"),  # named, not there
        (ENCODER, "attention_mask", ServingOptions(trim_padding=False), "python"),
        (ENCODER, "attention_mask", ServingOptions(max_batch_size=0), "python"),
        (ENCODER, "attention_mask", ServingOptions(), "tensorrt"),  # not the engine checked
        (  # a fixed sequence length: the graph takes no other
            Signature(
                (TensorSpec("ids", "int64", ("batch", 128)), TensorSpec("m", "int64", ("b", 128))),
                (TensorSpec("y", "float32", ("batch", 128, 4)),),
            ),
            "m",
            ServingOptions(),
            "python",
        ),
        (  # the sequence axis also on axis 2: not a cut of axis 1
            Signature(
                (
                    TensorSpec("ids", "int64", ("batch", "seq")),
                    TensorSpec("m", "int64", ("batch", "seq")),
                ),
                (TensorSpec("attn", "float32", ("batch", "seq", "seq")),),
            ),
            "m",
            ServingOptions(),
            "python",
        ),
        (  # a mask of rank 3
            Signature(
                (TensorSpec("m", "int64", ("batch", "seq", "seq")),),
                (TensorSpec("y", "float32", ("batch", 4)),),
            ),
            "m",
            ServingOptions(),
            "python",
        ),
        (  # torch list-form dynamic_axes: one symbolic name per tensor
            Signature(
                (
                    TensorSpec("input_ids", "int64", ("batch", "seq_ids")),
                    TensorSpec("attention_mask", "int64", ("batch", "seq_mask")),
                ),
                (TensorSpec("pooled", "float32", ("batch", 8)),),
            ),
            "attention_mask",
            ServingOptions(),
            "python",
        ),
        (  # an output whose axis 1 is unknown: it may follow the mask or not
            _with_output(TensorSpec("last_hidden_state", "float32", ("batch", None, 8))),
            "attention_mask",
            ServingOptions(),
            "python",
        ),
        (  # an output whose axis 1 has another symbolic name
            _with_output(TensorSpec("last_hidden_state", "float32", ("batch", "seq_out", 8))),
            "attention_mask",
            ServingOptions(),
            "python",
        ),
        (  # a float mask (additive: 0 where real) would be read inverted
            Signature(
                (
                    TensorSpec("input_ids", "int64", ("batch", "seq")),
                    TensorSpec("attention_mask", "float32", ("batch", "seq")),
                ),
                (TensorSpec("pooled", "float32", ("batch", 8)),),
            ),
            "attention_mask",
            ServingOptions(),
            "python",
        ),
        (  # a string token output: no zero to answer masked positions with
            _with_output(TensorSpec("tokens", "object", ("batch", "seq"))),
            "attention_mask",
            ServingOptions(),
            "python",
        ),
    ],
)
def test_models_that_are_left_untouched(
    signature: Signature, mask: str | None, options: ServingOptions, backend: str
) -> None:
    assert trim_plan(signature, mask, options, backend) is None


def test_the_config_carries_the_plan_and_ragged_sequence_inputs() -> None:
    plan = trim_plan(ENCODER, "attention_mask", ServingOptions(length_buckets=(8, 24)))
    text = render_config("m", ENCODER, "python", ServingOptions(), trim=plan)
    assert (
        '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true }' in text
    )
    line = next(x for x in text.splitlines() if x.startswith("parameters"))
    assert line.startswith('parameters { key: "shipway_trim" value: { string_value: ')
    encoded = line.removeprefix('parameters { key: "shipway_trim" value: { string_value: ')
    data = json.loads(json.loads(encoded.removesuffix(" } }")))
    assert data == {
        "mask": "attention_mask",
        "sequence_inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "token_outputs": ["last_hidden_state"],
        "buckets": [8, 24],
    }
    untrimmed = render_config("m", ENCODER, "python", ServingOptions())
    assert "ragged" not in untrimmed and "shipway_trim" not in untrimmed
    decided = render_config("m", ENCODER, "python", ServingOptions(), None, None, '{"a": "b"}')
    assert decided.splitlines()[-1] == (
        'parameters { key: "shipway_trim_decision" value: { string_value: "{\\"a\\": \\"b\\"}" } }'
    )


def test_packaging_trims_by_the_named_mask_and_copies_the_arithmetic(tmp_path: Path) -> None:
    onnx_bytes = tiny_encoder("input_mask")
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    signature = read_signature(load_model(onnx_bytes))
    rows = padding_sample()
    sample = {"input_ids": rows["input_ids"], "input_mask": rows["attention_mask"]}
    for name, mask, trimmed in (
        ("named", "input_mask", True),
        ("default", "attention_mask", False),
    ):
        folder = package_repository(
            tmp_path / "repo", name, tmp_path / "m.onnx", signature, Target.ONNXRUNTIME_CPU,
            mask_input=mask, sample=sample,
        )  # fmt: skip
        assert ('key: "shipway_trim"' in (folder / "config.pbtxt").read_text()) is trimmed
        copied = folder / "1" / "shipway_padding.py"
        if trimmed:
            assert copied.read_bytes() == Path(padding.__file__).read_bytes()
        else:  # any other model is packaged as before
            assert sorted(p.name for p in (folder / "1").iterdir()) == [
                "model.onnx",
                "model.py",
                "shipway_served.py",  # what the Python-backend models share, trimmed or not
            ]


# ---- registration tags ---------------------------------------------------------------


def test_the_mask_input_tag() -> None:
    inputs = ["input_ids", "input_mask"]
    assert mask_input({}, inputs) == "attention_mask"  # untagged: the usual name
    assert mask_input({"shipway.mask_input": "input_mask"}, inputs) == "input_mask"
    assert mask_input({"shipway.mask_input": "none"}, inputs) is None
    with pytest.raises(InvalidInput, match=r"names no input of the model \('mask'\); inputs"):
        mask_input({"shipway.mask_input": "mask"}, inputs)


def test_the_trim_padding_tag() -> None:
    assert trims_padding({}) is True
    assert trims_padding({"shipway.trim_padding": "True"}) is True
    assert trims_padding({"shipway.trim_padding": "false"}) is False
    # SHIPWAY_SERVING_TRIM_PADDING=false is a kill switch: no tag turns trimming on
    assert trims_padding({}, enabled=False) is False
    assert trims_padding({"shipway.trim_padding": "true"}, enabled=False) is False
    with pytest.raises(InvalidInput, match="must be true or false, got 'yes'"):
        trims_padding({"shipway.trim_padding": "yes"}, enabled=False)
    with pytest.raises(InvalidInput, match="must be true or false, got 'no'"):
        trims_padding({"shipway.trim_padding": "no"})


def test_a_bool_mask_and_fixed_sizes_on_axis_1_still_trim() -> None:
    signature = Signature(
        (
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "bool", ("batch", "seq")),
            TensorSpec("features", "float32", ("batch", 4)),
        ),
        (TensorSpec("hidden", "float32", ("batch", "seq", 8)), ENCODER.outputs[1]),
    )
    plan = trim_plan(signature, "attention_mask", ServingOptions())
    assert plan is not None
    assert plan.sequence_inputs == ("input_ids", "attention_mask")
    assert plan.token_outputs == ("hidden",)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (TensorSpec("m", "float32", ("batch", "seq")), "has dtype float32"),
        (TensorSpec("m", "int64", ("batch", "seq", "seq")), r"has shape \['batch', 'seq', 'seq'\]"),
    ],
)
def test_registration_refuses_a_mask_tag_naming_no_integer_batch_by_seq_input(
    spec: TensorSpec, problem: str
) -> None:
    signature = Signature((TensorSpec("ids", "int64", ("batch", "seq")), spec), ENCODER.outputs)
    with pytest.raises(InvalidInput, match=f"input 'm', which {problem}; a mask input must be"):
        check_mask_tag(signature, {"shipway.mask_input": "m"})
    check_mask_tag(signature, {})  # untagged: the default name is not checked
    check_mask_tag(signature, {"shipway.mask_input": "ids"})  # int64 [batch, seq]: fine


def test_outputs_the_signature_leaves_free_are_probed_on_the_sample(tmp_path: Path) -> None:
    """A free axis 1 that keeps its size at two lengths is fixed (MiniLM's pooled
    ``Concat461_dim_1``); one that follows the length is not, and the model stays
    untouched: its answers could not be re-padded."""
    (tmp_path / "m.onnx").write_bytes(tiny_encoder())
    read = read_signature(load_model(tiny_encoder()))
    hidden, pooled = read.outputs
    signature = Signature(
        read.inputs,
        (
            TensorSpec(hidden.name, hidden.dtype, ("batch", "seq_out", 8)),
            TensorSpec(pooled.name, pooled.dtype, ("batch", None)),
        ),
    )
    sample = padding_sample()
    fixed = probe_fixed_outputs(tmp_path / "m.onnx", signature, "attention_mask", sample)
    assert fixed == {"pooled": 8}  # last_hidden_state follows the length
    assert trim_plan(signature, "attention_mask", ServingOptions(), "python", fixed) is None
    named = Signature(read.inputs, (hidden, signature.outputs[1]))
    assert trim_plan(named, "attention_mask", ServingOptions()) is None  # not probed
    fixed = probe_fixed_outputs(tmp_path / "m.onnx", named, "attention_mask", sample)
    plan = trim_plan(named, "attention_mask", ServingOptions(), "python", fixed)
    assert plan is not None and plan.token_outputs == ("last_hidden_state",)
    folder = package_repository(
        tmp_path / "repo", "m", tmp_path / "m.onnx", named, Target.ONNXRUNTIME_CPU,
        sample=sample,
    )  # fmt: skip
    assert 'key: "shipway_trim"' in (folder / "config.pbtxt").read_text()
    # no sample: nothing to probe with, nothing trusted
    assert probe_fixed_outputs(tmp_path / "m.onnx", named, "attention_mask", None) == {}


def padding_sample() -> dict[str, np.ndarray]:
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


def test_the_shadow_token_outputs_are_those_on_the_masks_seq() -> None:
    assert token_outputs(ENCODER, "attention_mask") == ("last_hidden_state",)
    assert token_outputs(ENCODER, None) == ()
    per_tensor = Signature(
        (TensorSpec("ids", "int64", ("batch", "s1")), TensorSpec("m", "int64", ("batch", "s2"))),
        (
            TensorSpec("h", "float32", ("batch", "s1", 4)),
            TensorSpec("g", "float32", ("batch", "s2")),
        ),
    )
    assert token_outputs(per_tensor, "m") == ("g",)


def test_the_bucket_setting_is_checked_as_the_served_model_checks_it() -> None:
    with pytest.raises(ValidationError, match="SHIPWAY_SERVING_LENGTH_BUCKETS: length buckets"):
        Settings(serving_length_buckets=[32, 16])
    assert Settings(serving_length_buckets=[8, 24]).serving_length_buckets == [8, 24]


# ---- the equivalence check: trimmed only where the engine answers as padded ------------


def _mean_pool(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A padding-blind stand-in engine: token states from the ids alone, pooled over the
    mask; a trimmed run answers exactly as a padded one."""
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    states = np.stack([ids, ids * 2.0], axis=-1).astype(np.float32)
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return {"hidden": states, "pooled": pooled, "count": mask.sum(1)}


def _whole_tensor_scale(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As ``_mean_pool``, but states are rounded on a grid set by the whole tensor's
    range, padding positions (their states are the pad id's plus a position term)
    included: the way ``DynamicQuantizeLinear`` picks its scale."""
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    positions = np.arange(ids.shape[1])[None, :] * 0.37
    raw = (ids + positions).astype(np.float32)
    scale = (raw.max() - raw.min()) / 255 or 1.0  # one value: any grid holds it
    states = (np.round(raw / scale) * scale)[..., None]
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return {"hidden": states, "pooled": pooled.astype(np.float32)}


def _batch_scale(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Padding zeroed before the scale is taken (so trimming a batch changes nothing),
    but the scale spans every row of the batch: a row's answer depends on the rows it
    is stacked with, which an untrimmed model (each request run alone) never sees."""
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    raw = (ids * mask).astype(np.float32)
    scale = np.abs(raw).max() / 7 or 1.0
    states = (np.round(raw / scale) * scale)[..., None]
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return {"hidden": states, "pooled": pooled.astype(np.float32)}


def _rounded(relative: float) -> trim_check.Run:
    """``_mean_pool`` answered as an FP16 engine answers (rounded to float16, returned as
    float32: ``keep_io_types``), moved by ``relative`` when the run is not padded to an
    even length, as a length-dependent reduction order moves an FP16 engine's answer."""

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = _mean_pool(feeds)
        factor = 1 + relative * (feeds["input_ids"].shape[1] % 2)
        return {
            "hidden": out["hidden"].astype(np.float16).astype(np.float32),
            "pooled": (out["pooled"] * factor).astype(np.float16).astype(np.float32),
        }

    return run


def _rows(lengths: list[int], sent: int) -> dict[str, np.ndarray]:
    ids = np.zeros((len(lengths), sent), np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) * (row + 3)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


def _check(
    run: trim_check.Run, sample: dict[str, np.ndarray], precision: str = "float32"
) -> trim_check.TrimCheck:
    return trim_check.check(
        run,
        sample,
        "attention_mask",
        ("input_ids", "attention_mask"),
        ("hidden",),
        4,
        precision=precision,
    )


def test_an_engine_blind_to_padding_agrees_trimmed_in_every_arrangement() -> None:
    found = _check(_mean_pool, _rows([3, 7, 12, 5, 1, 9], 12))
    assert found.agrees and found.problem is None and found.differs == ()
    assert found.rows == 6 and found.lengths == (12, 16)  # as sent, and the next bucket
    # at 12: each row alone (five of six are padded), batches of 4 and 2 (only the
    # second shorter than 12); at 16: each row alone again, and the batch of 4, the
    # only one with nothing to trim at 12 (the batch of 2 was compared at 12)
    assert found.runs == 5 + 1 + 6 + 1
    # the batched rows against the same rows alone: 2 at 12, 4 at 16
    assert found.stacked == 2 + 4
    # positions run, padded + trimmed: at 12, alone 6*12 + 25, batches 4*12 + 2*12 + 2*9;
    # at 16, alone 6*16 + 37, the batch of 4: 4*16 + 4*12
    assert found.tokens == (72 + 25 + 48 + 24 + 18) + (96 + 37 + 64 + 48)
    assert found.max_abs_diff == {"hidden": 0.0, "pooled": 0.0}
    # integers are compared exactly: no difference recorded, and they agreed
    assert "count" not in found.max_abs_diff and "count" not in found.differs
    assert found.to_dict()["tolerance"] == {
        "rtol": 1e-4,
        "atol": 1e-4,
        "precision": "float32",
        "ulps": 4,
    }
    assert found.to_dict()["max_tokens"] == trim_check.MAX_TOKENS
    # integers that differ are a difference (no size to it)

    def counts_positions(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = feeds["input_ids"]
        return _mean_pool(feeds) | {"count": np.full(len(ids), ids.shape[1], np.int64)}

    miscounted = _check(counts_positions, _rows([3, 7], 8))
    assert miscounted.differs == ("count",) and "count" not in miscounted.max_abs_diff


def test_an_engine_whose_scale_spans_the_padding_differs_and_says_where() -> None:
    found = _check(_whole_tensor_scale, _rows([3, 7, 12, 5, 1, 9], 12))
    assert not found.agrees and found.problem is None
    assert set(found.differs) == {"hidden", "pooled"}
    assert found.max_abs_diff["pooled"] > trim_check.ATOL


def test_a_row_answered_differently_stacked_than_alone_differs() -> None:
    # each arrangement agrees with itself trimmed (the scale ignores padding) ...
    sample = _rows([3, 7, 12, 5, 1, 9], 12)
    for index in trim_check.arrangements(6, 4):
        feeds = {k: v[index] for k, v in sample.items()}
        cut = {
            k: v[:, : int(padding.real_lengths(feeds["attention_mask"]).max())]
            for k, v in feeds.items()
        }
        padded, trimmed = _batch_scale(feeds), _batch_scale(cut)
        assert np.array_equal(padded["pooled"], trimmed["pooled"])
    # ... but row 0 stacked with row 2 is not row 0 alone: trimming would change it
    found = _check(_batch_scale, sample)
    assert not found.agrees and found.stacked > 0
    assert "pooled" in found.differs and found.max_abs_diff["pooled"] > 1.0


def test_the_tolerance_follows_the_engines_precision() -> None:
    sample = _rows([3, 7, 12, 5, 1, 9], 12)  # sent at 12, next bucket 16: both even
    odd = {k: padding.fit(v, 13) for k, v in sample.items()}  # padded runs at 13 (odd)
    # within one fp16 ulp of the output's magnitude (3e-4 relative): rounding noise
    assert _check(_rounded(3e-4), odd, "float16").agrees
    noise = _check(_rounded(3e-4), odd)
    assert not noise.agrees and noise.differs == ("pooled",)  # an FP32 engine: beyond 1e-4
    assert noise.max_abs_diff["pooled"] > trim_check.ATOL
    # an int8-dynamic-sized movement (2e-2, ~20 fp16 ulps) is refused even at float16
    moved = _check(_rounded(2e-2), odd, "float16")
    assert not moved.agrees and moved.differs == ("pooled",)
    assert moved.to_dict()["tolerance"]["precision"] == "float16"
    # atol: the floor for float32; ULPS fp16 ulps of the largest magnitude for float16,
    # and for a float16 output whatever the engine's precision
    big = np.array([[-50.0, 2.0]], np.float32)
    assert trim_check.Tolerance().atol(big) == trim_check.ATOL
    assert trim_check.Tolerance("float16").atol(big) == 4 * 2.0**-10 * 50
    assert trim_check.Tolerance().atol(big.astype(np.float16)) == 4 * 2.0**-10 * 50
    assert trim_check.Tolerance("float16").atol(np.zeros((1, 2))) == trim_check.ATOL
    assert "float16 ulps" in trim_check.Tolerance("float16").describe()
    assert trim_check.Tolerance().describe() == "rtol 0.0001, atol 0.0001"
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        trim_check.Tolerance("int8")


def test_an_engines_precision_is_read_from_its_graph(tmp_path: Path) -> None:
    from shipway.engines import quantize

    (tmp_path / "m.onnx").write_bytes(tiny_encoder())
    quantize.fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx")
    assert engine_precision(onnx.load(str(tmp_path / "m.onnx")).graph) == "float32"
    assert engine_precision(onnx.load(str(tmp_path / "m16.onnx")).graph) == "float16"
    assert engine_precision(None) == "float32"


def test_the_check_caps_the_rows_by_tokens() -> None:
    found = _check(_mean_pool, _rows([3, 5] * 20, 1024))
    assert found.agrees and found.sample_rows == 40
    assert found.rows == trim_check.MAX_TOKENS // 1024 == 4
    assert found.to_dict()["rows"] == 4 and found.to_dict()["sample_rows"] == 40
    assert _check(_mean_pool, _rows([3, 5] * 20, 24)).rows == trim_check.MAX_ROWS


def test_token_outputs_are_compared_within_the_mask_and_integers_exactly() -> None:
    mask = np.array([[1, 1, 0]])
    padded = {"hidden": np.array([[[1.0], [2.0], [9.0]]]), "ids": np.array([[4, 5, 6]])}
    trimmed = {"hidden": np.array([[[1.0], [2.0]]]), "ids": np.array([[4, 5, 7]])}
    found = trim_check.differences(padded, trimmed, mask, ("hidden",))
    assert found == {"hidden": (0.0, True), "ids": (None, False)}
    # a NaN where the padded run has a number is a difference, whatever the tolerance
    nan = {"hidden": np.array([[[1.0], [np.nan]]])}
    assert trim_check.differences(padded, nan, mask, ("hidden",))["hidden"][1] is False
    # an output the trimmed run lacks, or of another shape, differs
    assert trim_check.differences({"p": np.ones((1, 2))}, {}, mask, ())["p"] == (None, False)
    got = trim_check.differences({"p": np.ones((1, 2))}, {"p": np.ones((1, 3))}, mask, ())
    assert got["p"] == (None, False)
    # a token output with fewer rows than the mask is not broadcast into agreeing
    mask3 = np.array([[1, 1, 0]] * 3)
    same_rows = {"hidden": np.tile(np.array([[[1.0], [2.0], [0.0]]]), (3, 1, 1))}
    one_row = {"hidden": np.array([[[1.0], [2.0]]])}
    assert padding.restore(one_row["hidden"], mask3).shape == (3, 3, 1)  # it would
    assert trim_check.differences(same_rows, one_row, mask3, ("hidden",)) == {
        "hidden": (None, False)
    }
    wide = {"hidden": np.ones((3, 2, 2))}
    assert trim_check.differences(same_rows, wide, mask3, ("hidden",))["hidden"] == (None, False)


def test_the_check_decides_nothing_without_evidence() -> None:
    # no padding in the sample and the engine cannot run a longer row: nothing checked
    def short(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds["input_ids"].shape[1] > 6:
            raise ValueError("positions past 6")
        return _mean_pool(feeds)

    found = _check(short, _rows([6, 6], 6))
    assert not found.agrees and found.runs == 0 and found.lengths == (6,)
    assert found.problem and "no padding to trim" in found.problem
    # no padding in the sample: padded further, it is checked all the same
    assert _check(_mean_pool, _rows([6, 6], 6)).agrees
    # rows without a real position are left out; none left: no decision
    found = _check(_mean_pool, {k: v * 0 for k, v in _rows([2, 3], 4).items()})
    assert found.problem == "the reference sample has no row with a real position"

    # the trimmed run fails: said, and no decision
    def fails_short(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds["input_ids"].shape[1] < 4:
            raise ValueError("too short")
        return _mean_pool(feeds)

    found = _check(fails_short, _rows([2, 3], 6))
    assert not found.agrees and found.problem
    # row 0 alone (2 real of 6) is the first trimmed run
    assert found.problem.startswith("the engine failed on the sample trimmed to 2: too short")


def test_arrangements_are_batches_then_rows_alone() -> None:
    got = [a.tolist() for a in trim_check.arrangements(5, 2)]
    assert got == [[0], [1], [2], [3], [4], [0, 1], [2, 3]]  # [4] alone once
    assert [a.tolist() for a in trim_check.arrangements(2, 1)] == [[0], [1]]
    assert len(trim_check.arrangements(40, 8)) == 5 + trim_check.MAX_ALONE
    # past MAX_ALONE, a 1-row batch is still run (it is no duplicate)
    assert [a.tolist() for a in trim_check.arrangements(18, 1)][16:] == [[16], [17]]


def test_packaging_decides_per_engine_and_records_why(tmp_path: Path) -> None:
    onnx_bytes = tiny_encoder()
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    signature = read_signature(load_model(onnx_bytes))
    sample = padding_sample()

    def decide(**changes: object) -> TrimDecision:
        args: dict[str, object] = {
            "engine_path": tmp_path / "m.onnx",
            "signature": signature,
            "backend": "python",
            "options": ServingOptions(),
            "sample": sample,
            "mask_input": "attention_mask",
        } | changes
        return trim_decision(**args)  # type: ignore[arg-type]

    trimmed = decide()
    assert trimmed.trim and trimmed.plan is not None and trimmed.check is not None
    assert decide(backend="onnxruntime").plan == trimmed.plan  # the official image's too
    clash = Signature(
        signature.inputs,
        (
            *signature.outputs,
            TensorSpec("shipway__x", "float32", (signature.outputs[0].shape[0], 2)),
        ),
    )
    refused = decide(backend="onnxruntime", signature=clash)
    assert not refused.trim and "named like the trimming ensemble's own" in refused.reason
    assert trimmed.reason.startswith("the engine answers the 2 reference rows trimmed as padded")
    assert trimmed.to_dict()["check"]["differs"] == []
    for changes, reason in (
        ({"sample": None}, "no reference sample to check that trimming keeps the answers"),
        ({"sample": {"input_ids": sample["input_ids"]}}, "the reference sample has no input "),
        ({"mask_input": None}, "no mask input (tagged none)"),
        ({"mask_input": "mask"}, "no mask input (the model has no input 'mask')"),
        ({"backend": "tensorrt"}, "the 'tensorrt' engine is not what the check runs"),
        ({"options": ServingOptions(max_batch_size=0)}, "the model is served without batching"),
        ({"options": ServingOptions(trim_padding=False)}, "trimming is switched off"),
    ):
        decision = decide(**changes)
        assert not decision.trim and decision.reason.startswith(reason), decision.reason
    off = decide(options=ServingOptions(trim_padding=False), off_reason=trim_off_reason({}, False))
    assert off.to_dict() == {
        "trim_padding": False,
        "reason": "SHIPWAY_SERVING_TRIM_PADDING=false: no build trims (the kill switch)",
    }
    # the packaged config carries the decision (the Python backend's), trimmed or not
    for name, decision in (("trimmed", trimmed), ("off", off)):
        folder = package_repository(
            tmp_path / "repo", name, tmp_path / "m.onnx", signature, Target.ONNXRUNTIME_CPU,
            sample=sample, decision=decision,
        )  # fmt: skip
        text = (folder / "config.pbtxt").read_text()
        line = next(x for x in text.splitlines() if "shipway_trim_decision" in x)
        encoded = line.split("string_value: ", 1)[1].removesuffix(" } }")
        assert json.loads(json.loads(encoded)) == {
            "trim_padding": decision.trim,
            "reason": decision.reason,
        }
        assert ('key: "shipway_trim"' in text) is decision.trim
    # an error inside the check is a reason not to trim, never a failed build (here a
    # sample whose inputs disagree on their rows: indexing the second row fails)
    broken = decide(
        sample={"input_ids": sample["input_ids"][:1], "attention_mask": sample["attention_mask"]}
    )
    assert not broken.trim and broken.check is None
    assert broken.reason.startswith("trimming could not be checked: index 1 is out of bounds")
    assert trimmed.check.seconds is not None and trimmed.check.seconds >= 0
    assert "seconds" in trimmed.to_dict()["check"]
    # made by package_repository itself when not given: without a sample, untrimmed
    folder = package_repository(
        tmp_path / "repo", "plain", tmp_path / "m.onnx", signature, Target.ONNXRUNTIME_CPU
    )
    assert 'key: "shipway_trim"' not in (folder / "config.pbtxt").read_text()
    assert "no reference sample" in (folder / "config.pbtxt").read_text()


def test_the_trim_off_reason_names_the_switch_or_the_tag() -> None:
    assert trim_off_reason({}) is None
    assert trim_off_reason({"shipway.trim_padding": "true"}) is None
    assert "kill switch" in (trim_off_reason({"shipway.trim_padding": "true"}, False) or "")
    assert trim_off_reason({"shipway.trim_padding": "false"}) == (
        "the version's tag shipway.trim_padding=false opts it out"
    )
