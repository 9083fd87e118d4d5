"""Does the timing lease make timing quiet? The x86/local canary timed three ways:

- ``idle``: nothing else of ours running;
- ``training``: a training process (one torch thread, real backward passes) running beside;
- ``training_leased``: the same training, but through hwnas's compute slots, with the timing
  holding the node's timing lease (training pauses between batches while it times).

The machine drifts between windows (FACTS.md), so the three cases are interleaved: ``reps``
repetitions of (idle, training, training_leased), each case 3 windows of the profile's
protocol (15 rounds, samples >= 10 ms). Per case: the within-window CV (noise a single probe
sees) and, per repetition, its median over idle's in the same repetition (paired), with the
spread over repetitions. Writes JSON.

    python bench/_quiet.py OUT.json [--reps 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAINER = """
import sys, torch
sys.path.insert(0, {root!r})
from workers.lease import ComputeSlots
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
    torch.nn.Linear(64 * 28 * 28, 10))
opt = torch.optim.Adam(net.parameters())
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
leased = sys.argv[1] == "lease"
slots = ComputeSlots()
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("ready", flush=True)
while True:
    if leased:
        with slots.step():
            step()
    else:
        step()
"""
CASES = ("idle", "training", "training_leased")


def main(out: Path, reps: int) -> None:
    from hw_profiles import get_profile
    from workers.lease import timing_lease
    from workers.probe.canary import canary_input, get_canary
    from workers.probe.measure import local_vm
    from workers.probe.targets import device_of, resolve_target, tvm
    from workers.probe.timing import prepare, rounds, timing_of

    profile = get_profile("x86/local")
    canary = get_canary(profile, resolve_target(profile))
    dev = device_of(profile)
    vm = local_vm(canary.path, dev)
    inp = tvm().runtime.tensor(canary_input().numpy(), dev)

    def window(lease: bool) -> tuple[float, float, float | None]:
        if lease:
            with timing_lease() as (_held, waited):
                item = prepare(vm, dev, inp, profile.measure)
                s = rounds([item], profile.measure.repeat)[0]
        else:
            waited = None
            item = prepare(vm, dev, inp, profile.measure)
            s = rounds([item], profile.measure.repeat)[0]
        t = timing_of(s, item.number)
        return t.median_ms, t.cv, waited

    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES}
    for _ in range(reps):
        for case in CASES:
            proc = None
            if case != "idle":
                mode = "lease" if case == "training_leased" else "plain"
                code = TRAINER.format(root=str(ROOT))
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, mode], stdout=subprocess.PIPE, text=True
                )
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                time.sleep(1.0)
            try:
                ws = [window(case == "training_leased") for _ in range(3)]
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
            runs[case].append(
                {
                    "median_ms": float(np.median([w[0] for w in ws])),
                    "cv_within_window": float(np.median([w[1] for w in ws])),
                    "lease_wait_s": None if ws[0][2] is None else float(max(w[2] or 0 for w in ws)),
                }
            )
            time.sleep(0.5)
    result: dict[str, Any] = {"canary": canary.id, "reps": reps}
    for case in CASES:
        ratio = [
            r["median_ms"] / i["median_ms"] for r, i in zip(runs[case], runs["idle"], strict=True)
        ]
        cvs = [r["cv_within_window"] for r in runs[case]]
        result[case] = {
            "median_ms": float(np.median([r["median_ms"] for r in runs[case]])),
            "cv_within_window": float(np.median(cvs)),
            "cv_within_window_range": [float(min(cvs)), float(max(cvs))],
            "median_vs_idle": float(np.median(ratio)),
            "median_vs_idle_range": [float(min(ratio)), float(max(ratio))],
            "runs": runs[case],
        }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--reps", type=int, default=4)
    a = ap.parse_args()
    main(a.out, a.reps)
