"""operations: each trial's cost as columns (what /metrics sums), and the schedulers' presence
(what /readyz reads)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SECONDS = ("train_s", "probe_s")
_COUNTS = (
    "parent_lookups",
    "parent_hits",
    "probe_lookups",
    "probe_hits",
    "task_lookups",
    "task_hits",
)


def upgrade() -> None:
    for name in _SECONDS:
        op.add_column("hwnas_trials", sa.Column(name, sa.Float(), nullable=True))
    for name in _COUNTS:
        op.add_column("hwnas_trials", sa.Column(name, sa.Integer(), nullable=True))
    op.create_table(
        "hwnas_schedulers",
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ray_ok", sa.Boolean(), nullable=False),
        sa.Column("ray_detail", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_hwnas_schedulers")),
    )
    # the trials from before: their cost from the runs they recorded
    from service.costs import trial_cost

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, timings FROM hwnas_trials WHERE timings IS NOT NULL"))
    for trial_id, timings in rows.fetchall():
        runs = (json.loads(timings) if isinstance(timings, str) else timings).get("runs", [])
        cost = trial_cost(runs)
        sets = ", ".join(f"{k} = :{k}" for k in cost)
        conn.execute(
            sa.text(f"UPDATE hwnas_trials SET {sets} WHERE id = :id"), {**cost, "id": trial_id}
        )


def downgrade() -> None:
    op.drop_table("hwnas_schedulers")
    with op.batch_alter_table("hwnas_trials") as batch:
        for name in (*_SECONDS, *_COUNTS):
            batch.drop_column(name)
