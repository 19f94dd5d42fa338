"""The trimming ensemble's configs (``shipway.builds.ensemble``): its wiring, read back
from the text. Real Triton loads and runs them in
``tests/integration/test_trim_ensemble.py``."""

from __future__ import annotations

import json
import re

import pytest

from shipway.builds.ensemble import render_ensemble
from shipway.builds.triton_config import ServingOptions, TrimPlan
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("features", "float32", ("batch", 4)),  # no sequence axis
        TensorSpec("attention_mask", "int32", ("batch", "seq")),
    ),
    outputs=(
        TensorSpec("last_hidden_state", "float32", ("batch", "seq", 8)),
        TensorSpec("logits", "float32", ("batch", 3)),
    ),
)
PLAN = TrimPlan("attention_mask", ("input_ids", "attention_mask"), ("last_hidden_state",), (16, 64))


def maps(text: str, model: str, kind: str) -> dict[str, str]:
    """The ``input_map``/``output_map`` of ``model``'s step in an ensemble config."""
    step = text.split(f'model_name: "{model}"', 1)[1].split("\n  }", 1)[0]
    return dict(re.findall(kind + r' \{ key: "([^"]+)" value: "([^"]+)" \}', step))


def test_sequence_inputs_go_through_the_trim_step_and_the_rest_straight_to_the_engine() -> None:
    layout = render_ensemble("m", SIGNATURE, PLAN, ServingOptions(max_batch_size=4), 64)
    assert layout.engine == "m__engine" and layout.steps == ("m__trim", "m__restore")
    text = layout.configs["m"]
    assert 'platform: "ensemble"' in text and "max_batch_size: 4" in text
    # the mask is SEQ_0, so the step knows which input to measure
    assert maps(text, "m__trim", "input_map") == {"SEQ_0": "attention_mask", "SEQ_1": "input_ids"}
    engine_in = maps(text, "m__engine", "input_map")
    assert engine_in == {
        "input_ids": "shipway__fit_1",
        "features": "features",
        "attention_mask": "shipway__fit_0",
    }
    engine_out = maps(text, "m__engine", "output_map")
    assert engine_out == {"last_hidden_state": "shipway__trimmed_0", "logits": "logits"}
    assert maps(text, "m__restore", "input_map") == {
        "TRIMMED_0": "shipway__trimmed_0",
        "MASK": "attention_mask",  # the request's own mask, as sent
    }
    assert maps(text, "m__restore", "output_map") == {"RESTORED_0": "last_hidden_state"}


def test_the_steps_take_ragged_inputs_in_their_own_dtypes() -> None:
    layout = render_ensemble("m", SIGNATURE, PLAN, ServingOptions(), 64)
    trim = layout.configs["m__trim"]
    assert '{ name: "SEQ_0" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true }' in trim
    assert '{ name: "FIT_1" data_type: TYPE_INT64 dims: [ -1 ] }' in trim
    line = next(x for x in trim.splitlines() if "shipway_step" in x)
    encoded = line.split("string_value: ", 1)[1].removesuffix(" } }")
    assert json.loads(json.loads(encoded)) == {
        "role": "trim",
        "mask": "attention_mask",
        "sequence": ["attention_mask", "input_ids"],
        "buckets": [16, 64],
        "checked_length": 64,
    }
    restore = layout.configs["m__restore"]
    assert '{ name: "TRIMMED_0" data_type: TYPE_FP32 dims: [ -1, 8 ] allow_ragged_batch' in restore


def test_no_token_outputs_no_restore_step() -> None:
    plan = TrimPlan("attention_mask", ("input_ids", "attention_mask"), (), (16,))
    layout = render_ensemble("m", SIGNATURE, plan, ServingOptions(), 64)
    assert layout.steps == ("m__trim",) and "m__restore" not in layout.configs
    assert maps(layout.configs["m"], "m__engine", "output_map") == {
        "last_hidden_state": "last_hidden_state",
        "logits": "logits",
    }


def test_a_tensor_named_like_the_ensembles_own_is_refused() -> None:
    clash = TensorSpec("shipway__fit_0", "float32", ("batch", 2))
    signature = Signature(SIGNATURE.inputs, (*SIGNATURE.outputs, clash))
    with pytest.raises(InvalidInput, match=r"start with 'shipway__'.*shipway\.trim_padding=false"):
        render_ensemble("m", signature, PLAN, ServingOptions(), 64)
