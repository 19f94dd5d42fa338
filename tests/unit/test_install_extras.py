"""What each install brings: the operator image (`shipway[operator]`) carries none of the
control plane's heavy parts. Checked on the installed distributions' own metadata, so a
new transitive dependency (kopf or the Kubernetes client pulling in FastAPI, say) fails
here, not in a 2 GB image."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
CONTROL_PLANE_ONLY = {"fastapi", "celery", "mlflow", "sqlalchemy", "onnxruntime", "alembic"}


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def _applies(requirement: Requirement) -> bool:
    """On this interpreter, and not only with an extra (pip does not follow those)."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements install, following installed metadata."""
    seen: set[str] = set()
    todo = [_name(Requirement(r)) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is required but not installed: run `make setup`")
        todo += [_name(r) for r in map(Requirement, requires) if _applies(r)]
    return seen


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_operator_install_has_no_control_plane_parts() -> None:
    project = _project()
    installed = _closure(project["dependencies"] + project["optional-dependencies"]["operator"])
    assert {"kopf", "kubernetes"} <= installed
    assert not installed & CONTROL_PLANE_ONLY, sorted(installed & CONTROL_PLANE_ONLY)


def test_server_extra_brings_the_control_plane() -> None:
    """The check above can fail: the same walk over `server` finds them all."""
    project = _project()
    installed = _closure(project["dependencies"] + project["optional-dependencies"]["server"])
    assert installed >= CONTROL_PLANE_ONLY
