"""rollout status: the controller's whole memory in one JSON column; frozen setting names

The rollout controller moved into ``shipway.rollout`` (shared with the Kubernetes
operator), and a rollout's memory became one document, ``RolloutStatus``: the
``state``, ``metrics``, ``converged`` and ``phase`` columns fold into ``status``. Specs
are rewritten with the names the CRD freezes (``steps`` -> ``step_weights``...).
Both ways: a downgrade unfolds the columns and restores the old names.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 07:30:00
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# copied, not imported: a migration is a snapshot of its day
CANARY_NAMES = {
    "steps": "step_weights",
    "interval_s": "interval_seconds",
    "failure_threshold": "failure_limit",
    "max_unavailable": "consecutive_error_limit",
    "max_inconclusive": "inconclusive_limit",
    "progress_deadline_s": "progress_deadline_seconds",
    "bake_s": "bake_seconds",
}
EXPERIMENT_NAMES = {"interval_s": "interval_seconds", "max_duration_s": "max_duration_seconds"}
STATUS_VERSION = 1


def _rename(spec: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in spec.items()}


def _names(strategy: str) -> dict[str, str]:
    return CANARY_NAMES if strategy == "canary" else EXPERIMENT_NAMES


def _epoch(at: datetime | str) -> float:
    if isinstance(at, str):  # SQLite without type affinity
        at = datetime.fromisoformat(at)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _table(*columns: sa.Column[Any]) -> sa.TableClause:
    return sa.table(
        "rollouts",
        sa.column("id", sa.String),
        sa.column("strategy", sa.String),
        sa.column("variant", sa.String),
        sa.column("candidate_build_id", sa.String),
        sa.column("stable_build_id", sa.String),
        sa.column("spec", sa.JSON),
        sa.column("active_key", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        *columns,
    )


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("status", sa.JSON(), nullable=True))
    old = _table(
        sa.column("state", sa.JSON),
        sa.column("metrics", sa.JSON),
        sa.column("converged", sa.String),
        sa.column("phase", sa.String),
        sa.column("status", sa.JSON),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(old)).mappings().all():
        status = {
            "version": STATUS_VERSION,
            "strategy": row["strategy"],
            "variant": row["variant"],
            "candidate_build": row["candidate_build_id"],
            "stable_build": row["stable_build_id"],
            "created_at": _epoch(row["created_at"]),
            "phase": row["phase"],
            "state": row["state"],
            "counters": dict(row["metrics"] or {}),
            "converged": row["converged"],
            "finished": row["active_key"] is None,
        }
        spec = _rename(dict(row["spec"] or {}), _names(row["strategy"]))
        connection.execute(
            old.update().where(old.c.id == row["id"]).values(status=status, spec=spec)
        )
    with op.batch_alter_table("rollouts") as batch:
        batch.alter_column("status", existing_type=sa.JSON(), nullable=False)
        for name in ("state", "metrics", "converged", "phase"):
            batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("state", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("phase", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("converged", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
    new = _table(
        sa.column("status", sa.JSON),
        sa.column("state", sa.JSON),
        sa.column("metrics", sa.JSON),
        sa.column("converged", sa.String),
        sa.column("phase", sa.String),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(new)).mappings().all():
        status = dict(row["status"] or {})
        back = {new_name: old_name for old_name, new_name in _names(row["strategy"]).items()}
        connection.execute(
            new.update()
            .where(new.c.id == row["id"])
            .values(
                state=status.get("state"),
                phase=status.get("phase", "failed"),
                converged=status.get("converged"),
                metrics=status.get("counters") or {},
                spec=_rename(dict(row["spec"] or {}), back),
            )
        )
    with op.batch_alter_table("rollouts") as batch:
        batch.alter_column("phase", existing_type=sa.String(length=24), nullable=False)
        batch.alter_column("metrics", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("status")
