"""``shipway rollouts``: start a canary or an A/B experiment, follow it, operate it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from shipway.cli.client import ApiClient, ApiError
from shipway.cli.context import AllowSignatureChange, JsonOpt, run
from shipway.cli.output import console, emit_json, fail, table

rollouts_app = typer.Typer(
    help="Move traffic to a new build step by step, with automatic rollback.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="Deployment name")]
RolloutId = Annotated[
    str | None, typer.Argument(help="Rollout id (default: the deployment's latest)")
]


def _latest(client: ApiClient, name: str, rollout_id: str | None) -> str:
    if rollout_id:
        return rollout_id
    found = client.rollouts(name)
    if not found:
        raise ApiError(f"deployment {name!r} has no rollout")
    return str(found[0]["id"])


CANARY_ONLY = frozenset(
    {
        "steps",
        "checks_per_step",
        "failure_limit",
        "gate",
        "bake",
        "max_error_rate",
        "max_client_error_increase",
        "max_p50_ratio",
        "max_p99_ratio",
        "max_drift_score",
        "shadow",
        "shadow_min_compared",
        "shadow_min_agreement",
        "progress_deadline",
        "inconclusive_limit",
        "consecutive_error_limit",
    }
)
EXPERIMENT_ONLY = frozenset({"weight", "max_duration", "alpha"})


def _settings(pairs: dict[str, Any]) -> dict[str, Any]:
    """Only what was given: the server's defaults stay the defaults."""
    settings = {k: v for k, v in pairs.items() if v is not None and k != "thresholds"}
    thresholds = {k: v for k, v in pairs.get("thresholds", {}).items() if v is not None}
    if thresholds:
        settings["thresholds"] = thresholds
    return settings


