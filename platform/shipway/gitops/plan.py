"""What ``shipway apply`` will do: a release spec against what the platform holds, as an
ordered list of actions (pure: no I/O; ``shipway.services.gitops`` observes and carries
the plan out).

Idempotence lives here; each rule makes a second apply of the same spec a no-op:

- A version is reused when its ONNX, sample and calibration files have the sha256 of
  the spec's files (the sample's and calibration's digests are tags Shipway records at
  registration through apply; a version registered otherwise is not matched by them).
  Several matching: the highest.
- A build of that version with the same recipe, target and options (every option with
  its default, as the store keeps them) that has not failed is reused, whatever its
  state (queued, running, succeeded).
- A failed build is reported and not rebuilt: the same inputs would fail the same way
  (except a build that was never queued, the broker being down: it is queued again),
  unless the apply asks for it (``retry_failed``: a worker that died, say).
  A change to the model, recipe, target or options makes a new build; so does
  ``shipway builds create`` by hand (that build is then reused).
- A deployment serving the wanted build is unchanged; scaling and drift policy change
  only where the spec sets them and they differ.
- A rollout of the wanted build that is running is unchanged. One that ended rolled
  back or failed is not retried: the plan says so (``blocked``) until the spec changes
  the build, so a bad candidate is not rolled out again on every apply or push.
- A deploy or rollout waiting for a build is an intent the platform keeps; an intent
  already waiting for the same build is unchanged; intents for builds the spec no
  longer wants are cancelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shipway.gitops.spec import DeploymentSpec, ReleaseSpec

FINISHED_BADLY = ("rolled-back", "failed")
# services.builds.create's error for a build it could not queue (the broker down): it
# never ran, so it says nothing about its inputs, and apply queues the build again
NEVER_QUEUED = "could not enqueue"


class Kind(StrEnum):
    REGISTER_VERSION = "register-version"
    VERSION = "version"  # reused as it is
    CREATE_BUILD = "create-build"
    BUILD = "build"  # reused: queued, running or succeeded
    BUILD_FAILED = "build-failed"  # reported, not rebuilt
    DEPLOY = "deploy"
    START_ROLLOUT = "start-rollout"
    WAIT_FOR_BUILD = "wait-for-build"  # a deploy or rollout intent already waiting
    CANCEL_INTENT = "cancel-intent"
    DEPLOYMENT = "deployment"  # serves the wanted build
    ROLLOUT = "rollout"  # of the wanted build, running
    UPDATE_SCALING = "update-scaling"
    SET_DRIFT_POLICY = "set-drift-policy"
    BLOCKED = "blocked"  # something stands in the way, named; nothing done


class IntentAction(StrEnum):
    DEPLOY = "deploy"
    ROLLOUT = "rollout"


@dataclass(frozen=True)
class Action:
    """One step. ``changed``: it writes something. ``after_build``: it waits for that
    build (a spec build name) to succeed, kept as an intent the platform carries out."""

    kind: Kind
    target: str
    detail: str
    changed: bool
    build: str | None = None  # the spec's build name it concerns
    build_id: str | None = None
    version: int | None = None
    deployment: str | None = None
    after_build: bool = False
    intent_id: int | None = None
    rollout_id: str | None = None
    then: IntentAction | None = None  # deploy or rollout: what a deploy/wait does

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        out["then"] = self.then.value if self.then else None
        return out


@dataclass(frozen=True)
class Plan:
    model: str
    actions: tuple[Action, ...]
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(a.changed for a in self.actions)

    @property
    def problems(self) -> tuple[str, ...]:
        """What keeps the platform from matching the spec (a failed build, a blocked
        deploy or rollout), one line each: a plan with any is not "no changes"."""
        return tuple(
            f"{a.target}: {a.detail}"
            for a in self.actions
            if a.kind in (Kind.BUILD_FAILED, Kind.BLOCKED)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "problems": list(self.problems),
            "actions": [a.to_dict() for a in self.actions],
        }


# ---- what the platform holds ---------------------------------------------------------


@dataclass(frozen=True)
class VersionState:
    version: int
    onnx_sha256: str
    sample_sha256: str | None = None  # None: not recorded (registered without apply)
    calibration_sha256: str | None = None


@dataclass(frozen=True)
class BuildState:
    id: str
    version: int
    recipe: str
    target: str
    options: dict[str, Any]
    status: str  # queued | running | succeeded | failed
    error: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    name: str
    build_id: str
    min_replicas: int
    max_replicas: int
    autoscale: dict[str, Any]
    drift_policy: dict[str, Any] | None  # None: not kept here (Kubernetes mode)


@dataclass(frozen=True)
class RolloutState:
    id: str
    candidate_build_id: str
    running: bool
    phase: str
    reason: str = ""


@dataclass(frozen=True)
class IntentState:
    id: int
    deployment: str
    build_id: str
    action: IntentAction


@dataclass(frozen=True)
class Observed:
    """The model's versions and their builds (oldest first), the spec's deployment, its
    rollouts (newest first) and its pending intents."""

    versions: tuple[VersionState, ...] = ()
    builds: tuple[BuildState, ...] = ()
    deployment: DeploymentState | None = None
    rollouts: tuple[RolloutState, ...] = ()
    intents: tuple[IntentState, ...] = ()
    kubernetes: bool = False


@dataclass(frozen=True)
class Files:
    """The sha256 (hex) of the spec's files."""

    onnx: str
    sample: str
    calibration: str | None = None


