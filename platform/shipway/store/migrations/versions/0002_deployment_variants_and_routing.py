"""deployment variants and routing

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:11:25.200756
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_variants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("shadow_share", sa.Double(), nullable=False),
        sa.Column("min_replicas", sa.Integer(), nullable=False),
        sa.Column("max_replicas", sa.Integer(), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "name"),
    )
    with op.batch_alter_table("deployment_variants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deployment_variants_deployment_id"), ["deployment_id"], unique=False
        )

    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("split", sa.String(length=16), nullable=False, server_default="weighted")
        )
        batch_op.add_column(
            sa.Column(
                "sticky_header",
                sa.String(length=100),
                nullable=False,
                server_default="x-shipway-key",
            )
        )
        batch_op.add_column(sa.Column("autoscale", sa.JSON(), nullable=False, server_default="{}"))

    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("metrics_url", sa.String(length=300), nullable=True))

    # Every existing deployment serves its build as the one stable variant.
    op.execute(
        "INSERT INTO deployment_variants (deployment_id, name, build_id, weight, shadow_share,"
        " min_replicas, max_replicas, desired_replicas, updated_at)"
        " SELECT id, 'stable', build_id, 100, 0.0, 1, 1, 1, updated_at FROM deployments"
    )


def downgrade() -> None:
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_column("metrics_url")

    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("autoscale")
        batch_op.drop_column("sticky_header")
        batch_op.drop_column("split")

    with op.batch_alter_table("deployment_variants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_variants_deployment_id"))

    op.drop_table("deployment_variants")