@rollouts_app.command("start")
def start(
    name: Name,
    build: Annotated[str, typer.Option(help="The candidate build id")],
    strategy: Annotated[str, typer.Option(help="canary | experiment")] = "canary",
    steps: Annotated[str | None, typer.Option(help="Canary weights, e.g. 5,25,50,100")] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds per analysis (30)")] = None,
    checks_per_step: Annotated[int | None, typer.Option(help="Passed analyses a step (1)")] = None,
    failure_limit: Annotated[
        int | None,
        typer.Option(
            "--failure-limit",
            "--failure-threshold",
            help="Failed analyses in a row that roll back (2)",
        ),
    ] = None,
    consecutive_error_limit: Annotated[
        int | None,
        typer.Option(help="Canary: analyses in a row without metrics that roll back (5)"),
    ] = None,
    gate: Annotated[
        list[int] | None, typer.Option(help="Step index that waits for `approve`; repeatable")
    ] = None,
    bake: Annotated[float | None, typer.Option(help="Seconds watched after 100 % (0)")] = None,
    min_requests: Annotated[
        int | None, typer.Option(help="Requests per analysis (canary, 50) or per arm (500)")
    ] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="Canary: 5xx and gateway failures (0.01)")
    ] = None,
    max_client_error_increase: Annotated[
        float | None, typer.Option(help="Canary: 4xx rate above stable's (0.01)")
    ] = None,
    max_p50_ratio: Annotated[float | None, typer.Option(help="Canary: p50/stable's (1.5)")] = None,
    max_p99_ratio: Annotated[float | None, typer.Option(help="Canary: p99/stable's (2.0)")] = None,
    max_drift_score: Annotated[
        float | None, typer.Option(help="Canary: PSI of its inputs against stable's (off)")
    ] = None,
    shadow: Annotated[
        float | None, typer.Option(help="Canary: mirror this share to it first (off)")
    ] = None,
    shadow_min_compared: Annotated[
        int | None, typer.Option(help="Canary: mirrored rows compared before hand-over (200)")
    ] = None,
    shadow_min_agreement: Annotated[
        float | None, typer.Option(help="Canary: share of mirrored rows that must agree (0.98)")
    ] = None,
    progress_deadline: Annotated[
        float | None,
        typer.Option(help="Canary: seconds without progress before it fails (10 intervals)"),
    ] = None,
    inconclusive_limit: Annotated[
        int | None,
        typer.Option(
            "--inconclusive-limit",
            "--max-inconclusive",
            help="Canary: inconclusive analyses in a row that fail it (10)",
        ),
    ] = None,
    weight: Annotated[int | None, typer.Option(help="Experiment: challenger's % (50)")] = None,
    max_duration: Annotated[
        float | None, typer.Option(help="Experiment: seconds before 'no difference' (3600)")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Experiment: significance (0.05)")] = None,
    wait: Annotated[bool, typer.Option(help="Follow to the end; exit 1 unless promoted")] = False,
    allow_signature_change: AllowSignatureChange = False,
    json_out: JsonOpt = False,
) -> None:
    """Start a rollout of BUILD on deployment NAME.

    canary: optionally a SHADOW phase first (mirrored requests, each row compared with
    stable's answer by the build's gate test, until the agreement rate's Wilson bound
    clears 98 %), then the
    candidate takes STEPS of live traffic, one analysis per INTERVAL
    (error rate, 4xx against stable's, p50/p99 against stable, minimum requests);
    FAILURE_LIMIT failed analyses in a row roll it back, every step passed promotes
    it; no progress for PROGRESS_DEADLINE seconds, or INCONCLUSIVE_LIMIT analyses without
    enough data in a row, end it failed. A candidate whose signature would break
    stable's clients is refused unless --allow-signature-change. experiment: the
    challenger takes WEIGHT % sticky by request key; two-proportion z-tests on errors
    and 4xx and Mann-Whitney U on latency at ALPHA decide the winner, or "no
    difference". Options of the other strategy are refused, not ignored.
    """
    given = {k for k, v in locals().items() if v not in (None, [], False)}  # options given
    foreign = sorted(given & (EXPERIMENT_ONLY if strategy == "canary" else CANARY_ONLY))
    if foreign:
        options = ", ".join("--" + name.replace("_", "-") for name in foreign)
        fail(f"{options}: not a setting of the {strategy} strategy", 2)
    if shadow is None and (shadow_min_compared is not None or shadow_min_agreement is not None):
        fail("--shadow-min-compared and --shadow-min-agreement need --shadow SHARE", 2)
    if strategy == "canary":
        parsed_steps = None
        if steps:
            try:
                parsed_steps = [int(s) for s in steps.split(",")]
            except ValueError:
                fail(f"--steps takes comma-separated integers, got {steps!r}", 2)
        settings = _settings(
            {
                "step_weights": parsed_steps,
                "interval_seconds": interval,
                "checks_per_step": checks_per_step,
                "failure_limit": failure_limit,
                "consecutive_error_limit": consecutive_error_limit,
                "gates": gate or None,
                "bake_seconds": bake,
                "progress_deadline_seconds": progress_deadline,
                "inconclusive_limit": inconclusive_limit,
                "shadow": None
                if shadow is None
                else _settings(
                    {
                        "share": shadow,
                        "min_compared": shadow_min_compared,
                        "min_agreement": shadow_min_agreement,
                    }
                ),
                "thresholds": {
                    "min_requests": min_requests,
                    "max_error_rate": max_error_rate,
                    "max_client_error_increase": max_client_error_increase,
                    "max_p50_ratio": max_p50_ratio,
                    "max_p99_ratio": max_p99_ratio,
                    "max_drift_score": max_drift_score,
                },
            }
        )
    else:
        settings = _settings(
            {
                "weight": weight,
                "interval_seconds": interval,
                "min_requests": min_requests,
                "max_duration_seconds": max_duration,
                "alpha": alpha,
            }
        )
    body = {
        "build_id": build,
        "strategy": strategy,
        "settings": settings,
        "allow_signature_change": allow_signature_change,
    }
    rollout = run(ApiClient.start_rollout, name, body)
    if wait:
        rollout = _follow(name, rollout, json_out)
    _show(rollout, json_out)
    if wait and rollout["phase"] != "succeeded":
        raise typer.Exit(1)


