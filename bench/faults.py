"""The fault-injection suite as a benchmark: every fault kind of ``tests/faults`` run once on a
tiny real job (digits, 4 trials, real schedulers with their embedded Ray, SQLite; the
PostgreSQL restart on the private server ``scripts/with-postgres.sh`` starts), its outcome
checked, and the totals written.

    make bench-faults     # -> bench/results/faults.json + faults.png

``faults.json``: top-level ``injected``, ``survived``, ``trials_lost``, ``duplicates`` (sums over
kinds), and ``kinds``: the same four per kind, with the declared re-runs, the seconds it took
and any problem found.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.scenarios import KINDS, NEEDS_PG, run_kind  # noqa: E402

TOTALS = ("injected", "survived", "trials_lost", "duplicates")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--kinds", nargs="*", default=sorted(KINDS), choices=sorted(KINDS))
    args = ap.parse_args()
    import os

    kinds: dict[str, Any] = {}
    t0 = time.monotonic()
    for kind in args.kinds:
        if kind in NEEDS_PG and not os.environ.get("HWNAS_TEST_PG_DIR"):
            raise SystemExit(f"{kind} needs scripts/with-postgres.sh (run: make bench-faults)")
        with tempfile.TemporaryDirectory(prefix=f"hwnas-fault-{kind}-") as tmp:
            out = run_kind(kind, Path(tmp))
        row = out.public()
        kinds[kind] = {k: v for k, v in row.items() if k != "kind"}
        print(
            f"{kind:26s} injected {out.injected} survived {out.survived} lost "
            f"{out.trials_lost} duplicates {out.duplicates} re-runs {out.reruns} "
            f"{out.seconds:5.0f} s {'; '.join(out.problems)}",
            flush=True,
        )
    result: dict[str, Any] = {k: sum(int(v[k]) for v in kinds.values()) for k in TOTALS}
    result.update(
        {
            "kinds_run": len(kinds),
            "kinds": kinds,
            "job": "digits, mlp_small, 4 trials, 2 epochs + 1 fine-tune, tuning off",
            "seconds": round(time.monotonic() - t0, 1),
            "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(kinds, args.out / "faults.png")
    print(json.dumps({k: result[k] for k in TOTALS}))
    if result["survived"] != len(kinds):
        raise SystemExit(1)


def _plot(kinds: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(kinds)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    secs = [kinds[n]["seconds"] for n in names]
    colors = ["tab:green" if kinds[n]["survived"] else "tab:red" for n in names]
    ax.barh(names, secs, color=colors)
    for i, n in enumerate(names):
        k = kinds[n]
        ax.text(
            secs[i],
            i,
            f"  lost {k['trials_lost']}, dup {k['duplicates']}, re-runs {k['reruns']}",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("seconds to recover and finish (4-trial digits job)")
    ax.set_title("fault injection: green = survived (budget met, nothing RUNNING, models download)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
