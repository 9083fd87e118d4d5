"""One account's read-only view of the studies in the service database, for optuna-dashboard.

The dashboard reads an Optuna storage; this one shows it only the studies of the viewer's own
jobs (every job's for an admin), answers any other study or trial as missing (``KeyError``, as
Optuna's own storages do), and refuses every write. Each study is named for people
(``job-12 · my-search (alice)``) and each trial carries its verified figures as plain numbers
(``verified_latency_ms@x86/local``, which the dashboard can plot beside the objectives):
Optuna keeps them as one JSON blob per trial in the study's attributes (``verified:<n>``),
because a finished trial's attributes cannot change.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from search_spaces import HwnasError
from service.db.models import Job, User
from service.scheduler.front import VERIFIED_PREFIX

_JOB_STUDY = re.compile(r"^job-(\d+)$")
_FRESH_S = 2.0  # how long a listing of the viewer's jobs is reused
_VERIFIED = {  # Verified field -> the trial attribute it becomes (numbers only)
    "median_ms": "verified_latency_ms",
    "speedup_vs_dense": "verified_speedup_vs_dense",
    "dense_ms": "verified_dense_latency_ms",
}


class ReadOnlyError(HwnasError, PermissionError):
    """A write through the dashboard's view (it only reads)."""


@dataclass(frozen=True)
class Viewer:
    """Whose studies a view shows."""

    user_id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class _Owned:
    job_id: int
    job_name: str
    owner: str

    def title(self, study_name: str) -> str:
        label = f" · {self.job_name}" if self.job_name else ""
        return f"{study_name}{label} ({self.owner})"


class AccountStudies(BaseStorage):
    """The studies of ``viewer``'s jobs in ``base``, read-only (see the module doc)."""

    def __init__(self, base: RDBStorage, sessions: sessionmaker[Session], viewer: Viewer) -> None:
        self._base = base
        self._sessions = sessions
        self.viewer = viewer
        self._lock = threading.Lock()
        self._owned: dict[str, _Owned] = {}
        self._owned_at = -_FRESH_S

    # ------------------------------------------------------------------ ownership
    def _jobs(self) -> dict[str, _Owned]:
        """Study name -> the viewer's job behind it (fresh within ``_FRESH_S``)."""
        with self._lock:
            if time.monotonic() - self._owned_at < _FRESH_S:
                return self._owned
        stmt = select(Job.id, Job.name, Job.study_name, User.name).join(
            User, User.id == Job.owner_id
        )
        if not self.viewer.is_admin:
            stmt = stmt.where(Job.owner_id == self.viewer.user_id)
        with self._sessions() as s:
            rows = s.execute(stmt).all()
        owned = {
            (study or f"job-{job_id}"): _Owned(job_id, name or "", owner)
            for job_id, name, study, owner in rows
        }
        with self._lock:
            self._owned, self._owned_at = owned, time.monotonic()
        return owned

    def _check_study(self, study_id: int) -> str:
        """The study's own name; ``KeyError`` unless it is one of the viewer's."""
        name = self._base.get_study_name_from_id(study_id)
        if name not in self._jobs():
            raise KeyError(f"no study with study_id {study_id}")
        return name

    def _check_trial(self, trial_id: int) -> int:
        with self._base.engine.connect() as conn:
            study_id = conn.execute(
                text("SELECT study_id FROM trials WHERE trial_id = :t"), {"t": trial_id}
            ).scalar()
        if study_id is None:
            raise KeyError(f"no trial with trial_id {trial_id}")
        try:
            self._check_study(int(study_id))
        except KeyError:
            raise KeyError(f"no trial with trial_id {trial_id}") from None
        return int(study_id)

    # ---------------------------------------------------------------------- studies
    def get_all_studies(self) -> list[FrozenStudy]:
        owned = self._jobs()
        out = []
        for st in self._base.get_all_studies():
            job = owned.get(st.study_name)
            if job is None:
                continue
            attrs = {k: v for k, v in st.user_attrs.items() if not k.startswith(VERIFIED_PREFIX)}
            attrs.update(hwnas_job_id=job.job_id, hwnas_job_name=job.job_name, owner=job.owner)
            title = job.title(st.study_name)
            out.append(
                FrozenStudy(
                    title, None, attrs, st.system_attrs, st._study_id, directions=st.directions
                )
            )
        return sorted(out, key=lambda s: s._study_id)

    def get_study_id_from_name(self, study_name: str) -> int:
        for st in self.get_all_studies():
            if study_name in (st.study_name, st.study_name.split(" ", 1)[0]):
                return st._study_id
        raise KeyError(f"no study named {study_name!r}")

    def get_study_name_from_id(self, study_id: int) -> str:
        name = self._check_study(study_id)
        return self._jobs()[name].title(name)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        self._check_study(study_id)
        return self._base.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        self._check_study(study_id)
        attrs = self._base.get_study_user_attrs(study_id)
        return {k: v for k, v in attrs.items() if not k.startswith(VERIFIED_PREFIX)}

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        self._check_study(study_id)
        return self._base.get_study_system_attrs(study_id)

    # ----------------------------------------------------------------------- trials
    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        self._check_study(study_id)
        verified = self._verified(study_id)
        trials = self._base.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [_with_verified(t, verified.get(t.number)) for t in trials]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id = self._check_trial(trial_id)
        trial = self._base.get_trial(trial_id)
        return _with_verified(trial, self._verified(study_id).get(trial.number))

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        self._check_study(study_id)
        return self._base.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def _verified(self, study_id: int) -> dict[int, dict[str, float]]:
        """Trial number -> its verified figures as numeric attributes."""
        out: dict[int, dict[str, float]] = {}
        for key, value in self._base.get_study_user_attrs(study_id).items():
            if not key.startswith(VERIFIED_PREFIX) or not isinstance(value, dict):
                continue
            attrs: dict[str, float] = {}
            for profile, v in (value.get("latency") or {}).items():
                for field, attr in _VERIFIED.items():
                    number = v.get(field) if isinstance(v, dict) else None
                    if isinstance(number, int | float) and not isinstance(number, bool):
                        attrs[f"{attr}@{profile}"] = float(number)
            out[int(key[len(VERIFIED_PREFIX) :])] = attrs
        return out

    # ------------------------------------------------------------------------ writes
    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("the dashboard is read-only: change jobs through the hwnas API")

    # every write of BaseStorage's interface, one refusal
    create_new_study = delete_study = set_study_user_attr = set_study_system_attr = _refuse
    create_new_trial = set_trial_param = set_trial_state_values = _refuse
    set_trial_intermediate_value = set_trial_user_attr = set_trial_system_attr = _refuse

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._refuse()

    def remove_session(self) -> None:
        self._base.remove_session()


def _with_verified(trial: FrozenTrial, attrs: dict[str, float] | None) -> FrozenTrial:
    if not attrs:
        return trial
    return FrozenTrial(
        trial.number,
        trial.state,
        None,
        trial.datetime_start,
        trial.datetime_complete,
        trial.params,
        trial.distributions,
        {**trial.user_attrs, **attrs},
        trial.system_attrs,
        trial.intermediate_values,
        trial._trial_id,
        values=trial.values,
    )
