"""The job report's hit rates, summed from the trial rows the scheduler writes."""

from __future__ import annotations

from service.api.report import job_report
from service.db.models import Trial, TrialState


def _row(number: int, runs: list[dict[str, object]]) -> Trial:
    return Trial(
        job_id=1,
        number=number,
        state=TrialState.complete,
        candidate={},
        candidate_hash="x",
        timings={"runs": runs},
    )


def test_task_level_record_hits_sit_beside_exact_structure_hits() -> None:
    rows = [
        # pre-filter probe (nothing tuned yet) then the trained model's probe (cache hit)
        _row(0, [{"probe_cache_hits": [False, True], "probe_tasks": [[0, 10], [10, 10]]}]),
        # a new structure whose tasks were mostly tuned by earlier candidates
        _row(1, [{"probe_cache_hits": [False], "probe_tasks": [[7, 8]]}]),
        _row(2, [{"probe_cache_hits": [False]}]),  # a row from before task records
    ]
    cache = job_report(1, rows).cache
    assert cache["probe"] == {"lookups": 4, "hits": 1, "hit_rate": 0.25}
    assert cache["tuning_tasks"] == {"lookups": 28, "hits": 17, "hit_rate": round(17 / 28, 4)}


def test_no_probes_no_rate() -> None:
    assert job_report(1, []).cache["tuning_tasks"]["hit_rate"] is None
