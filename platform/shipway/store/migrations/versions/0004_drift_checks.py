"""drift checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 20:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("min_p_adjusted", sa.Double(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_checks_at", "drift_checks", ["at"])
    op.create_index("ix_drift_checks_deployment", "drift_checks", ["deployment"])


def downgrade() -> None:
    op.drop_index("ix_drift_checks_deployment", "drift_checks")
    op.drop_index("ix_drift_checks_at", "drift_checks")
    op.drop_table("drift_checks")
