"""The rule a shadow of a build is judged by, from the store's rows (no database)."""

from __future__ import annotations

from shipway.gateway.store_routes import agreement
from shipway.store.models import Build, ModelVersion

SIGNATURE = {
    "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
        {"name": "input_mask", "dtype": "int64", "shape": ["batch", "seq"]},
    ],
    "outputs": [{"name": "h", "dtype": "float32", "shape": ["batch", "seq", 8]}],
    "batch_dim": "batch",
}


def fp32_build(tags: dict[str, str]) -> Build:
    version = ModelVersion(name="m", version=1, signature=SIGNATURE, tags=tags)
    return Build(model_version=version, options={}, report=None)


def test_an_fp32_builds_shadow_pools_by_the_registered_mask() -> None:
    rule, _ = agreement(fp32_build({"shipway.mask_input": "input_mask"}))
    assert rule.mask_input == "input_mask"
    assert agreement(fp32_build({"shipway.mask_input": "none"}))[0].mask_input is None
    assert agreement(fp32_build({}))[0].mask_input == "attention_mask"  # untagged
    # a tag registration would have refused: the usual name, not a failed route table
    assert agreement(fp32_build({"shipway.mask_input": "gone"}))[0].mask_input == "attention_mask"


def test_the_shadow_rule_names_the_token_outputs_from_the_signature() -> None:
    """Also for a rule saved before the field: a trimmed candidate may shadow an
    untrimmed stable; a model left untouched by trimming has none."""
    tagged = {"shipway.mask_input": "input_mask"}
    assert agreement(fp32_build(tagged))[0].token_outputs == {"h"}
    saved = fp32_build(tagged)
    saved.report = {"accuracy": {"rule": {"min_cosine": 0.99, "mask_input": "input_mask"}}}
    assert agreement(saved)[0].token_outputs == {"h"}
    assert agreement(fp32_build({"shipway.mask_input": "none"}))[0].token_outputs == set()