def _follow(name: str, rollout: dict[str, Any], quiet: bool) -> dict[str, Any]:
    seen = len(rollout["timeline"])
    while rollout["running"]:
        time.sleep(1.0)
        rollout = run(ApiClient.rollout, name, rollout["id"])
        if not quiet:
            for event in rollout["timeline"][seen:]:
                console.print(f"{event['at'][11:19]}  {event['event']:<28} {event['reason']}")
        seen = len(rollout["timeline"])
    return rollout


def _show(rollout: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(rollout)
        return
    console.print(
        f"rollout [bold]{rollout['id']}[/bold] of {rollout['deployment']}: {rollout['strategy']} "
        f"of build {rollout['candidate_build_id']} ({rollout['model']} "
        f"v{rollout['candidate_version']}) against {rollout['stable_build_id']}"
    )
    winner = f", winner {rollout['winner']}" if rollout.get("winner") else ""
    console.print(
        f"phase [bold]{rollout['phase']}[/bold], candidate at {rollout['weight']} %{winner}"
        + (f" — {rollout['reason']}" if rollout["reason"] else "")
    )
    rows = [
        [e["at"][11:19], e["event"], e["reason"], _numbers(e["details"].get("numbers"))]
        for e in rollout["timeline"]
    ]
    if rows:
        table("Timeline", ["at", "event", "reason", "numbers"], rows)


def _numbers(numbers: Any) -> str:
    """A check's numbers in one cell: value against limit, per check."""
    if not isinstance(numbers, dict):
        return ""
    parts = []
    for name, check in numbers.items():
        if isinstance(check, dict) and "value" in check:
            value = "-" if check["value"] is None else f"{check['value']:.3g}"
            # the outcome is judged on the confidence bound when there is one (a point
            # estimate past its limit may still pass on few requests): show what was judged
            bound = check.get("bound")
            judged = "" if bound is None else f" (lower bound {bound:.3g})"
            parts.append(f"{name} {value}{judged}/{check['limit']:.3g} {check['outcome']}")
    return "; ".join(parts)


@rollouts_app.command("status")
def status(name: Name, rollout_id: RolloutId = None, json_out: JsonOpt = False) -> None:
    """A rollout with its timeline: every step, check (value against limit) and decision."""
    _show(run(lambda client: client.rollout(name, _latest(client, name, rollout_id))), json_out)


@rollouts_app.command("list")
def list_rollouts(name: Name, json_out: JsonOpt = False) -> None:
    """The deployment's recent rollouts, newest first."""
    found = run(ApiClient.rollouts, name)
    if json_out:
        emit_json(found)
        return
    table(
        f"Rollouts of {name}",
        ["id", "strategy", "candidate", "phase", "weight", "reason", "started"],
        [
            [r[k] for k in ("id", "strategy", "candidate_build_id", "phase", "weight", "reason")]
            + [r["created_at"][:19]]
            for r in found
        ],
    )


def _operation(operation: str, doc: str) -> None:
    def command(name: Name, rollout_id: RolloutId = None, json_out: JsonOpt = False) -> None:
        rollout = run(
            lambda client: client.operate_rollout(
                name, _latest(client, name, rollout_id), operation
            )
        )
        _show(rollout, json_out)

    command.__doc__ = doc
    rollouts_app.command(operation)(command)


_operation("promote", "Promote the candidate now, skipping the remaining steps.")
_operation("abort", "Roll back now: all traffic to stable, the candidate removed.")
_operation("pause", "Hold the rollout at its current weight; analyses stop.")
_operation("resume", "Go on from where the rollout was paused.")
_operation("approve", "Pass a manual gate: go on to the next step.")
