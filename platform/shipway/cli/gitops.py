"""``shipway apply -f shipway.yaml``: make the platform match a release spec.

The CLI reads the spec and the files it names (relative to the spec's directory) and
posts them; the server parses and validates the spec (its errors name field and line),
plans and carries the plan out. Here only the file paths are read from the YAML, so a
spec the CLI cannot make sense of is still sent, for the server to say what is wrong.
"""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
import yaml

from shipway.cli.client import ApiClient, ApiError
from shipway.cli.context import JsonOpt, run
from shipway.cli.output import console, emit_json, fail, table, warn

FILE_FIELDS = ("onnx", "sample", "calibration")
ROLLOUT_APPEARS_SECONDS = 120.0  # a rollout intent's rollout, once its build succeeded
DEPLOY_SECONDS = 600.0


def spec_files(text: str) -> dict[str, str]:
    """``model.<field>`` -> path for each file the spec names, as written; paths the
    server would refuse (absolute, '..') are left for it to name with their line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return {}
    found = {}
    for field in FILE_FIELDS:
        path = model.get(field)
        if (
            isinstance(path, str)
            and path
            and not PurePosixPath(path).is_absolute()
            and ".." not in PurePosixPath(path).parts
            and "\\" not in path
        ):
            found[f"model.{field}"] = path
    return found


def apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="The release spec (shipway.yaml)", dir_okay=False)
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan only; change nothing")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the builds with progress, then the deploy or rollout to its end and "
            "a scaling change until its replicas are ready; exit 1 when a build fails or "
            "the rollout is rolled back",
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Queue a build that failed again from the same inputs (a worker that "
            "died, say); without it a failed build is reported, not rebuilt",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Make the platform match a shipway.yaml: register the model version, queue its
    builds, deploy or roll out (once the build succeeds, on the server), set scaling and
    drift policy. Idempotent: a second apply prints "no changes". Exit 1 when something
    keeps the platform from matching the spec (a failed build, a blocked deploy or
    rollout; each named), even with nothing to change."""
    if not file.is_file():
        fail(f"{file}: no such file", 2)
    text = file.read_text(encoding="utf-8")
    files: dict[str, bytes] = {}
    for field, path in spec_files(text).items():
        full = file.parent / path
        if not full.is_file():
            fail(f"{file.name}: {field}: {path}: no such file (looked for {full})", 2)
        files[path] = full.read_bytes()
    plan = run(ApiClient.apply, text, files, dry_run, file.name, retry_failed)
    if json_out and not wait:
        emit_json(plan)
    elif not json_out:
        show(plan)
    for problem in plan["problems"]:
        warn(f"not applied: {problem}")
    if plan["problems"] and not (wait and not dry_run):
        raise typer.Exit(1)
    if wait and not dry_run:
        outcome = run(follow, plan, json_out)
        if json_out:
            emit_json({"plan": plan, **outcome})
        if not outcome["ok"] or plan["problems"]:
            raise typer.Exit(1)


def show(plan: dict[str, Any]) -> None:
    rows = [[a["kind"], a["target"], a["detail"]] for a in plan["actions"]]
    title = f"Plan for {plan['model']}" + (" (dry run: nothing changed)" if plan["dry_run"] else "")
    table(title, ["action", "target", "detail"], rows)
    if not plan["changed"] and not plan["problems"]:
        console.print("no changes")


