"""``shipway apply``: make the platform match a ``shipway.yaml``, idempotently.

``apply`` parses the spec (``shipway.gitops.spec``), reads the files it names, observes
what the platform holds, plans (``shipway.gitops.plan``, where the idempotence rules
live) and carries the plan out through the services every other write goes through
(``models.register``, ``builds.create``, ``deployments.deploy``, ``rollouts.start``,
``drift.set_policy``), so their checks and audit events apply unchanged.

Nothing is written before everything that can be checked is: the spec (field and
line), the files (each named by its path when missing), the candidate's signature
against the serving build's clients, a webhook drift policy's secret; registration
then validates the model before its own first write. A later step that fails (the
broker down, say) leaves the earlier ones, and the next apply goes on from there:
applying is level-triggered.

A deploy or rollout that needs a build to succeed first is an *intent* (a row of
``gitops_intents``): the API process's intent loop (``run``, started in the API's
lifespan as the rollout controller is) carries it out once the build has finished, with
no client connected; a failed build fails its intents, naming the build's error.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from shipway import audit
from shipway.builds import recipes
from shipway.container import Container
from shipway.errors import Conflict, InvalidInput, NotFound, ShipwayError
from shipway.gitops.plan import (
    Action,
    BuildState,
    DeploymentState,
    Files,
    IntentAction,
    IntentState,
    Kind,
    Observed,
    Plan,
    RolloutState,
    VersionState,
    make_plan,
)
from shipway.gitops.spec import SPEC_NAME, DeploymentSpec, ReleaseSpec, parse, where
from shipway.rollout.status import RolloutStatus
from shipway.store.models import (
    AppliedSpec,
    Build,
    BuildStatus,
    GitopsIntent,
    IntentStatus,
    ModelVersion,
    Rollout,
)

log = logging.getLogger(__name__)

SAMPLE_TAG = "shipway.sample_sha256"
CALIBRATION_TAG = "shipway.calibration_sha256"
ROLLOUT_HISTORY = 20  # rollouts of the deployment the plan looks at, newest first
STALE_CLAIM = timedelta(minutes=10)  # far longer than a deploy or a rollout start takes
LOCK_SECONDS = 60.0  # how long an apply waits for another apply of the same model
LOCK_POLL_SECONDS = 0.2
_APPLYING = threading.Lock()  # an in-memory SQLite store: one process only


@dataclass(frozen=True)
class SpecSource:
    """A spec and its files: ``read(path)`` returns a file's bytes (path relative to the
    spec, as the spec writes it) or raises ``InvalidInput`` naming the path; ``origin``
    says where it came from ("cli", "git:<sha>", "mlflow:<delivery>"); ``name`` is the
    spec file's name as its author knows it, which every spec error starts with
    (``int8.yaml line 9: ...``; a push: the spec's path in the repository)."""

    text: str
    read: Callable[[str], bytes]
    origin: str
    name: str = SPEC_NAME


# ---- apply ----------------------------------------------------------------------------


def apply(
    container: Container,
    source: SpecSource,
    *,
    dry_run: bool,
    actor: str,
    retry_failed: bool = False,
    wait_seconds: float = LOCK_SECONDS,
) -> Plan:
    """Plan the spec against the platform and, unless ``dry_run``, carry the plan out;
    ``retry_failed`` queues a failed build of the same inputs again.

    Raises ``InvalidInput`` (a spec error naming field and line, a missing or unusable
    file naming its path) or ``Conflict`` (the candidate would break the serving build's
    clients; another apply of the model still runs after ``wait_seconds``) before
    anything is written."""
    spec = parse(source.text, source.name)
    contents = _read_files(spec, source)
    files = Files(
        _sha256(contents["model.onnx"]),
        _sha256(contents["model.sample"]),
        _sha256(contents["model.calibration"]) if "model.calibration" in contents else None,
    )
    with _exclusive(container, spec.model.name, wait_seconds):
        plan = make_plan(
            spec,
            observe(container, spec),
            files=files,
            dry_run=dry_run,
            retry_failed=retry_failed,
        )
        _preflight(container, spec, source, plan, contents)
        if dry_run:
            return plan
        return _execute(container, spec, source, plan, actor, contents)


def builds_for_version(container: Container, model: str, version: int, *, actor: str) -> Plan:
    """Queue the builds the last applied spec of ``model`` asks for, for ``version``
    (a version Shipway holds), and whatever follows from the spec's deployment; an
    existing non-failed build of the same version/recipe/target/options is reused.

    ``NotFound`` when no spec was applied for the model, or it has no such version."""
    stored = _stored(container, model)
    if stored is None:
        raise NotFound(f"no shipway.yaml was applied for model {model!r}")
    from shipway.services.models import get_version

    get_version(container, model, version)
    spec = parse(stored.text, SPEC_NAME)
    with _exclusive(container, model):
        plan = make_plan(spec, observe(container, spec), version=version)
        source = SpecSource(stored.text, _no_files, f"version:{model}/{version}")
        _preflight(container, spec, source, plan, {})
        return _execute(container, spec, source, plan, actor, {})


@contextmanager
def _exclusive(
    container: Container, model: str, wait_seconds: float = LOCK_SECONDS
) -> Iterator[None]:
    """One apply (or intent carried out) of a model at a time: two applies at once (a
    push and a CLI apply) would both find no version with the files and register two,
    and an intent carried out during an apply could undo it.

    Waits up to ``wait_seconds`` for the model's lock, polling, then raises ``Conflict``
    (409) rather than queueing without bound. Across processes on PostgreSQL (a
    session-level advisory lock keyed by the model) and on a SQLite file (``flock`` on a
    file beside the database: ``shipway up`` runs the API and the worker as separate
    processes); an in-memory SQLite store has one process, a thread lock is enough."""
    deadline = time.monotonic() + wait_seconds
    engine = container.db.engine
    if engine.dialect.name == "postgresql":
        lock = _advisory_lock(container, model, deadline)
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock = _file_lock(Path(str(engine.url.database)), model, deadline)
    else:
        lock = _thread_lock(model, deadline)
    with lock:
        yield


class Busy(Conflict):
    """Another apply of the model held its lock for longer than the caller would wait.
    A 409 to a client; a webhook's task tries again later (``retriable``)."""

    retriable = True


def _busy(model: str) -> Busy:
    return Busy(f"another apply of model {model!r} is running; try again")


def _lock_key(model: str) -> bytes:
    return hashlib.sha256(f"shipway.gitops.apply:{model}".encode()).digest()


def _wait(model: str, deadline: float) -> None:
    """Sleep before the next try, or raise ``Conflict`` once the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _busy(model)
    time.sleep(min(LOCK_POLL_SECONDS, left))


@contextmanager
def _advisory_lock(container: Container, model: str, deadline: float) -> Iterator[None]:
    """``pg_try_advisory_lock`` on an autocommit connection (never idle in a
    transaction, which ``idle_in_transaction_session_timeout`` would end); a waiting
    apply holds no pooled connection between tries."""
    key = int.from_bytes(_lock_key(model)[:8], "big", signed=True)
    engine = container.db.engine.execution_options(isolation_level="AUTOCOMMIT")
    while True:
        with engine.connect() as connection:
            if connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                return
        _wait(model, deadline)


@contextmanager
def _file_lock(database: Path, model: str, deadline: float) -> Iterator[None]:
    """``flock`` on ``<database>.locks/gitops-<model hash>.lock``: held by an open file,
    so threads and processes exclude each other alike, and a process that dies lets go."""
    folder = database.with_name(database.name + ".locks")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"gitops-{_lock_key(model).hex()[:32]}.lock", "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                _wait(model, deadline)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _thread_lock(model: str, deadline: float) -> Iterator[None]:
    if not _APPLYING.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise _busy(model)
    try:
        yield
    finally:
        _APPLYING.release()


def last_applied(container: Container, model: str) -> ReleaseSpec | None:
    """The spec last applied for ``model`` (None: never)."""
    stored = _stored(container, model)
    return None if stored is None else parse(stored.text, SPEC_NAME)


def _stored(container: Container, model: str) -> AppliedSpec | None:
    with container.db.session() as session:
        return session.scalar(select(AppliedSpec).where(AppliedSpec.model == model))


def _no_files(path: str) -> bytes:
    raise InvalidInput(f"{path}: files are not read for a registered version")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_files(spec: ReleaseSpec, source: SpecSource) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for field, path in spec.files().items():
        try:
            contents[field] = source.read(path)
        except InvalidInput:
            raise
        except OSError as exc:
            raise InvalidInput(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    return contents


# ---- observing ------------------------------------------------------------------------


def observe(container: Container, spec: ReleaseSpec) -> Observed:
    """What the platform holds for the spec's model and deployment."""
    model = spec.model.name
    name = spec.deployment.name if spec.deployment else None
    with container.db.session() as session:
        versions = tuple(
            VersionState(
                v.version,
                v.onnx_sha256,
                (v.tags or {}).get(SAMPLE_TAG),
                (v.tags or {}).get(CALIBRATION_TAG),
            )
            for v in session.scalars(
                select(ModelVersion)
                .where(ModelVersion.name == model)
                .order_by(ModelVersion.version)
            )
        )
        builds = tuple(
            BuildState(
                b.id,
                b.model_version.version,
                b.recipe,
                b.target,
                _stored_options(b.options),
                b.status,
                b.error,
            )
            for b in session.scalars(
                select(Build)
                .join(ModelVersion, Build.model_version_id == ModelVersion.id)
                .where(ModelVersion.name == model)
                .order_by(Build.created_at, Build.id)
            )
        )
        rollouts: tuple[RolloutState, ...] = ()
        intents: tuple[IntentState, ...] = ()
        if name is not None:
            rollouts = tuple(
                RolloutState(
                    r.id,
                    r.candidate_build_id,
                    r.active_key is not None,
                    r.phase,
                    RolloutStatus.from_dict(r.status).reason,
                )
                for r in session.scalars(
                    select(Rollout)
                    .where(Rollout.deployment == name)
                    .order_by(Rollout.created_at.desc())
                    .limit(ROLLOUT_HISTORY)
                )
            )
            intents = tuple(
                IntentState(i.id, i.deployment, i.build_id, IntentAction(i.action))
                for i in session.scalars(
                    select(GitopsIntent)
                    .where(
                        GitopsIntent.deployment == name,
                        GitopsIntent.status.in_([IntentStatus.PENDING, IntentStatus.RUNNING]),
                    )
                    .order_by(GitopsIntent.id)
                )
            )
    deployment = _deployment_state(container, name) if name else None
    return Observed(
        versions, builds, deployment, rollouts, intents, kubernetes=container.kubernetes_mode
    )


def _deployment_state(container: Container, name: str) -> DeploymentState | None:
    from shipway.services import deployments

    try:
        found: Any = deployments.get(container, name)
    except NotFound:
        return None
    stable = next((v for v in found.variants if v.name == deployments.STABLE), None)
    low = stable.min_replicas if stable else 1
    high = stable.max_replicas if stable else low
    policy = None if container.kubernetes_mode else dict(found.drift_policy or {})
    return DeploymentState(found.name, found.build_id, low, high, dict(found.autoscale), policy)


# ---- checks before any write -------------------------------------------------------


def _preflight(
    container: Container,
    spec: ReleaseSpec,
    source: SpecSource,
    plan: Plan,
    contents: dict[str, bytes],
) -> None:
    """What would fail half-way through is refused now, before the first write."""
    deployment = spec.deployment
    if deployment is None:
        return
    if (
        deployment.drift is not None
        and "webhook" in deployment.drift.policy()["actions"]
        and not container.settings.webhook_secret
        and not container.kubernetes_mode
    ):
        raise InvalidInput(
            f"{where(source.text, source.name, ('deployment', 'drift', 'actions'))}: a webhook "
            "action needs SHIPWAY_WEBHOOK_SECRET set on the server; nothing was applied"
        )
    replacing = [
        a for a in plan.actions if a.changed and a.kind in (Kind.DEPLOY, Kind.START_ROLLOUT)
    ]
    observed = _serving_signature(container, deployment.name)
    if not replacing or observed is None or deployment.allow_signature_change:
        return
    candidate = _candidate_signature(container, spec, source, plan, contents)
    if candidate is None:
        return
    from shipway.registry.compatibility import breaking_changes
    from shipway.registry.signature import Signature

    changes = breaking_changes(Signature.from_dict(observed), candidate)
    if changes:
        raise Conflict(
            f"deployment {deployment.name!r}: build {deployment.build} would break clients of "
            "the build serving now: " + "; ".join(changes) + ". If the change is intended, "
            "set deployment.allowSignatureChange: true; nothing was applied"
        )


def _serving_signature(container: Container, name: str) -> dict[str, Any] | None:
    """The signature of the version the deployment serves now (None: no deployment)."""
    state = _deployment_state(container, name)
    if state is None:
        return None
    with container.db.session() as session:
        build = session.get(Build, state.build_id)
        return None if build is None else dict(build.model_version.signature)


def _candidate_signature(
    container: Container,
    spec: ReleaseSpec,
    source: SpecSource,
    plan: Plan,
    contents: dict[str, bytes],
) -> Any:
    from shipway.registry.signature import Signature, load_model, read_signature

    version = next((a.version for a in plan.actions if a.kind is Kind.VERSION), None)
    if version is None and "model.onnx" in contents:
        try:
            return read_signature(load_model(contents["model.onnx"]))
        except InvalidInput as exc:
            raise InvalidInput(_file_error(spec, source, str(exc))) from None
    if version is None:
        return None
    with container.db.session() as session:
        row = session.scalar(
            select(ModelVersion).where(
                ModelVersion.name == spec.model.name, ModelVersion.version == version
            )
        )
        return None if row is None else Signature.from_dict(row.signature)


# ---- carrying the plan out ----------------------------------------------------------


def _execute(
    container: Container,
    spec: ReleaseSpec,
    source: SpecSource,
    plan: Plan,
    actor: str,
    contents: dict[str, bytes],
) -> Plan:
    from shipway.services import builds, models

    model = spec.model.name
    version = next((a.version for a in plan.actions if a.version is not None), None)
    built: dict[str, str] = {}
    done: list[Action] = []
    for action in plan.actions:
        if action.kind is Kind.REGISTER_VERSION:
            tags = {**spec.model.tags, SAMPLE_TAG: _sha256(contents["model.sample"])}
            if "model.calibration" in contents:
                tags[CALIBRATION_TAG] = _sha256(contents["model.calibration"])
            try:
                row = models.register(
                    container,
                    models.Registration(
                        model,
                        contents["model.onnx"],
                        contents["model.sample"],
                        tags,
                        contents.get("model.calibration"),
                    ),
                    actor,
                )
            except InvalidInput as exc:  # registration checks before its first write
                raise InvalidInput(_file_error(spec, source, str(exc))) from None
            version = row.version
            action = replace(action, version=version, detail=f"version {version}: {action.detail}")
        elif action.kind is Kind.CREATE_BUILD:
            assert action.build is not None and version is not None
            wanted = spec.build(action.build)
            build = builds.create(
                container,
                model,
                version,
                wanted.recipe.value,
                wanted.target.value,
                actor,
                wanted.options.model_dump(exclude_none=True, mode="json"),
            )
            built[action.build] = build.id
            action = replace(action, build_id=build.id, version=version)
        elif action.kind is Kind.CANCEL_INTENT:
            _cancel(container, action, actor)
        elif action.kind in (Kind.DEPLOY, Kind.START_ROLLOUT):
            assert spec.deployment is not None and action.build is not None
            build_id = action.build_id or built[action.build]
            action = replace(action, build_id=build_id)
            if action.after_build:
                intent = _intend(container, spec, action, source.origin, actor)
                action = replace(action, intent_id=intent)
            else:
                action = replace(
                    action, rollout_id=_carry_out(container, spec.deployment, action, actor)
                )
        elif action.kind is Kind.UPDATE_SCALING:
            assert spec.deployment is not None and action.build_id is not None
            _deploy(container, spec.deployment, action.build_id, actor, scaling_only=True)
        elif action.kind is Kind.SET_DRIFT_POLICY:
            assert spec.deployment is not None and spec.deployment.drift is not None
            from shipway.services import drift

            drift.set_policy(container, spec.deployment.name, spec.deployment.drift.policy(), actor)
        done.append(action)
    result = replace(plan, actions=tuple(done))
    _record(container, spec, source, result, actor)
    for action in result.actions:
        if action.intent_id is not None and action.after_build:
            _carry_out_claimed(container, action.intent_id)  # its build may be over already
    return result


def _file_error(spec: ReleaseSpec, source: SpecSource, message: str) -> str:
    """Registration's refusal of the spec's files, starting with the field (and line)
    naming the file it is about: the sample's or calibration's when it says so."""
    field = "onnx"
    if "calibration" in message and spec.model.calibration is not None:
        field = "calibration"
    elif "sample" in message:
        field = "sample"
    path = getattr(spec.model, field)
    return f"{where(source.text, source.name, ('model', field))} ({path}): {message}"


def _record(
    container: Container, spec: ReleaseSpec, source: SpecSource, plan: Plan, actor: str
) -> None:
    """Keep the spec (for the registry trigger) and audit the apply: only when something
    changed, so a second apply of the same spec writes nothing."""
    digest = _sha256(source.text.encode())
    with container.db.session() as session:
        stored = session.scalar(select(AppliedSpec).where(AppliedSpec.model == spec.model.name))
        text_changed = stored is None or stored.sha256 != digest
        if stored is None:
            stored = AppliedSpec(model=spec.model.name, text="", sha256="", origin="", actor="")
            session.add(stored)
        if text_changed:
            stored.text, stored.sha256 = source.text, digest
            stored.origin, stored.actor = source.origin[:300], actor
        if not (plan.changed or text_changed):
            return
        audit.record(
            session,
            actor,
            "gitops.apply",
            f"model/{spec.model.name}",
            origin=source.origin,
            spec_sha256=digest,
            actions=[
                {"kind": a.kind.value, "target": a.target, "detail": a.detail}
                for a in plan.actions
                if a.changed
            ],
        )


def _deploy(
    container: Container,
    spec: DeploymentSpec,
    build_id: str,
    actor: str,
    *,
    scaling_only: bool = False,
) -> None:
    from shipway.services import deployments, drift

    new = scaling_only is False and _deployment_state(container, spec.name) is None
    scale = deployments.Scale(spec.replicas or 1, spec.max_replicas) if spec.sets_scaling else None
    deployments.deploy(
        container,
        spec.name,
        build_id,
        actor,
        scale,
        spec.target_inflight,
        spec.scale_down_stabilization_window_seconds,
        spec.allow_signature_change,
    )
    if new and spec.drift is not None and not container.kubernetes_mode:
        drift.set_policy(container, spec.name, spec.drift.policy(), actor)


def _carry_out(
    container: Container, spec: DeploymentSpec, action: Action, actor: str
) -> str | None:
    """Deploy or start the rollout of a succeeded build; the rollout's id, if one."""
    assert action.build_id is not None
    if action.kind is Kind.DEPLOY:
        _deploy(container, spec, action.build_id, actor)
        return None
    from shipway.services import rollouts

    assert spec.rollout is not None
    rollout = rollouts.start(
        container,
        container.rollout_ports,
        spec.name,
        action.build_id,
        actor,
        spec.rollout.strategy,
        spec.rollout.engine_settings(),
        spec.allow_signature_change,
    )
    return rollout.id


# ---- intents --------------------------------------------------------------------------


def _intend(
    container: Container, spec: ReleaseSpec, action: Action, origin: str, actor: str
) -> int:
    assert spec.deployment is not None and action.build_id is not None
    kind = IntentAction.DEPLOY if action.kind is Kind.DEPLOY else IntentAction.ROLLOUT
    with container.db.session() as session:
        intent = GitopsIntent(
            model=spec.model.name,
            deployment=spec.deployment.name,
            build_id=action.build_id,
            action=kind.value,
            params=spec.deployment.model_dump(mode="json", by_alias=True, exclude_none=True),
            origin=origin[:300],
            actor=actor,
        )
        session.add(intent)
        session.flush()
        audit.record(
            session,
            actor,
            "gitops.intent",
            f"deployment/{spec.deployment.name}",
            intent=intent.id,
            intent_action=kind.value,
            build=action.build_id,
            origin=origin,
        )
        return intent.id


def _cancel(container: Container, action: Action, actor: str) -> None:
    with container.db.session() as session:
        intent = session.get(GitopsIntent, action.intent_id)
        if intent is None or intent.status != IntentStatus.PENDING:
            return
        intent.status, intent.message = IntentStatus.CANCELLED, "superseded by a later apply"
        audit.record(
            session,
            actor,
            "gitops.intent.cancelled",
            f"deployment/{intent.deployment}",
            intent=intent.id,
            build=intent.build_id,
        )


def carry_out_intent(container: Container, intent_id: int) -> str | None:
    """Carry out one pending intent if its build has finished: deploy or start the
    rollout when it succeeded, fail the intent (naming the build's error) when it
    failed. Returns the intent's status after (None: it was not pending).

    Under the model's apply lock, not waiting for it: an apply running now may cancel
    the intent, and carrying it out meanwhile would undo that apply's deploy; the next
    pass (or that apply, at its end) comes back to it."""
    with container.db.session() as session:
        intent = session.get(GitopsIntent, intent_id)
        if intent is None or intent.status != IntentStatus.PENDING:
            return None
        model = intent.model
    try:
        with _exclusive(container, model, wait_seconds=0):
            return _carry_out_claimed(container, intent_id)
    except Busy:
        return IntentStatus.PENDING.value


def _carry_out_claimed(container: Container, intent_id: int) -> str | None:
    """``carry_out_intent`` with the model's lock held by the caller.

    Claimed with a conditional update (pending -> running), so the intent loops of
    several API processes carry it out once. Idempotent, since a claim that outlived
    its process is pending again (``process_intents``): a deployment already serving the
    build, or a rollout of the build started since the intent was made (running or
    over: a rolled-back one is not started again) ends it done."""
    with container.db.session() as session:
        intent = session.get(GitopsIntent, intent_id)
        if intent is None or intent.status != IntentStatus.PENDING:
            return None
        build = session.get(Build, intent.build_id)
        status = build.status if build is not None else BuildStatus.FAILED
        if status not in (BuildStatus.SUCCEEDED, BuildStatus.FAILED):
            return str(intent.status)
        claimed = session.execute(
            update(GitopsIntent)
            .where(GitopsIntent.id == intent_id, GitopsIntent.status == IntentStatus.PENDING)
            .values(status=IntentStatus.RUNNING)
        ).rowcount
        error = build.error if build is not None else "the build no longer exists"
        params, action = dict(intent.params), IntentAction(intent.action)
        build_id, actor = intent.build_id, f"gitops:{intent.actor}"[:100]
        since = intent.created_at
    if not claimed:
        return None
    if status == BuildStatus.FAILED:
        return _finish(
            container, intent_id, IntentStatus.FAILED, f"build {build_id} failed: {error}"
        )
    spec = DeploymentSpec.model_validate(params)
    kind = Kind.DEPLOY if action is IntentAction.DEPLOY else Kind.START_ROLLOUT
    try:
        state = _deployment_state(container, spec.name)
        if state is not None and state.build_id == build_id:
            return _finish(container, intent_id, IntentStatus.DONE, "already serving")
        running = _running_rollout(container, spec.name)
        if running is not None and running.candidate_build_id == build_id:
            return _finish(container, intent_id, IntentStatus.DONE, f"rollout {running.id} runs")
        started = _rollout_since(container, spec.name, build_id, since)
        if started is not None:
            message = f"rollout {started.id} was started ({started.phase})"
            return _finish(container, intent_id, IntentStatus.DONE, message)
        if state is None or spec.rollout is None or container.kubernetes_mode:
            kind = Kind.DEPLOY
        target = f"deployment/{spec.name}"
        rollout = _carry_out(
            container, spec, Action(kind, target, "", True, build_id=build_id), actor
        )
    except ShipwayError as exc:
        if exc.retriable:
            _finish(container, intent_id, IntentStatus.PENDING, f"retrying: {exc}")
            return IntentStatus.PENDING.value
        return _finish(container, intent_id, IntentStatus.FAILED, str(exc))
    what = f"rollout {rollout} started" if rollout else "deployed"
    return _finish(container, intent_id, IntentStatus.DONE, what)


def _rollout_since(
    container: Container, deployment: str, build_id: str, since: datetime
) -> Rollout | None:
    """The first rollout of ``build_id`` on ``deployment`` made at or after ``since``."""
    with container.db.session() as session:
        return session.scalar(
            select(Rollout)
            .where(
                Rollout.deployment == deployment,
                Rollout.candidate_build_id == build_id,
                Rollout.created_at >= since,
            )
            .order_by(Rollout.created_at)
            .limit(1)
        )


def _running_rollout(container: Container, deployment: str) -> Rollout | None:
    with container.db.session() as session:
        return session.scalar(select(Rollout).where(Rollout.active_key == deployment))


def _finish(container: Container, intent_id: int, status: IntentStatus, message: str) -> str:
    with container.db.session() as session:
        intent = session.get(GitopsIntent, intent_id)
        assert intent is not None
        intent.status, intent.message = status, message
        if status is not IntentStatus.PENDING:
            audit.record(
                session,
                f"gitops:{intent.actor}"[:100],
                f"gitops.intent.{status.value}",
                f"deployment/{intent.deployment}",
                intent=intent.id,
                intent_action=intent.action,
                build=intent.build_id,
                message=message,
            )
    if status is IntentStatus.FAILED:
        log.warning("gitops intent %s failed: %s", intent_id, message)
    return status.value


def get_intent(container: Container, intent_id: int) -> GitopsIntent:
    with container.db.session() as session:
        intent = session.get(GitopsIntent, intent_id)
        if intent is None:
            raise NotFound(f"intent {intent_id} does not exist")
        return intent


def process_intents(container: Container) -> int:
    """One pass: carry out every pending intent whose build has finished; how many.

    An intent claimed (running) for longer than ``STALE_CLAIM`` belongs to a process
    that died carrying it out: it is pending again (carrying out is idempotent: a
    deployment already serving the build, or a rollout of it running, ends it done)."""
    stale = datetime.now(UTC) - STALE_CLAIM
    with container.db.session() as session:
        session.execute(
            update(GitopsIntent)
            .where(GitopsIntent.status == IntentStatus.RUNNING, GitopsIntent.updated_at < stale)
            .values(status=IntentStatus.PENDING, message="claimed by a process that stopped")
        )
    with container.db.session() as session:
        ids = list(
            session.scalars(
                select(GitopsIntent.id)
                .join(Build, GitopsIntent.build_id == Build.id)
                .where(
                    GitopsIntent.status == IntentStatus.PENDING,
                    Build.status.in_([BuildStatus.SUCCEEDED, BuildStatus.FAILED]),
                )
                .order_by(GitopsIntent.id)
            )
        )
    for intent_id in ids:
        try:
            carry_out_intent(container, intent_id)
        except Exception:  # one bad intent must not stop the others
            log.exception("gitops intent %s failed a pass", intent_id)
    return len(ids)


def run(container: Container, stop: threading.Event, seconds: float) -> None:
    """The intent loop of the API process: a pass every ``seconds`` until ``stop``."""
    while not stop.wait(seconds):
        try:
            process_intents(container)
        except Exception:  # the store unreachable, say: the loop must outlive it
            log.exception("the gitops intent pass failed; retrying")


def _stored_options(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A build's options with today's defaults filled in, as the spec's are: a build
    stored before an option existed still matches a spec that leaves it out."""
    try:
        return recipes.BuildOptions.from_dict(stored).to_dict()
    except InvalidInput:  # options of a former version Shipway no longer reads: unequal
        return dict(stored or {})
