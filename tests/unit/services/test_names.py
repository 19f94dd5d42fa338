"""Names end up in URLs and Kubernetes object names: DNS-label-like, nothing around."""

from __future__ import annotations

import pytest

from shipway.errors import InvalidInput
from shipway.services.models import check_name


@pytest.mark.parametrize("name", ["a", "minilm-l3", "m" * 63, "0x"])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "m" * 64, "abc\n", "a b"])
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidInput, match="lower-case letters, digits and '-'"):
        check_name(name)
