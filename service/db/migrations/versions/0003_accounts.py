"""accounts: users, API tokens, the audit log, uploaded datasets; every job owned (existing
jobs go to the admin account)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    users = op.create_table(
        "hwnas_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("quota_exempt", sa.Boolean(), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_active_trials", sa.Integer(), nullable=True),
        sa.Column("max_storage_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hwnas_users")),
        sa.UniqueConstraint("name", name=op.f("uq_hwnas_users_name")),
    )
    op.create_table(
        "hwnas_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("last_used_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["hwnas_users.id"],
            name=op.f("fk_hwnas_tokens_user_id_hwnas_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hwnas_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_hwnas_tokens_secret_hash")),
    )
    op.create_index(op.f("ix_hwnas_tokens_user_id"), "hwnas_tokens", ["user_id"])
    op.create_table(
        "hwnas_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hwnas_audit")),
    )
    for col in ("at", "user_id", "action"):
        op.create_index(op.f(f"ix_hwnas_audit_{col}"), "hwnas_audit", [col])
    op.create_table(
        "hwnas_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["hwnas_users.id"],
            name=op.f("fk_hwnas_datasets_owner_id_hwnas_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hwnas_datasets")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_hwnas_datasets_owner_id")),
    )
    op.create_index(op.f("ix_hwnas_datasets_owner_id"), "hwnas_datasets", ["owner_id"])

    # The admin account (HWNAS_ADMIN_TOKEN acts as it); no explicit id, so PostgreSQL's
    # sequence stays in step.
    op.bulk_insert(
        users,
        [
            {
                "name": "admin",
                "is_admin": True,
                "quota_exempt": True,
                "created_at": datetime.now(UTC),
            }
        ],
    )
    admin = "(SELECT id FROM hwnas_users WHERE name = 'admin')"
    if op.get_bind().dialect.name == "sqlite":
        # ADD COLUMN keeps the table (a batch copy would drop hwnas_jobs, and with foreign keys
        # on, SQLite's implicit DELETE would cascade to every trial). SQLite allows a
        # REFERENCES column only with a NULL default: the ORM always sets the owner.
        op.execute("ALTER TABLE hwnas_jobs ADD COLUMN owner_id INTEGER REFERENCES hwnas_users (id)")
        op.execute(f"UPDATE hwnas_jobs SET owner_id = {admin}")
        # ... and NOT NULL by triggers, as ADD COLUMN cannot say it here
        for event in ("INSERT", "UPDATE OF owner_id"):
            name = f"hwnas_jobs_owner_required_{event.split()[0].lower()}"
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {event} ON hwnas_jobs "
                "WHEN NEW.owner_id IS NULL BEGIN "
                "SELECT RAISE(ABORT, 'NOT NULL constraint failed: hwnas_jobs.owner_id'); END"
            )
    else:
        op.add_column("hwnas_jobs", sa.Column("owner_id", sa.Integer(), nullable=True))
        op.execute(f"UPDATE hwnas_jobs SET owner_id = {admin}")
        op.alter_column("hwnas_jobs", "owner_id", nullable=False)
        op.create_foreign_key(
            op.f("fk_hwnas_jobs_owner_id_hwnas_users"),
            "hwnas_jobs",
            "hwnas_users",
            ["owner_id"],
            ["id"],
        )
    op.create_index(op.f("ix_hwnas_jobs_owner_id"), "hwnas_jobs", ["owner_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hwnas_jobs_owner_id"), table_name="hwnas_jobs")
    if op.get_bind().dialect.name == "sqlite":
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS hwnas_jobs_owner_required_{event}")
        op.execute("ALTER TABLE hwnas_jobs DROP COLUMN owner_id")
    else:
        op.drop_constraint(op.f("fk_hwnas_jobs_owner_id_hwnas_users"), "hwnas_jobs")
        op.drop_column("hwnas_jobs", "owner_id")
    op.drop_table("hwnas_datasets")
    op.drop_table("hwnas_audit")
    op.drop_table("hwnas_tokens")
    op.drop_table("hwnas_users")
