"""What must hold after any fault: the job ends with exactly its budget of COMPLETE trials, no
trial or row left RUNNING, the rows agree with the study, every Pareto model downloads, and no
candidate was trained twice except the declared re-runs."""

from __future__ import annotations

import io
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState as OptunaState
from sqlalchemy import select

from service.db.models import Job, JobStatus, Trial, TrialState
from service.db.session import get_sessionmaker
from service.scheduler.study import load_study
from tests.service.api import admin_client, api_settings


@dataclass
class Outcome:
    kind: str
    injected: int = 0
    survived: int = 0
    trials_lost: int = 0
    duplicates: int = 0
    reruns: int = 0  # declared re-runs of interrupted trials (not duplicates)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return asdict(self)


def check(outcome: Outcome, db_url: str, job_id: int, budget: int, artifacts: Path) -> Outcome:
    """Fill ``outcome`` from the database and the API; ``survived`` when nothing is wrong."""
    p = outcome.problems
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        rows = {r.number: r for r in s.scalars(select(Trial).where(Trial.job_id == job_id))}
        status, counted = job.status, job.trials_complete
    if status != JobStatus.succeeded:
        p.append(f"job ended {status.value}: {job.error}")
    study = load_study(db_url, job_id)
    trials = study.get_trials(deepcopy=False)
    trained = [
        t
        for t in trials
        if t.state in (OptunaState.COMPLETE, OptunaState.PRUNED)
        and not t.user_attrs.get("prefiltered")
    ]
    complete = [t for t in trained if t.state == OptunaState.COMPLETE]
    running = [t.number for t in trials if t.state == OptunaState.RUNNING]
    running_rows = [n for n, r in rows.items() if r.state == TrialState.running]
    if len(complete) != budget:
        p.append(f"{len(complete)} COMPLETE trials, budget {budget}")
    if counted != len(complete):
        p.append(f"job row counts {counted} complete, the study has {len(complete)}")
    if running or running_rows:
        p.append(f"left RUNNING: study {running}, rows {running_rows}")
    for t in complete:
        row = rows.get(t.number)
        if row is None or row.state != TrialState.complete or not row.bundle_dir:
            p.append(f"trial {t.number}: COMPLETE in the study, row {row and row.state}")
    hashes = [t.user_attrs.get("candidate_hash") for t in trained]
    outcome.duplicates = len(hashes) - len(set(hashes))
    outcome.reruns = sum(1 for t in trials if t.user_attrs.get("retry_of") is not None)
    outcome.trials_lost = max(0, budget - len(complete)) + len(running)
    p.extend(_downloads(db_url, job_id, artifacts))
    outcome.survived = int(not p)
    return outcome


def _downloads(db_url: str, job_id: int, artifacts: Path) -> list[str]:
    """Every model of the job's Pareto front downloads as a zip with its files."""
    problems = []
    settings = api_settings(db_url, artifacts.parent).model_copy(update={"artifact_dir": artifacts})
    with admin_client(settings) as client:
        r = client.get(f"/v1/jobs/{job_id}/pareto")
        if r.status_code != 200:
            return [f"/pareto -> {r.status_code}: {r.text[:200]}"]
        points = r.json()["data"]
        if not points:
            return ["the Pareto front is empty"]
        for pt in points:
            model_id = f"{job_id}-{pt['trial']}"
            z = client.get(f"/v1/models/{model_id}")
            if z.status_code != 200:
                problems.append(f"model {model_id} -> {z.status_code}")
                continue
            names = set(zipfile.ZipFile(io.BytesIO(z.content)).namelist())
            if not {"model.pt", "model.onnx"} <= {Path(n).name for n in names}:
                problems.append(f"model {model_id}: zip holds {sorted(names)}")
    return problems
