"""Run real jobs of the service's controller from a benchmark (no API, no scheduler process).

Each job is created in a benchmark database, claimed and run to its end by
:class:`JobController` with the Ray executor: Optuna ask/tell in the service database, trials as
Ray tasks that train, compress, fine-tune and TVM-probe each candidate.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from service.api.report import job_report
from service.db import accounts, crud
from service.db.migrate import upgrade
from service.db.models import Job, TrialState
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.executor import RayExecutor
from service.scheduler.study import get_storage, load_study, open_study
from service.schemas import JobSpec
from service.settings import Settings

log = logging.getLogger("bench.jobs")
PROFILE = "x86/local"


class Bench:
    """Jobs in ``root/bench.db``; artifacts per ``store`` name under ``root``. A shared
    ``tuning_dir`` (a pre-tuned database) is used by every job when given."""

    def __init__(self, root: Path, tuning_dir: Path | None = None) -> None:
        self.root, self.tuning_dir = root, tuning_dir
        self.url = f"sqlite:///{root / 'bench.db'}"
        upgrade(self.url)
        get_storage(self.url)
        self.executor = RayExecutor(self.settings("ray"))
        self.duplicates_trained = 0  # COMPLETE trials of a candidate the job had already

    def settings(self, name: str) -> Settings:
        # separate artifact dirs per store: each builds its own parent and probe caches
        return Settings(
            database_url=self.url,
            artifact_dir=self.root / name,
            tuning_dir=self.tuning_dir or self.root / name / "tuning",
            probe_cache_dir=self.root / name / "probe-cache",
            poll_interval_s=0.5,
            verify=False,  # search-time numbers (bench-fidelity measures what verification
            # changes)
        )

    def job(
        self,
        name: str,
        spec: dict[str, Any],
        store: str | None = None,
        enqueue: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run one job to its end: its trial rows, COMPLETE points, wall time and report.
        ``store`` names the artifact dir (parent and probe caches; default ``name``);
        ``enqueue`` lists parameter sets tried first."""
        sessions = get_sessionmaker(self.url)
        job_in = JobSpec.model_validate(spec)
        with sessions() as s:
            job = crud.create_job(
                session=s, job_in=job_in, owner_id=accounts.admin_user(session=s).id
            )
            claimed = claim_job(session=s, worker_id="bench", stale_after_s=3600)
            assert claimed is not None and claimed.id == job.id
            job_id = job.id
        if enqueue:
            study = open_study(self.url, job_id, job_in)
            for params in enqueue:
                study.enqueue_trial(params, user_attrs={"enqueued_by": "bench"})
        t0 = time.perf_counter()
        status = JobController(self.settings(store or name), self.executor, job_id, "bench").run()
        wall = time.perf_counter() - t0
        with sessions() as s:
            j = s.get(Job, job_id)
            assert j is not None
            if status.value != "succeeded":
                raise RuntimeError(f"{name}: job {job_id} ended {status.value}: {j.error}")
            rows, _ = crud.list_trials(session=s, job_id=job_id, skip=0, limit=100_000)
            report = job_report(job_id, rows).model_dump()
            started = j.started_at
            rows = [_row(r, started) for r in rows]
        study = load_study(self.url, job_id)
        params = {t.number: t.params for t in study.trials}
        warm = {t.number for t in study.trials if "warm_start_from" in t.user_attrs}
        profile = job_in.profiles[0]
        duplicates = sum(1 for t in study.trials if t.user_attrs.get("fail_kind") == "duplicate")
        trial_s = sum(r["trial_s"] for r in rows)
        points = [
            {
                "trial": r["number"],
                "accuracy": r["metrics"]["accuracy"],
                "latency_ms": r["metrics"]["latency_ms"][profile],
                "size_bytes": r["metrics"]["size_bytes"],
                "candidate_hash": r["candidate_hash"],
                "finished_s": r["finished_s"],
            }
            for r in rows
            if r["state"] == "complete"
        ]
        for r in rows:
            r["params"] = params.get(r["number"], {})
            r["warm"] = r["number"] in warm
        hashes = [p["candidate_hash"] for p in points]
        trained_twice = len(hashes) - len(set(hashes))
        self.duplicates_trained += trained_twice
        log.info("%s: %d trials in %.0f s", name, len(points), wall)
        return {
            "job_id": job_id,
            "rows": rows,
            "points": points,
            "wall_s": wall,
            "trial_s": trial_s,
            "report": report,
            "duplicates_refused": duplicates,
            "duplicates_trained": trained_twice,
            "sampler": study.user_attrs.get("sampler"),
        }

    def shutdown(self) -> None:
        self.executor.shutdown()


def _row(r: Any, started: Any) -> dict[str, Any]:
    trial_s = 0.0
    for run in (r.timings or {}).get("runs", []):
        trial_s += sum(float(v) for v in (run.get("timings") or {}).values())
    return {
        "number": r.number,
        "state": r.state.value if isinstance(r.state, TrialState) else str(r.state),
        "candidate": r.candidate,
        "candidate_hash": r.candidate_hash,
        "metrics": r.metrics,
        "latency": r.latency,
        "timings": r.timings,
        "trial_s": trial_s,
        "finished_s": _seconds(r.finished_at, started),
    }


def _seconds(at: Any, since: Any) -> float | None:
    """Seconds from the job's start (SQLite returns naive UTC datetimes)."""
    if at is None or since is None:
        return None
    if (at.tzinfo is None) != (since.tzinfo is None):
        at, since = at.replace(tzinfo=None), since.replace(tzinfo=None)
    return round((at - since).total_seconds(), 2)
