"""``shipway``: every command, each with ``--json`` for pipelines.

The CLI is a client of the API (``SHIPWAY_API_URL``, ``SHIPWAY_TOKEN``); ``up``,
``serve`` and ``demo`` run Shipway itself on this machine.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn

from shipway.cli.client import ApiClient
from shipway.cli.context import AllowSignatureChange, JsonOpt, state
from shipway.cli.context import run as _run
from shipway.cli.gitops import apply as apply_command
from shipway.cli.output import console, emit_json, err_console, fail, table
from shipway.cli.rollouts import rollouts_app
from shipway.settings import Settings

app = typer.Typer(
    help="Shipway: register, build, deploy and roll out models.", no_args_is_help=True
)
models_app = typer.Typer(help="Register and list model versions.", no_args_is_help=True)
builds_app = typer.Typer(
    help="Build inference engines and follow their progress.", no_args_is_help=True
)
variants_app = typer.Typer(
    help="Canaries, experiment arms and shadows of a deployment.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(builds_app, name="builds")
drift_app = typer.Typer(
    help="Drift of live inputs against what a version was validated on.", no_args_is_help=True
)
app.add_typer(variants_app, name="variants")
app.add_typer(drift_app, name="drift")
app.add_typer(rollouts_app, name="rollouts")
app.command("apply")(apply_command)


@app.callback()
def main(
    api_url: Annotated[str | None, typer.Option(help="API URL [env: SHIPWAY_API_URL]")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token [env: SHIPWAY_TOKEN]")] = None,
) -> None:
    try:
        state.settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SHIPWAY_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        fail(f"invalid settings: {problems}", 2)
    state.api_url = api_url or state.settings.resolved_api_url
    state.token = token or state.settings.token


def _parse_tags(tags: list[str]) -> dict[str, str]:
    parsed = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            fail(f"--tag takes KEY=VALUE, got {tag!r}", 2)
        parsed[key] = value
    return parsed


@models_app.command("register")
def models_register(
    name: Annotated[str, typer.Argument(help="Model name (lower-case, digits, '-')")],
    onnx: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="ONNX model file")],
    sample: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help=".npz reference sample, one array per input"
        ),
    ],
    tag: Annotated[list[str], typer.Option(help="KEY=VALUE tag; repeatable")] = [],  # noqa: B006
    calibration: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help=".npz calibration dataset for INT8 builds (default: half the sample)",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a new model version in MLflow, checked against its ONNX graph."""
    version = _run(ApiClient.register, name, onnx, sample, _parse_tags(tag), calibration)
    if json_out:
        emit_json(version)
    else:
        console.print(f"registered [bold]{name}[/bold] version {version['version']}")


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List registered model versions."""
    versions = _run(ApiClient.models, name)
    if json_out:
        emit_json(versions)
        return
    rows = [
        [
            v["name"],
            v["version"],
            ", ".join(i["name"] for i in v["signature"]["inputs"]),
            v["onnx_sha256"][:12],
            v["created_at"],
        ]
        for v in versions
    ]
    table("Model versions", ["name", "version", "inputs", "sha256", "created"], rows)


def _follow(client: ApiClient, build: dict[str, Any], quiet: bool) -> dict[str, Any]:
    if quiet:
        return client.wait_build(build["id"])
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        console=err_console,
    ) as progress:
        task = progress.add_task(f"build {build['id']}", total=1.0, stage=build["stage"])
        return client.wait_build(
            build["id"],
            on_progress=lambda b: progress.update(task, completed=b["progress"], stage=b["stage"]),
        )


@builds_app.command("create")
def builds_create(
    name: Annotated[str, typer.Argument(help="Registered model name")],
    version: Annotated[int, typer.Option(help="Model version")],
    recipe: Annotated[str, typer.Option(help="fp32 | fp16 | int8 | int8-dynamic | bf16")] = "fp32",
    target: Annotated[
        str,
        typer.Option(
            help="onnxruntime-cpu | tensorrt | openvino-cpu (fp32, int8 by NNCF, and bf16 "
            "where the CPU has it; needs the openvino extra on the build workers)"
        ),
    ] = "onnxruntime-cpu",
    calibration: Annotated[
        str | None, typer.Option(help="INT8 calibration: minmax | entropy | percentile")
    ] = None,
    min_cosine: Annotated[
        float | None, typer.Option(help="Accuracy gate, mean cosine on held-out rows (0.99)")
    ] = None,
    max_fp32_layers: Annotated[
        int | None, typer.Option(help="Layers the selective search may keep in FP32 (4)")
    ] = None,
    min_top1: Annotated[
        float | None,
        typer.Option(help="Accuracy gate for class scores, top-1 agreement with FP32 (0.99)"),
    ] = None,
    min_row_cosine: Annotated[
        float | None,
        typer.Option(help="Least cosine of every row, in the gate and in shadow (0.98)"),
    ] = None,
    quantize_embeddings: Annotated[
        bool,
        typer.Option(
            "--quantize-embeddings",
            help="int8-dynamic: store the embedding tables as INT8 too (size; gated)",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the build to its end")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Queue an engine build of a model version.

    INT8 builds calibrate, pass the accuracy gate (cosine per output, top-1 agreement
    for class scores, integer outputs exactly; keeping the most sensitive layers in
    FP32 if need be) and are benchmarked against FP32 and the stable build; the
    report is in `shipway builds show ID`.
    """
    options = {
        k: v
        for k, v in {
            "calibration": calibration,
            "min_cosine": min_cosine,
            "max_fp32_layers": max_fp32_layers,
            "min_top1": min_top1,
            "min_row_cosine": min_row_cosine,
            "quantize_embeddings": quantize_embeddings or None,
        }.items()
        if v is not None
    }

    def go(client: ApiClient) -> dict[str, Any]:
        build = client.create_build(name, version, recipe, target, options)
        return _follow(client, build, json_out) if wait else build

    build = _run(go)
    if json_out:
        emit_json(build)
    else:
        console.print(f"build [bold]{build['id']}[/bold]: {build['status']} ({build['stage']})")
    if build["status"] == "failed":
        fail(f"build {build['id']} failed: {build['error']}")


