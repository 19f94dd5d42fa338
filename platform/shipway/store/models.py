"""Tables of the state store.

MLflow stays the source of truth for model files and build artifacts; these tables
hold what the control plane needs to act quickly: which versions exist, build
progress, what each deployment should serve, which replicas are up, and an audit
trail of every change.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class BuildStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeploymentStatus(StrEnum):
    PENDING = "pending"  # desired build changed; the runtime has not caught up
    READY = "ready"
    FAILED = "failed"


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # no new requests; stopped once in-flight ones are done
    FAILED = "failed"


class Split(StrEnum):
    WEIGHTED = "weighted"  # each request drawn by weight
    STICKY = "sticky"  # a hash of the request key picks the variant: same key, same arm


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    mlflow_run_id: Mapped[str] = mapped_column(String(64))
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[dict[str, Any]]
    tags: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Build(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    recipe: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=BuildStatus.QUEUED)
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    progress: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    artifact_path: Mapped[str | None] = mapped_column(String(500), default=None)
    triton_model_name: Mapped[str | None] = mapped_column(String(200), default=None)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model_version: Mapped[ModelVersion] = relationship(lazy="joined")


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))  # the stable build
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.PENDING)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    split: Mapped[str] = mapped_column(String(16), default=Split.WEIGHTED)
    sticky_header: Mapped[str] = mapped_column(String(100), default="x-shipway-key")
    # {"target_inflight": 2.0, "scale_down_stabilization_window_seconds": 30.0};
    # empty: fixed replica counts
    autoscale: Mapped[dict[str, Any]] = mapped_column(default=dict)
    drift_policy: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    build: Mapped[Build] = relationship(lazy="joined")
    variants: Mapped[list[Variant]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="Variant.name",
    )
    replicas: Mapped[list[Replica]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", lazy="selectin"
    )


class Variant(Base):
    """A build serving under a deployment: stable, a canary, an experiment arm, a shadow."""

    __tablename__ = "deployment_variants"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))
    weight: Mapped[int] = mapped_column(Integer, default=100)  # percent of live traffic
    shadow_share: Mapped[float] = mapped_column(default=0.0)  # share of requests mirrored
    min_replicas: Mapped[int] = mapped_column(Integer, default=1)
    max_replicas: Mapped[int] = mapped_column(Integer, default=1)
    desired_replicas: Mapped[int] = mapped_column(Integer, default=1)  # the autoscaler's
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="variants")
    build: Mapped[Build] = relationship(lazy="joined")


class Replica(Base):
    """One running inference server of a deployment variant, as the runtime reports it."""

    __tablename__ = "replicas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    variant: Mapped[str] = mapped_column(String(32), default="stable")
    build_id: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(300))
    triton_model_name: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    metrics_url: Mapped[str | None] = mapped_column(String(300), default=None)
    state: Mapped[str] = mapped_column(String(16), default=ReplicaState.STARTING)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="replicas")


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(300), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DriftCheck(Base):
    """One drift check of one variant's live window: the verdict and its evidence."""

    __tablename__ = "drift_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    deployment: Mapped[str] = mapped_column(String(200), index=True)
    variant: Mapped[str] = mapped_column(String(32))
    build_id: Mapped[str] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(default=0.0)
    min_p_adjusted: Mapped[float | None] = mapped_column(default=None)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Rollout(Base):
    """A candidate build on its way to stable: its settings (``spec``) and the rollout
    controller's whole memory (``status``: ``shipway.rollout.status.RolloutStatus`` as
    JSON, the document that is ``.status.rollout`` of a ModelDeployment on Kubernetes).
    Its timeline is the audit trail of ``rollout/<id>``.

    ``active_key`` holds the deployment's name while the rollout runs and NULL after: a
    unique column, so two concurrent starts on one deployment cannot both succeed.
    """

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    deployment: Mapped[str] = mapped_column(String(200), index=True)
    strategy: Mapped[str] = mapped_column(String(16))  # canary | experiment
    variant: Mapped[str] = mapped_column(String(32))  # the candidate's variant name
    candidate_build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))
    stable_build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"))
    spec: Mapped[dict[str, Any]]
    status: Mapped[dict[str, Any]]
    active_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    candidate: Mapped[Build] = relationship(foreign_keys=[candidate_build_id], lazy="joined")
    stable: Mapped[Build] = relationship(foreign_keys=[stable_build_id], lazy="joined")

    @property
    def phase(self) -> str:
        """The status's phase: initializing, shadowing, progressing, ... failed."""
        return str((self.status or {}).get("phase", ""))


class IntentStatus(StrEnum):
    PENDING = "pending"  # waiting for its build to finish
    RUNNING = "running"  # claimed by one process, being carried out
    DONE = "done"
    FAILED = "failed"  # its build failed, or the deploy/rollout was refused (message)
    CANCELLED = "cancelled"  # a later apply no longer wants it


class AppliedSpec(Base):
    """The last ``shipway.yaml`` applied per model (``shipway apply``, a Git push): what
    a registry trigger builds for a new version."""

    __tablename__ = "gitops_specs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), unique=True)
    text: Mapped[str] = mapped_column(Text)  # as written: errors name its lines
    sha256: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(300))  # cli, git:<sha>, mlflow:<delivery>
    actor: Mapped[str] = mapped_column(String(100))
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class GitopsIntent(Base):
    """ "Deploy (or start a rollout of) build X when it succeeds": kept so it happens with
    no client connected (the API process's intent loop carries it out). ``params`` is the
    spec's deployment section (camelCase, as written)."""

    __tablename__ = "gitops_intents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str] = mapped_column(String(200), index=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # deploy | rollout
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=IntentStatus.PENDING, index=True)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    origin: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # accepted; the worker has not finished it
    APPLIED = "applied"
    FAILED = "failed"
    IGNORED = "ignored"  # acknowledged: not an event Shipway acts on (``message`` says why)


class HookDelivery(Base):
    """One accepted webhook delivery (its signature was valid) and what it did.

    ``key`` is ``<provider>:<delivery id>``, unique: a replayed delivery, even two
    identical ones at once, finds the first one's row and applies nothing."""

    __tablename__ = "hook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    provider: Mapped[str] = mapped_column(String(16))  # github | gitlab | mlflow
    delivery_id: Mapped[str] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str | None] = mapped_column(String(300), default=None)
    commit: Mapped[str | None] = mapped_column(String(64), default=None)
    repository: Mapped[str | None] = mapped_column(String(300), default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    alias: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    message: Mapped[str | None] = mapped_column(Text, default=None)  # why ignored / failed
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
