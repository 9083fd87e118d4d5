"""lease: a generation on each job's claim, so a scheduler that lost its claim writes nothing

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hwnas_jobs") as batch:
        batch.add_column(sa.Column("lease", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hwnas_jobs") as batch:
        batch.drop_column("lease")
