"""hook deliveries: each accepted GitHub, GitLab or MLflow webhook delivery and its outcome

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 13:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=True),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("repository", sa.String(length=300), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("alias", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_hook_deliveries_received_at", "hook_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_hook_deliveries_received_at", "hook_deliveries")
    op.drop_table("hook_deliveries")