@builds_app.command("show")
def builds_show(build_id: str, json_out: JsonOpt = False) -> None:
    """Show one build: status, stage, artifact, error."""
    build = _run(ApiClient.build, build_id)
    if json_out:
        emit_json(build)
        return
    for key in (
        "id",
        "model",
        "version",
        "recipe",
        "target",
        "status",
        "stage",
        "artifact_path",
        "error",
    ):
        console.print(f"{key:>14}: {build[key]}")
    for line in report_lines(build.get("report") or {}):
        console.print(f"{'':>14}  {line}")


@builds_app.command("manifest")
def builds_manifest(
    build_id: Annotated[str, typer.Argument(help="A succeeded build")],
    deployment: Annotated[str, typer.Option(help="The ModelDeployment's name")],
    replicas: Annotated[
        int, typer.Option(min=1, help="Replicas (the minimum with autoscaling)")
    ] = 1,
    max_replicas: Annotated[
        int | None, typer.Option(min=1, help="Autoscale up to this many replicas")
    ] = None,
    target_inflight: Annotated[
        float | None, typer.Option(help="Autoscale to this mean of requests in flight a replica")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the ModelDeployment that serves a build, to commit for Argo CD (Kubernetes mode).

    spec.build holds the build's signed archive URL (pods fetch it without a token) and
    its SHA-256; the API server has admitted it with a dry run. Nothing is applied:
    `shipway builds manifest B --deployment minilm > models/minilm.yaml`, then commit.
    """
    params: dict[str, Any] = {"name": deployment, "replicas": replicas}
    if max_replicas is not None:
        params["max_replicas"] = max_replicas
    if target_inflight is not None:
        params["target_inflight"] = target_inflight
    body = _run(ApiClient.model_deployment, build_id, params)
    if json_out:
        emit_json(body)
    else:
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))


def _megabytes(value: float) -> str:
    """Sizes as read: 53.2 MB, 0.004 MB, not 0.0."""
    return f"{value:.3g} MB" if value < 1 else f"{value:.1f} MB"


def report_lines(report: dict[str, Any]) -> list[str]:
    """The build report's headline: accuracy, layers kept in FP32, speed, size."""
    lines = []
    accuracy = report.get("accuracy")
    if accuracy:
        verdict = "passed" if accuracy["passed"] else "FAILED"
        parts = []
        if accuracy.get("mean_cosine") is not None:
            rule = accuracy.get("rule") or {}
            floor = rule.get("min_row_cosine")
            if floor is None:  # the default: 1 - 2 * (1 - min_cosine)
                floor = max(0.0, 1 - 2 * (1 - float(accuracy["threshold"])))
            parts.append(
                f"mean cosine {accuracy['mean_cosine']:.4f} (threshold {accuracy['threshold']}), "
                f"worst row {accuracy['min_cosine']:.4f} (floor {floor:.4g})"
            )
        if accuracy.get("top1_agreement") is not None:
            parts.append(
                f"top-1 agreement {accuracy['top1_agreement']:.4f} "
                f"(threshold {accuracy.get('min_top1', 0.99)})"
            )
        lines.append(f"accuracy gate {verdict}: " + "; ".join(parts or ["exact outputs"]))
        lines.extend(f"  {failure}" for failure in accuracy.get("failures", []))
    kept = report.get("selective", {}).get("kept_fp32")
    if kept:
        lines.append(f"kept in FP32: {', '.join(kept)}")
    openvino = report.get("openvino")
    if openvino:  # the precision OpenVINO compiled with, read back from it
        lines.append(
            f"openvino {openvino.get('version', '?')}: inference precision "
            f"{openvino.get('inference_precision')} (requested "
            f"{openvino.get('inference_precision_requested')})"
        )
    bench = report.get("benchmark")
    if bench:
        text = f"speed: {bench['speedup_vs_fp32']:.2f}x FP32"
        if bench.get("speedup_vs_stable") is not None:
            text += f", {bench['speedup_vs_stable']:.2f}x stable ({bench['stable_build']})"
        if bench.get("performance_regression"):
            text += " — PERFORMANCE REGRESSION against stable"
        lines.append(text)
        lines.extend(speed_lines(bench))
    size = report.get("size_mb")
    if size:
        lines.append(f"size: {_megabytes(size['candidate'])} (FP32 {_megabytes(size['fp32'])})")
    return lines


def speed_lines(bench: dict[str, Any]) -> list[str]:
    """Speedups against each named baseline at each measured shape, and the INT8 arm."""
    lines = [f"  arm: {bench['arm']}"] if bench.get("arm") else []
    shapes = bench.get("shapes") or {}
    for baseline in ("raw_fp32", "fused_fp32"):
        ratios = bench.get(f"speedup_vs_{baseline}") or {}
        parts = [f"{v:.2f}x {shape}" for shape, v in ratios.items() if v is not None]
        if parts:
            lines.append(f"  vs {baseline}: " + ", ".join(parts))
    fused = (bench.get("baselines") or {}).get("fused_fp32") or {}
    if fused.get("fused") is False:
        lines.append(f"  fused_fp32 = raw_fp32: {fused.get('reason')}")
    real = shapes.get("real_lengths") or {}
    if "skipped" in real:
        lines.append(f"  real lengths not measured: {real['skipped']}")
    elif real:
        lines.append(
            f"  real lengths: {real['rows']} rows, mean {real['mean_length']} tokens "
            f"(padded to {real['padded_length']})"
        )
    return lines


@builds_app.command("list")
def builds_list(json_out: JsonOpt = False) -> None:
    """List recent builds."""
    builds = _run(ApiClient.builds)
    if json_out:
        emit_json(builds)
        return
    rows = [
        [b["id"], b["model"], b["version"], b["recipe"], b["target"], b["status"], b["stage"]]
        for b in builds
    ]
    table("Builds", ["id", "model", "version", "recipe", "target", "status", "stage"], rows)


@app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (the gateway's model name)")],
    build: Annotated[str, typer.Option(help="Build id to serve")],
    replicas: Annotated[
        int | None,
        typer.Option(help="Replicas (the minimum when autoscaling); default 1, or kept"),
    ] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscale up to this many")] = None,
    target_inflight: Annotated[
        float | None, typer.Option(help="Autoscale to this many requests in flight per replica")
    ] = None,
    scale_down_window: Annotated[
        float | None,
        typer.Option(help="Seconds of low load before replicas are removed (30)"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until replicas are ready")
    ] = True,
    allow_signature_change: AllowSignatureChange = False,
    json_out: JsonOpt = False,
) -> None:
    """Serve a succeeded build as the stable variant of a deployment, through the gateway.

    On an existing deployment, leaving out every scale option keeps its current scaling.
    A build whose signature would break the serving build's clients is refused unless
    --allow-signature-change.
    """

    def go(client: ApiClient) -> dict[str, Any]:
        client.deploy(
            name,
            build,
            replicas,
            max_replicas,
            target_inflight,
            scale_down_window,
            allow_signature_change,
        )
        return client.wait_deployment(name, build) if wait else client.deployment(name)

    deployment = _run(go)
    if json_out:
        emit_json(deployment)
    else:
        console.print(
            f"deployment [bold]{name}[/bold]: {deployment['status']} → {deployment['infer_url']}"
        )


def _show_deployment(deployment: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(deployment)
        return
    rows = [
        [
            v["name"],
            v["build_id"],
            v["weight"],
            v["shadow_share"],
            f"{v['desired_replicas']} ({v['min_replicas']}..{v['max_replicas']})",
            sum(r["state"] == "ready" for r in deployment["replicas"] if r["variant"] == v["name"]),
        ]
        for v in deployment["variants"]
    ]
    table(
        f"{deployment['name']} ({deployment['split']})",
        ["variant", "build", "weight %", "shadow", "replicas", "ready"],
        rows,
    )


@variants_app.command("set")
def variants_set(
    name: Annotated[str, typer.Argument(help="Deployment")],
    variant: Annotated[str, typer.Argument(help="Variant name, e.g. canary")],
    build: Annotated[str, typer.Option(help="Build id the variant serves")],
    weight: Annotated[int, typer.Option(help="Percent of live traffic, taken from stable")] = 0,
    shadow: Annotated[float, typer.Option(help="Share of requests mirrored to it, 0..1")] = 0.0,
    replicas: Annotated[int, typer.Option(help="Replicas of this variant")] = 1,
    allow_signature_change: AllowSignatureChange = False,
    json_out: JsonOpt = False,
) -> None:
    """Add or change a variant: a canary (weight), an experiment arm, or a shadow.

    A build whose signature would break stable's clients is refused unless
    --allow-signature-change."""
    deployment = _run(
        ApiClient.set_variant,
        name,
        variant,
        build_id=build,
        weight=weight,
        shadow_share=shadow,
        replicas=replicas,
        allow_signature_change=allow_signature_change,
    )
    _show_deployment(deployment, json_out)


@variants_app.command("remove")
def variants_remove(
    name: Annotated[str, typer.Argument(help="Deployment")],
    variant: Annotated[str, typer.Argument(help="Variant to remove")],
    json_out: JsonOpt = False,
) -> None:
    """Remove a variant; its weight returns to stable."""
    _show_deployment(_run(ApiClient.remove_variant, name, variant), json_out)


@app.command("route")
def route(
    name: Annotated[str, typer.Argument(help="Deployment")],
    weight: Annotated[
        list[str], typer.Option(help="VARIANT=PERCENT; repeatable; sums to 100")
    ] = [],  # noqa: B006
    split: Annotated[str | None, typer.Option(help="weighted | sticky")] = None,
    header: Annotated[str | None, typer.Option(help="Header with the sticky key")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Set the traffic split between variants, all weights at once."""
    weights: dict[str, int] | None = None
    if weight:
        weights = {}
        for item in weight:
            variant, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                fail(f"--weight takes VARIANT=PERCENT, got {item!r}", 2)
            weights[variant] = int(value)
    body = {"weights": weights, "split": split, "sticky_header": header}
    _show_deployment(_run(ApiClient.set_routing, name, **body), json_out)


@app.command("status")
def status(json_out: JsonOpt = False) -> None:
    """Show the API and gateway URLs, counts, and every deployment."""
    data = _run(ApiClient.status)
    if json_out:
        emit_json(data)
        return
    console.print(
        f"API      {data['api_url']}\n"
        f"Gateway  {data['gateway_url']}\n"
        f"MLflow   {data['mlflow_tracking_uri']}"
    )
    console.print(f"models: {data['models']}  builds: {data['builds']}")
    rows = [
        [d["name"], d["build_id"], d["status"], len(d["replicas"]), d["infer_url"]]
        for d in data["deployments"]
    ]
    table("Deployments", ["name", "build", "status", "replicas", "infer url"], rows)


@contextlib.contextmanager
def _server_extra() -> Iterator[None]:
    """The control plane's own processes need the ``server`` extra; the base install is
    the CLI client and the pure engines (what the operator image carries)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        fail(
            f"this command runs the control plane, which needs {exc.name!r}: "
            "pip install 'shipway[server]'",
            2,
        )


@app.command("up")
def up() -> None:
    """Run API, build worker, runtime manager and gateway here until Ctrl-C."""
    with _server_extra():
        from shipway.cli.supervisor import Supervisor, SupervisorError

    supervisor = Supervisor(state.settings)
    try:
        supervisor.start()
        console.print(
            f"Shipway is up: API {state.settings.resolved_api_url}, gateway "
            f"{state.settings.gateway_url}, logs {supervisor.log_dir}. Ctrl-C stops."
        )
        supervisor.wait()
    except SupervisorError as exc:
        fail(str(exc))
    console.print("stopped")


@app.command("serve")
def serve(
    role: Annotated[str, typer.Argument(help="api | gateway | worker | runtime")],
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the schema first")
    ] = True,
    consume: Annotated[
        str | None,
        typer.Option(
            help="worker only: all (default) | builds (SHIPWAY_BUILD_QUEUE: engine builds) | "
            "hooks (SHIPWAY_HOOK_QUEUE: webhook deliveries, which apply pushed specs); "
            "a cluster runs build workers without a Kubernetes token and one hooks worker "
            "with it"
        ),
    ] = None,
) -> None:
    """Run one Shipway process (what `up` starts; Helm runs each as its own Deployment)."""
    with _server_extra():
        from shipway.cli.serve import SERVERS, serve_worker, worker_queues
    from shipway.errors import ShipwayError

    if role not in SERVERS:
        fail(f"unknown role {role!r}; choose one of {', '.join(SERVERS)}", 2)
    if consume is not None and role != "worker":
        fail(f"--consume is for `shipway serve worker` only, not {role!r}", 2)
    try:
        if role == "worker":
            consume = "all" if consume is None else consume
            try:
                worker_queues(state.settings, consume)
            except ValueError as exc:
                fail(str(exc), 2)
            serve_worker(state.settings, migrate, consume)
        else:
            SERVERS[role](state.settings, migrate)
    except ShipwayError as exc:
        fail(str(exc))


@app.command("migrate")
def migrate_schema() -> None:
    """Bring the state store's schema to the newest revision, then exit (what the Helm
    chart's pre-install/pre-upgrade Job runs, so that no server migrates on start)."""
    with _server_extra():
        from sqlalchemy.exc import SQLAlchemyError

        from shipway.store.db import migrate

    try:
        migrate(state.settings.resolved_database_url)
    except SQLAlchemyError as exc:  # unreachable server, bad credentials: one line
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        fail(f"migration failed: {detail}")
    console.print("schema up to date")


@app.command("demo")
def demo(json_out: JsonOpt = False) -> None:
    """The whole story on this machine: register MiniLM, build, deploy, infer, compare;
    then build it as INT8 and roll the deployment over to it."""
    with _server_extra():
        from shipway.cli.demo import run_demo

    try:
        result = run_demo(state.settings, say=err_console.print)
    except Exception as exc:  # the demo reports any failure as one readable line
        fail(f"demo failed: {exc}")
    if json_out:
        emit_json(result)
    else:
        console.print(result)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """A score history in one line of block characters, oldest first."""
    if not values:
        return ""
    top = max(max(values), 1e-12)
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1)))] for v in values)


