"""Migration 0003 (accounts) on a database that already holds jobs: every job goes to the admin
account, nothing else changes (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text

from service.db.migrate import upgrade
from service.db.session import get_engine, get_sessionmaker


def test_existing_jobs_go_to_the_admin_and_keep_their_trials(blank_db_url: str) -> None:
    url = blank_db_url
    upgrade(url, "0002")
    with get_engine(url).begin() as conn:
        for job_id in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO hwnas_jobs (id, name, status, spec, attempts, trials_complete, "
                    "trials_failed, created_at) VALUES (:id, 'old', 'succeeded', '{}', 1, 1, 0, "
                    "CURRENT_TIMESTAMP)"
                ),
                {"id": job_id},
            )
            conn.execute(
                text(
                    "INSERT INTO hwnas_trials (job_id, number, state, candidate, candidate_hash, "
                    "started_at) VALUES (:id, 0, 'complete', '{}', 'h', CURRENT_TIMESTAMP)"
                ),
                {"id": job_id},
            )
    upgrade(url)
    with get_sessionmaker(url)() as s:
        admin = s.execute(text("SELECT id, is_admin FROM hwnas_users WHERE name = 'admin'")).one()
        assert admin.is_admin
        owners = s.execute(text("SELECT id, owner_id FROM hwnas_jobs ORDER BY id")).all()
        assert [(r.id, r.owner_id) for r in owners] == [(1, admin.id), (2, admin.id)]
        # the trials survived (a table copy on SQLite would have cascaded their deletion)
        assert s.execute(text("SELECT count(*) FROM hwnas_trials")).scalar_one() == 2
        # a new account gets a fresh id (PostgreSQL's sequence is in step with the admin row)
        s.execute(
            text(
                "INSERT INTO hwnas_users (name, is_admin, quota_exempt, created_at) "
                "VALUES ('bob', false, false, CURRENT_TIMESTAMP)"
            )
        )
        s.commit()
        assert s.execute(text("SELECT count(*) FROM hwnas_users")).scalar_one() == 2
    upgrade(url)  # idempotent


def test_a_job_without_an_owner_is_refused(db_url: str) -> None:
    """NOT NULL on PostgreSQL, triggers on SQLite (whose ADD COLUMN cannot say it)."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from service.db.models import Job

    with get_sessionmaker(db_url)() as s:
        s.add(Job(spec={"budget": {"trials": 1}}))
        with pytest.raises(IntegrityError, match="owner_id"):
            s.commit()
