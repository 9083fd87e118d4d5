"""How often do a new candidate's tuning tasks repeat earlier ones? (No tuning, no timing.)

Samples ``--candidates`` candidates of a space (seeded, uniformly), lowers each one's
compressed structure and extracts its MetaSchedule tasks; counts, in sampling order, the tasks
an earlier candidate already brought, under whole-function (``structural``) and anchor-block
workload equality, with the compression passes' channel rounding on and (``--compare-rounding``)
off. This is the ceiling of a task-level record hit rate once every seen task is tuned.

    python bench/task_reuse.py [--space cnn_joint] [--candidates 40] [--compare-rounding]

Writes ``task_reuse.json`` (no plot: four numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw_profiles import get_profile  # noqa: E402
from search_spaces import SpaceContext, get_space  # noqa: E402
from workers.probe.pretune import candidate_tasks, sample_candidates  # noqa: E402
from workers.probe.targets import resolve_target  # noqa: E402


def count(cands: list[Any], profile: Any, equality: str) -> dict[str, Any]:
    from tvm.s_tir import meta_schedule as ms

    target = resolve_target(profile)
    db = ms.database.MemoryDatabase(module_equality=equality)
    total = seen = 0
    new: list[int] = []
    t0 = time.perf_counter()
    for c in cands:
        fresh = 0
        for task in candidate_tasks(c, profile, target, equality):
            total += 1
            if db.has_workload(task.dispatched[0]):
                seen += 1
            else:
                fresh += 1
                db.commit_workload(task.dispatched[0])
        new.append(fresh)
    half = len(new) // 2
    return {
        "tasks": total,
        "seen_before": seen,
        "seen_rate": seen / total if total else None,
        "new_tasks_per_candidate_second_half": sum(new[half:]) / max(1, len(new) - half),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="cnn_joint")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--compare-rounding", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    a = ap.parse_args()
    profile = get_profile("x86/local")
    space = get_space(a.space)(SpaceContext(input_shape=(1, 28, 28), num_classes=10))
    cands = sample_candidates(space, a.candidates, seed=3)
    result: dict[str, Any] = {"space": a.space, "candidates": a.candidates, "rounding_on": {}}
    for eq in ("structural", "anchor-block"):
        result["rounding_on"][eq] = count(cands, profile, eq)
        print(eq, result["rounding_on"][eq], flush=True)
    if a.compare_rounding:
        import workers.compress.lowrank as lowrank
        import workers.compress.prune as prune

        prune.round_channels = lowrank.round_channels = lambda n, full, *_, **__: n  # type: ignore[assignment]
        result["rounding_off"] = {
            eq: count(cands, profile, eq) for eq in ("structural", "anchor-block")
        }
        print("rounding off", result["rounding_off"], flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "task_reuse.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
