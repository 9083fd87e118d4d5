"""networks: uploaded trained models (a torch.export archive each, stored by its SHA-256)

Revision ID: 0006
Revises: 0005
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
        "hwnas_networks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["hwnas_users.id"],
            name=op.f("fk_hwnas_networks_owner_id_hwnas_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hwnas_networks")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_hwnas_networks_owner_id")),
    )
    op.create_index(op.f("ix_hwnas_networks_owner_id"), "hwnas_networks", ["owner_id"])
    op.create_index(op.f("ix_hwnas_networks_digest"), "hwnas_networks", ["digest"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hwnas_networks_digest"), table_name="hwnas_networks")
    op.drop_index(op.f("ix_hwnas_networks_owner_id"), table_name="hwnas_networks")
    op.drop_table("hwnas_networks")
