"""drift policy per deployment

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 21:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("drift_policy", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("drift_policy")
