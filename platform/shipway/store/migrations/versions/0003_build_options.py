"""build options (calibration method, accuracy threshold, FP32 layer budget)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("options")
