from __future__ import annotations

from typing import Any

import pytest

from shipway_operator.manifests import Context, Owner
from shipway_operator.spec import parse_spec

OWNER = Owner("minilm", "models", "0f6c3c4e-1111-2222-3333-444455556666")
FETCH_IMAGE = "registry.test/shipway-operator:1"


def base_spec(**changes: Any) -> dict[str, Any]:
    """A small valid spec (http archive, fixed replicas); ``changes`` replace keys."""
    spec: dict[str, Any] = {
        "model": {"name": "minilm", "version": "3"},
        "build": {"id": "b-1", "modelRepository": "https://files.test/minilm/b-1.tar.gz"},
        "replicas": 2,
    }
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def context(**changes: Any) -> Context:
    return Context(OWNER, parse_spec(base_spec(**changes)), FETCH_IMAGE)


@pytest.fixture
def ctx() -> Context:
    return context()
