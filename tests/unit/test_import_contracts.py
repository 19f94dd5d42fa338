"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold: the rollout
and drift engines and the operator import none of the control plane's parts (FastAPI,
Celery, MLflow, SQLAlchemy, ONNX Runtime, the store, the services...), so the operator
image can run them; the GitOps domain logic (``shipway.gitops``' spec, plan, signature
checks and push parsing) does no I/O. Checked with import-linter on the source as it is,
and, so each check is known to see imports at all, the same contract on a module that
does import what it forbids must break."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
CONTRACT = "engines-and-operator-light"
GITOPS_CONTRACTS = ("gitops-hooks-pure", "gitops-spec-plan-pure")


def _lint(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = lint_imports(config_filenames=(str(config),), no_cache=True, no_logo=True)
    return code, capsys.readouterr().out


def test_the_engines_and_the_operator_import_no_control_plane_part(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = _lint(PYPROJECT, capsys)
    assert code == 0, report
    assert "3 kept, 0 broken" in report, report


def test_the_same_contract_breaks_where_the_control_plane_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract's own forbidden list, applied to a package that uses SQLAlchemy."""
    code, report = _lint(_with_source(CONTRACT, "shipway.services", tmp_path), capsys)
    assert code == 1, report
    assert "shipway.services" in report and "sqlalchemy" in report, report


@pytest.mark.parametrize("contract", GITOPS_CONTRACTS)
def test_the_gitops_contracts_break_on_an_adapter(
    contract: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Applied to the git adapter (``subprocess``, ``fcntl``, the services), each GitOps
    contract breaks: it sees direct imports of what it forbids."""
    config = _with_source(contract, "shipway.services.git_source", tmp_path)
    code, report = _lint(config, capsys)
    assert code == 1, report
    assert "shipway.services.git_source -> subprocess" in report, report


def _with_source(contract_id: str, source: str, tmp_path: Path) -> Path:
    """A pyproject.toml holding only ``contract_id``, with ``source`` as its source."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == contract_id]
    broken = {**contract, "source_modules": [source]}
    lines = [
        "[tool.importlinter]",
        f"root_packages = {json.dumps(config['root_packages'])}",
        "include_external_packages = true",
        "[[tool.importlinter.contracts]]",
        *(f"{key} = {json.dumps(value)}" for key, value in broken.items()),
    ]
    path = tmp_path / "pyproject.toml"
    path.write_text("\n".join(lines) + "\n")  # JSON's strings, lists and booleans are TOML
    return path
