"""A build stored before an option existed matches a spec that leaves the option out:
otherwise an upgrade of Shipway would make the next apply rebuild every build."""

from __future__ import annotations

from pathlib import Path

from shipway.gitops.spec import parse
from shipway.services.gitops import _stored_options

EXAMPLE = Path(__file__).parents[3] / "pipelines" / "examples" / "shipway.yaml"


def test_options_stored_before_quantize_embeddings_match_the_spec() -> None:
    build = parse(EXAMPLE.read_text()).build("int8")
    wanted = build.options_dict()
    # what a build of the same options stored before quantize_embeddings existed holds
    stored = {k: v for k, v in wanted.items() if k != "quantize_embeddings"}
    assert stored != wanted
    assert _stored_options(stored) == wanted
    # a different option stays different
    assert _stored_options({**stored, "min_cosine": 0.5}) != wanted
    # options of a former version Shipway cannot read are kept as they are (unequal)
    assert _stored_options({"gone_option": 1}) == {"gone_option": 1}
    assert _stored_options(None) == _stored_options({})
