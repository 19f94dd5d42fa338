"""rollouts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("candidate_build_id", sa.String(length=32), nullable=False),
        sa.Column("stable_build_id", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("phase", sa.String(length=24), nullable=False),
        sa.Column("converged", sa.String(length=24), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("active_key", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["candidate_build_id"], ["builds.id"]),
        sa.ForeignKeyConstraint(["stable_build_id"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_key", name="uq_rollouts_active_key"),
    )
    op.create_index("ix_rollouts_deployment", "rollouts", ["deployment"])
    op.create_index("ix_audit_events_subject", "audit_events", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_subject", "audit_events")
    op.drop_index("ix_rollouts_deployment", "rollouts")
    op.drop_table("rollouts")