# ---- planning -------------------------------------------------------------------------


@dataclass
class _Resolved:
    """A spec build as planned: its id if it exists, and what state it is in."""

    id: str | None
    state: str  # new | pending | succeeded | failed
    error: str | None = None


@dataclass
class _Planner:
    spec: ReleaseSpec
    observed: Observed
    actions: list[Action] = field(default_factory=list)

    def add(self, kind: Kind, target: str, detail: str, changed: bool, **refs: Any) -> None:
        self.actions.append(Action(kind, target, detail, changed, **refs))


def make_plan(
    spec: ReleaseSpec,
    observed: Observed,
    *,
    files: Files | None = None,
    version: int | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
) -> Plan:
    """The actions that make the platform match ``spec``.

    The version is the one holding ``files`` (registered when none does), or
    ``version`` when given (a registry trigger names it; it must be in ``observed``).
    ``retry_failed``: a build that failed is queued again from the same inputs.
    """
    if (files is None) == (version is None):
        raise ValueError("give the spec's files or a version, not both")
    planner = _Planner(spec, observed)
    model = spec.model.name
    if version is None:
        assert files is not None
        version = _version(planner, files)
    else:
        planner.add(
            Kind.VERSION,
            f"model/{model}",
            f"version {version} (named by the trigger)",
            False,
            version=version,
        )
    resolved = {b.name: _build(planner, b.name, version, retry_failed) for b in spec.builds}
    if spec.deployment is not None:
        _deployment(planner, spec.deployment, resolved)
    return Plan(model, tuple(planner.actions), dry_run)


def _version(planner: _Planner, files: Files) -> int | None:
    model = planner.spec.model
    matching = [
        v
        for v in planner.observed.versions
        if v.onnx_sha256 == files.onnx
        and v.sample_sha256 == files.sample
        and v.calibration_sha256 == files.calibration
    ]
    if matching:
        found = max(matching, key=lambda v: v.version)
        planner.add(
            Kind.VERSION,
            f"model/{model.name}",
            f"version {found.version} holds {model.onnx} (sha256 {files.onnx[:12]})",
            False,
            version=found.version,
        )
        return found.version
    planner.add(
        Kind.REGISTER_VERSION,
        f"model/{model.name}",
        f"new version from {model.onnx} (sha256 {files.onnx[:12]}) and {model.sample}",
        True,
    )
    return None


def _build(planner: _Planner, name: str, version: int | None, retry_failed: bool) -> _Resolved:
    build = planner.spec.build(name)
    options = build.options_dict()
    what = f"{build.recipe.value} on {build.target.value}"
    target = f"build/{name}"
    of = "the new version" if version is None else f"version {version}"
    same = [
        b
        for b in planner.observed.builds
        if version is not None
        and b.version == version
        and b.recipe == build.recipe.value
        and b.target == build.target.value
        and b.options == options
        and not (b.status == "failed" and (b.error or "").startswith(NEVER_QUEUED))
    ]
    live = [b for b in same if b.status != "failed"]
    if live:
        found = live[-1]
        planner.add(
            Kind.BUILD,
            target,
            f"{found.id}: {what} of {of}, {found.status}",
            False,
            build=name,
            build_id=found.id,
            version=version,
        )
        state = "succeeded" if found.status == "succeeded" else "pending"
        return _Resolved(found.id, state)
    if same and not retry_failed:
        failed = same[-1]
        planner.add(
            Kind.BUILD_FAILED,
            target,
            f"{failed.id}: {what} of {of} failed ({failed.error or 'no reason recorded'}); "
            "not rebuilt from the same inputs: change the model, recipe, target or options, "
            "or apply with --retry-failed",
            False,
            build=name,
            build_id=failed.id,
            version=version,
        )
        return _Resolved(failed.id, "failed", failed.error)
    given = build.options.model_dump(exclude_none=True, by_alias=True, mode="json")
    extra = f" ({', '.join(f'{k}={v}' for k, v in given.items())})" if given else ""
    if same:
        extra += f", again: {same[-1].id} failed"
    planner.add(
        Kind.CREATE_BUILD, target, f"{what} of {of}{extra}", True, build=name, version=version
    )
    return _Resolved(None, "new")


