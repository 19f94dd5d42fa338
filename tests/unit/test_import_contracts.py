"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold: the rollout
and drift engines and the operator import none of the control plane's parts (FastAPI,
Celery, MLflow, SQLAlchemy, ONNX Runtime, the store, the services...), so the operator
image can run them. Checked with import-linter on the source as it is, and, so the
check is known to see imports at all, the same contract on a package that does import
SQLAlchemy (``shipway.services``) must break."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
CONTRACT = "engines-and-operator-light"


def _lint(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = lint_imports(config_filenames=(str(config),), no_cache=True, no_logo=True)
    return code, capsys.readouterr().out


def test_the_engines_and_the_operator_import_no_control_plane_part(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = _lint(PYPROJECT, capsys)
    assert code == 0, report
    assert "1 kept, 0 broken" in report, report


def test_the_same_contract_breaks_where_the_control_plane_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract's own forbidden list, applied to a package that uses SQLAlchemy."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == CONTRACT]
    broken = {**contract, "source_modules": ["shipway.services"]}
    lines = [
        "[tool.importlinter]",
        f"root_packages = {config['root_packages']!r}",
        "include_external_packages = true",
        "[[tool.importlinter.contracts]]",
        *(f"{key} = {value!r}" for key, value in broken.items()),
    ]
    path = tmp_path / "pyproject.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    code, report = _lint(path, capsys)
    assert code == 1, report
    assert "shipway.services" in report and "sqlalchemy" in report, report
