"""The CI templates and Argo CD manifests under pipelines/: they parse, name what they
must, and the CI ones run pipelines/ci/release.sh, whose input checks are tested here
(no service: a missing input stops it before the CLI is called)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipway_operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[3]
PIPELINES = REPO / "pipelines"
RELEASE = PIPELINES / "ci" / "release.sh"
HEALTH_KEY = "resource.customizations.health.shipway.io_ModelDeployment"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _commands(step_or_job: dict[str, Any]) -> list[str]:
    run = step_or_job.get("run") or step_or_job.get("script") or []
    return [run] if isinstance(run, str) else list(run)


def test_the_github_workflow_runs_release_sh_on_a_tag_in_both_flavours() -> None:
    workflow = _load(PIPELINES / "github-actions" / "release.yaml")
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on"
    trigger = workflow.get("on", workflow.get(True))
    assert trigger == {"push": {"tags": ["v*"]}}
    steps = workflow["jobs"]["release"]["steps"]
    releasing = [s for s in steps if "release.sh" in " ".join(_commands(s))]
    assert [s["run"] for s in releasing] == ["bash pipelines/ci/release.sh"] * 2
    spec_step, cli_step = releasing
    assert spec_step["env"] == {"SHIPWAY_SPEC": "shipway.yaml"}
    assert spec_step["if"] == "hashFiles('shipway.yaml') != ''"
    assert cli_step["if"] == "hashFiles('shipway.yaml') == ''"
    assert {"SHIPWAY_MODEL", "SHIPWAY_ONNX", "SHIPWAY_SAMPLE", "SHIPWAY_DEPLOYMENT"} <= set(
        cli_step["env"]
    )
    job_env = workflow["jobs"]["release"]["env"]
    assert job_env["SHIPWAY_TOKEN"] == "${{ secrets.SHIPWAY_TOKEN }}"  # a secret, not a var
    assert job_env["SHIPWAY_API_URL"] == "${{ vars.SHIPWAY_API_URL }}"


def test_the_gitlab_template_runs_release_sh_on_a_tag_in_both_flavours() -> None:
    template = _load(PIPELINES / "gitlab-ci" / "release.gitlab-ci.yml")
    jobs = {name: job for name, job in template.items() if name.startswith("shipway-")}
    assert set(jobs) == {"shipway-release", "shipway-apply"}
    for job in jobs.values():
        assert job["extends"] == ".shipway"
        assert _commands(job) == ["bash pipelines/ci/release.sh"]
        assert {"if": "$CI_COMMIT_TAG == null", "when": "never"} in job["rules"]
    assert jobs["shipway-apply"]["variables"] == {"SHIPWAY_SPEC": "shipway.yaml"}
    assert {"exists": ["shipway.yaml"], "when": "never"} in jobs["shipway-release"]["rules"]
    assert template[".shipway"]["stage"] in template["stages"]


def test_the_argocd_application_syncs_the_models_folder_with_prune_and_self_heal() -> None:
    app = _load(PIPELINES / "argocd" / "application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["spec"]["source"]["path"] == "pipelines/argocd/models"
    assert (PIPELINES / "argocd" / "models").is_dir()
    automated = app["spec"]["syncPolicy"]["automated"]
    assert automated == {"prune": True, "selfHeal": True}
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_the_argocd_cm_patch_carries_the_health_check_verbatim() -> None:
    patch = _load(PIPELINES / "argocd" / "argocd-cm-patch.yaml")
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert patch["metadata"]["namespace"] == "argocd"
    assert list(patch["data"]) == [HEALTH_KEY]  # group shipway.io, kind ModelDeployment
    script = (PIPELINES / "argocd" / "modeldeployment-health.lua").read_text()
    assert patch["data"][HEALTH_KEY] == script


def test_the_model_deployments_in_git_are_valid_for_the_operator() -> None:
    found = sorted((PIPELINES / "argocd" / "models").glob("*.yaml"))
    assert found
    for path in found:
        body = _load(path)
        assert (body["apiVersion"], body["kind"]) == ("shipway.io/v1alpha1", "ModelDeployment")
        parse_spec(body["spec"])  # the operator's own parser; raises on what it refuses


def _release(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        ["bash", str(RELEASE)],
        env=base | env,  # env's PATH, if any, wins
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _full(tmp_path: Path) -> dict[str, str]:
    onnx, sample = tmp_path / "model.onnx", tmp_path / "sample.npz"
    onnx.write_bytes(b"onnx")
    sample.write_bytes(b"npz")
    return {
        "SHIPWAY_API_URL": "http://127.0.0.1:9",
        "SHIPWAY_TOKEN": "t",
        "SHIPWAY_MODEL": "m",
        "SHIPWAY_ONNX": str(onnx),
        "SHIPWAY_SAMPLE": str(sample),
        "SHIPWAY_DEPLOYMENT": "m",
        # the CLI must not be reached: a missing input stops the script before it
        "SHIPWAY_CLI": "false",
    }


@pytest.mark.parametrize(
    "missing",
    [
        "SHIPWAY_API_URL",
        "SHIPWAY_TOKEN",
        "SHIPWAY_MODEL",
        "SHIPWAY_ONNX",
        "SHIPWAY_SAMPLE",
        "SHIPWAY_DEPLOYMENT",
    ],
)
def test_release_sh_names_a_missing_input_and_exits_2(tmp_path: Path, missing: str) -> None:
    env = _full(tmp_path)
    del env[missing]
    done = _release(env)
    assert done.returncode == 2, done.stderr
    assert f"release: error: {missing} is not set" in done.stderr
    empty = _release(env | {missing: ""})  # an empty CI variable is as good as none
    assert empty.returncode == 2 and f"{missing} is not set" in empty.stderr


@pytest.mark.parametrize("name", ["SHIPWAY_ONNX", "SHIPWAY_SAMPLE", "SHIPWAY_CALIBRATION"])
def test_release_sh_names_a_file_that_is_not_there(tmp_path: Path, name: str) -> None:
    done = _release(_full(tmp_path) | {name: str(tmp_path / "nope.bin")})
    assert done.returncode == 2, done.stderr
    assert f"release: error: {name}: no file at {tmp_path / 'nope.bin'}" in done.stderr


def test_release_sh_with_a_spec_needs_only_the_api_and_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "shipway.yaml"
    env = {"SHIPWAY_API_URL": "http://127.0.0.1:9", "SHIPWAY_TOKEN": "t", "SHIPWAY_CLI": "echo"}
    missing = _release(env | {"SHIPWAY_SPEC": str(spec)})
    assert missing.returncode == 2 and "SHIPWAY_SPEC: no file at" in missing.stderr
    spec.write_text("kind: ModelRelease\n")
    done = _release(env | {"SHIPWAY_SPEC": str(spec)})
    # SHIPWAY_CLI=echo prints the command the script runs: apply, waiting
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["apply", "-f", str(spec), "--wait"]


def test_release_sh_refuses_an_unknown_runtime(tmp_path: Path) -> None:
    done = _release(_full(tmp_path) | {"SHIPWAY_RUNTIME": "swarm"})
    assert done.returncode == 2, done.stderr
    assert "SHIPWAY_RUNTIME must be local or kubernetes" in done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHIPWAY_POLL_SECONDS", "0"),
        ("SHIPWAY_POLL_SECONDS", "0.0"),
        ("SHIPWAY_POLL_SECONDS", "1e3"),
        ("SHIPWAY_ROLLOUT_START_SECONDS", "1.5"),
        ("SHIPWAY_ROLLOUT_START_SECONDS", "08"),  # octal to bash
        # bash arithmetic would run the command in a subscript: refused before any use
        ("SHIPWAY_ROLLOUT_START_SECONDS", "a[$(touch {marker})]"),
        ("SHIPWAY_POLL_SECONDS", "$(touch {marker})"),
    ],
)
def test_release_sh_checks_its_numbers_before_use(tmp_path: Path, name: str, value: str) -> None:
    marker = tmp_path / "INJECTED"
    done = _release(_full(tmp_path) | {name: value.format(marker=marker)})
    assert done.returncode == 2, done.stderr
    assert f"{name} must be " in done.stderr and "seconds" in done.stderr
    assert not marker.exists()


def test_release_sh_on_kubernetes_refuses_rollout_flags_it_would_ignore(tmp_path: Path) -> None:
    env = _full(tmp_path) | {"SHIPWAY_RUNTIME": "kubernetes", "SHIPWAY_ROLLOUT_ARGS": "--steps 5"}
    done = _release(env)
    assert done.returncode == 2, done.stderr
    assert "a rollout takes the ModelDeployment's spec.rollout" in done.stderr


def test_release_sh_names_an_api_it_cannot_reach_with_the_clis_message(tmp_path: Path) -> None:
    env = _full(tmp_path)
    del env["SHIPWAY_CLI"]  # the real CLI, on this interpreter's PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = _release(env)
    assert done.returncode == 1, done.stderr
    assert "cannot reach the Shipway API at http://127.0.0.1:9" in done.stderr