def _deployment(planner: _Planner, spec: DeploymentSpec, resolved: dict[str, _Resolved]) -> None:
    observed = planner.observed
    wanted = resolved[spec.build]
    target = f"deployment/{spec.name}"
    refs: dict[str, Any] = {"build": spec.build, "build_id": wanted.id, "deployment": spec.name}
    for intent in observed.intents:
        if intent.build_id != wanted.id:
            planner.add(
                Kind.CANCEL_INTENT,
                target,
                f"no longer {intent.action.value} build {intent.build_id} when it succeeds "
                f"(the spec wants build {spec.build})",
                True,
                deployment=spec.name,
                build_id=intent.build_id,
                intent_id=intent.id,
            )
    current = observed.deployment
    if wanted.state == "failed":
        planner.add(
            Kind.BLOCKED,
            target,
            f"build {spec.build} ({wanted.id}) failed: nothing to deploy",
            False,
            **refs,
        )
    elif current is None:
        _change(
            planner, spec, wanted, IntentAction.DEPLOY, f"create {spec.name} serving {{}}", refs
        )
    elif current.build_id == wanted.id:
        planner.add(
            Kind.DEPLOYMENT, target, f"serves build {spec.build} ({wanted.id})", False, **refs
        )
    else:
        _replace(planner, spec, wanted, current, refs)
    if current is not None:
        _scaling(planner, spec, current)
        _drift(planner, spec, current)


def _replace(
    planner: _Planner,
    spec: DeploymentSpec,
    wanted: _Resolved,
    current: DeploymentState,
    refs: dict[str, Any],
) -> None:
    """A deployment serving another build: a rollout (local mode, when the spec has
    one) or a deploy in its place."""
    target = f"deployment/{spec.name}"
    rollouts = planner.observed.rollouts
    running = next((r for r in rollouts if r.running), None)
    if running is not None and wanted.id is not None and running.candidate_build_id == wanted.id:
        planner.add(
            Kind.ROLLOUT,
            target,
            f"rollout {running.id} of build {spec.build} ({wanted.id}) is {running.phase}",
            False,
            rollout_id=running.id,
            **refs,
        )
        return
    if running is not None:
        planner.add(
            Kind.BLOCKED,
            target,
            f"rollout {running.id} of build {running.candidate_build_id} is {running.phase}; "
            f"build {spec.build} is not deployed while it runs: let it end or abort it, "
            "then apply again",
            False,
            rollout_id=running.id,
            **refs,
        )
        return
    ended = next(
        (
            r
            for r in rollouts
            if wanted.id is not None
            and r.candidate_build_id == wanted.id
            and r.phase in FINISHED_BADLY
        ),
        None,
    )
    if ended is not None:
        planner.add(
            Kind.BLOCKED,
            target,
            f"rollout {ended.id} of build {spec.build} ({wanted.id}) ended {ended.phase}"
            + (f" ({ended.reason})" if ended.reason else "")
            + f"; {current.build_id} serves on and the same build is not rolled out again: "
            "change the model, recipe or options for a new build, or start a rollout by hand",
            False,
            rollout_id=ended.id,
            **refs,
        )
        return
    if spec.rollout is not None and not planner.observed.kubernetes:
        what = f"{spec.rollout.strategy} rollout of {{}} against {current.build_id}"
        _change(planner, spec, wanted, IntentAction.ROLLOUT, what, refs)
        return
    how = f"serve {{}} in place of {current.build_id}"
    if planner.observed.kubernetes:
        how += (
            " (the ModelDeployment's new spec.build; the operator rolls it out by its "
            "spec.rollout, the spec's rollout settings are not applied there)"
        )
    _change(planner, spec, wanted, IntentAction.DEPLOY, how, refs)