def follow(client: ApiClient, plan: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Follow the plan's builds, then its deploy or rollout, and a scaling change until
    the replicas it asks for are ready: ``ok`` false when a build failed, a waiting
    deploy or rollout was refused, or the rollout did not succeed."""
    from shipway.cli.main import _follow

    outcome: dict[str, Any] = {"ok": True, "builds": {}, "deployment": None, "rollout": None}
    for action in plan["actions"]:
        if action["kind"] in ("create-build", "build") and action["build_id"]:
            build = client.build(action["build_id"])
            build = _follow(client, build, quiet)
            outcome["builds"][action["build"]] = build["status"]
            if build["status"] == "failed":
                outcome["ok"] = False
                warn(f"build {build['id']} ({action['build']}) failed: {build['error']}")
            elif not quiet:
                console.print(f"build {build['id']} ({action['build']}): {build['status']}")
    for action in plan["actions"]:
        if action["kind"] == "build-failed":
            outcome["ok"] = False
        if action["then"] is None or action["build_id"] is None:
            continue
        if action["kind"] not in ("deploy", "start-rollout", "wait-for-build"):
            continue
        if action["intent_id"] is not None and not _intent_done(client, action, quiet):
            outcome["ok"] = False
            continue
        if action["then"] == "rollout":
            rollout = _rollout(client, action, quiet)
            outcome["rollout"] = rollout["phase"]
            outcome["ok"] = outcome["ok"] and rollout["phase"] == "succeeded"
        else:
            deployment = client.wait_deployment(
                action["deployment"], action["build_id"], DEPLOY_SECONDS
            )
            outcome["deployment"] = deployment["status"]
            if not quiet:
                console.print(
                    f"deployment {deployment['name']} serves build {deployment['build_id']}"
                )
    for action in plan["actions"]:
        if action["kind"] == "update-scaling" and action["build_id"]:
            deployment = client.wait_deployment(
                action["deployment"], action["build_id"], DEPLOY_SECONDS
            )
            outcome["deployment"] = deployment["status"]
            if not quiet:
                ready = sum(r["state"] == "ready" for r in deployment["replicas"])
                console.print(f"deployment {deployment['name']}: {ready} replicas ready")
    for action in plan["actions"]:
        if action["kind"] == "rollout" and action["rollout_id"]:
            rollout = _follow_rollout(
                client, client.rollout(action["deployment"], action["rollout_id"]), quiet
            )
            outcome["rollout"] = rollout["phase"]
            outcome["ok"] = outcome["ok"] and rollout["phase"] == "succeeded"
    return outcome


def _intent_done(client: ApiClient, action: dict[str, Any], quiet: bool) -> bool:
    """Wait for the server to carry out a deploy or rollout that waited for its build."""
    deadline = time.monotonic() + ROLLOUT_APPEARS_SECONDS
    while True:
        intent = client.intent(action["intent_id"])
        if intent["status"] == "done":
            return True
        if intent["status"] in ("failed", "cancelled"):
            warn(
                f"{action['then']} of build {action['build_id']} on {action['deployment']} "
                f"{intent['status']}: {intent['message']}"
            )
            return False
        if time.monotonic() > deadline:
            raise ApiError(
                f"the server has not carried out the {action['then']} of build "
                f"{action['build_id']} after {ROLLOUT_APPEARS_SECONDS:.0f}s ({intent['status']})"
            )
        time.sleep(0.5)


def _rollout(client: ApiClient, action: dict[str, Any], quiet: bool) -> dict[str, Any]:
    name, build_id = action["deployment"], action["build_id"]
    if action.get("rollout_id"):
        return _follow_rollout(client, client.rollout(name, action["rollout_id"]), quiet)
    found = next((r for r in client.rollouts(name) if r["candidate_build_id"] == build_id), None)
    if found is None:
        raise ApiError(f"no rollout of build {build_id} on {name}")
    return _follow_rollout(client, client.rollout(name, found["id"]), quiet)


def _follow_rollout(client: ApiClient, rollout: dict[str, Any], quiet: bool) -> dict[str, Any]:
    from shipway.cli.rollouts import _follow as follow_rollout

    if not quiet:
        console.print(f"rollout {rollout['id']} of {rollout['deployment']}: {rollout['phase']}")
    done = follow_rollout(rollout["deployment"], rollout, quiet)
    if not quiet:
        console.print(
            f"rollout {done['id']} {done['phase']}"
            + (f": {done['reason']}" if done["reason"] else "")
        )
    return done