def drift_rows(body: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    """Per-variant verdicts, and per-feature evidence, as table rows."""
    variants, features = [], []
    for v in body["variants"]:
        history = [
            h["score"] for h in reversed(body.get("history", [])) if h["variant"] == v["variant"]
        ]
        p = v.get("min_p_adjusted")
        variants.append(
            [
                f"{v['variant']} ({v['build_id']})",
                v["verdict"],
                v.get("rows", 0),
                f"{v.get('score', 0.0):.3f}",
                "" if p is None else f"{p:.2g}",
                sparkline(history),
            ]
        )
        for f in v.get("features", []):
            features.append(
                [
                    v["variant"],
                    f["name"],
                    f["test"],
                    f"{f['p_value']:.2g}",
                    f"{f['p_adjusted']:.2g}",
                    "" if f["statistic"] is None else f"{f['statistic']:.3f}",
                    "DRIFT" if f["drifted"] else "",
                ]
            )
        for name in v.get("missing", []):
            features.append([v["variant"], name, "", "", "", "", "missing from traffic"])
    return variants, features


@drift_app.command("status")
def drift_status(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    min_rows: Annotated[int, typer.Option(help="Fewer rows is 'insufficient data'")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Check each variant's live inputs now against its version's reference profile.

    Numeric features by Kolmogorov-Smirnov (Benjamini-Hochberg adjusted) with PSI as
    the size of change, token inputs by chi-square; the last column is the history of
    drift scores.
    """
    body = _run(lambda client: client.drift(name, min_rows))
    if json_out:
        emit_json(body)
        return
    variants, features = drift_rows(body)
    table(
        f"Drift of {name}",
        ["variant (build)", "verdict", "rows", "PSI", "min adj. p", "history"],
        variants,
    )
    if features:
        table("Features", ["variant", "feature", "test", "p", "adj. p", "PSI / MMD²", ""], features)


@drift_app.command("policy")
def drift_policy(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    action: Annotated[
        list[str] | None, typer.Option(help="alert | webhook | rollback; repeatable (alert)")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="Retraining hook, POSTed a signed JSON event")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Set what a drift breach does: record and alert, call a signed webhook (retried,
    one event id), and roll stable back to the build it replaced."""
    if webhook_url and "webhook" not in (action or []):
        fail("--webhook-url is called by the webhook action only: add --action webhook", 2)
    body = {"actions": action or ["alert"], "webhook_url": webhook_url}
    policy = _run(lambda client: client.set_drift_policy(name, body))
    if json_out:
        emit_json(policy)
    else:
        console.print(f"drift policy of [bold]{name}[/bold]: {', '.join(policy['actions'])}")


if __name__ == "__main__":
    app()