def _change(
    planner: _Planner,
    spec: DeploymentSpec,
    wanted: _Resolved,
    action: IntentAction,
    what: str,
    refs: dict[str, Any],
) -> None:
    """Deploy or start a rollout now (the build succeeded) or once it has (an intent);
    ``what`` says it with ``{}`` for the build."""
    kind = Kind.DEPLOY if action is IntentAction.DEPLOY else Kind.START_ROLLOUT
    target = f"deployment/{spec.name}"
    refs = {**refs, "then": action}
    build = f"build {spec.build}" + (f" ({wanted.id})" if wanted.id else "")
    tail = ""
    if kind is Kind.DEPLOY and planner.observed.deployment is None:
        tail += _scaling_words(spec)
        if spec.drift is not None:
            tail += f", drift policy {', '.join(a.value for a in spec.drift.actions)}"
    if wanted.state == "succeeded":
        planner.add(kind, target, what.format(build) + tail, True, **refs)
        return
    waiting = next(
        (
            i
            for i in planner.observed.intents
            if wanted.id is not None and i.build_id == wanted.id and i.action is action
        ),
        None,
    )
    if waiting is not None:
        planner.add(
            Kind.WAIT_FOR_BUILD,
            target,
            f"{what} {build}{tail} once it succeeds (waiting)",
            False,
            intent_id=waiting.id,
            after_build=True,
            **refs,
        )
        return
    planner.add(
        kind,
        target,
        f"once {build} succeeds: {what.format('it')}{tail}",
        True,
        after_build=True,
        **refs,
    )


def desired_scaling(spec: DeploymentSpec) -> tuple[int, int, dict[str, Any]]:
    """min, max replicas and the autoscale settings as ``services.deployments.deploy``
    keeps them when the spec sets any scale field."""
    low = spec.replicas or 1
    high = spec.max_replicas if spec.max_replicas is not None else low
    autoscale: dict[str, Any] = {}
    if spec.target_inflight:
        window = spec.scale_down_stabilization_window_seconds
        autoscale = {
            "target_inflight": spec.target_inflight,
            "scale_down_stabilization_window_seconds": 30.0 if window is None else window,
        }
    return low, high, autoscale


def _scaling_words(spec: DeploymentSpec) -> str:
    """ ", <the spec's scaling>" for a deploy's detail; "" when the spec sets none."""
    return f", {replicas_words(*desired_scaling(spec))}" if spec.sets_scaling else ""


def replicas_words(low: int, high: int, autoscale: dict[str, Any] | None) -> str:
    """Scaling in words: "2 replicas", "1-3 replicas at 2 in flight each (scale down
    after 30 s)"."""
    words = f"{low} replica{'s' if low != 1 else ''}" if low == high else f"{low}-{high} replicas"
    if autoscale:
        words += f" at {autoscale['target_inflight']:g} in flight each"
        window = autoscale.get("scale_down_stabilization_window_seconds")
        if window is not None:
            words += f" (scale down after {window:g} s)"
    return words


def _scaling(planner: _Planner, spec: DeploymentSpec, current: DeploymentState) -> None:
    deploying_now = any(
        a.kind is Kind.DEPLOY and a.changed and not a.after_build for a in planner.actions
    )
    if not spec.sets_scaling or deploying_now:  # a deploy now sets the spec's scaling
        return
    low, high, autoscale = desired_scaling(spec)
    if (current.min_replicas, current.max_replicas, current.autoscale or {}) == (
        low,
        high,
        autoscale,
    ):
        return
    planner.add(
        Kind.UPDATE_SCALING,
        f"deployment/{spec.name}",
        f"from {replicas_words(current.min_replicas, current.max_replicas, current.autoscale)}"
        f" to {replicas_words(low, high, autoscale)}",
        True,
        deployment=spec.name,
        build_id=current.build_id,
    )


def _drift(planner: _Planner, spec: DeploymentSpec, current: DeploymentState) -> None:
    if spec.drift is None:
        return
    target = f"deployment/{spec.name}"
    if current.drift_policy is None:
        planner.add(
            Kind.SET_DRIFT_POLICY,
            target,
            "left as it is: with SHIPWAY_RUNTIME=kubernetes the drift policy is the "
            "ModelDeployment's spec.drift",
            False,
            deployment=spec.name,
        )
        return
    wanted = spec.drift.policy()
    have = current.drift_policy or {"actions": ["alert"], "webhook_url": None}
    if have != wanted:
        planner.add(
            Kind.SET_DRIFT_POLICY,
            target,
            f"actions {', '.join(wanted['actions'])}"
            + (f", webhook {wanted['webhook_url']}" if wanted["webhook_url"] else ""),
            True,
            deployment=spec.name,
        )
