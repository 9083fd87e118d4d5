"""Does the timing lease make timing quiet? The x86/local canary timed three ways, in one run:

- ``idle``: nothing else of ours running;
- ``training``: a training process (one torch thread, real backward passes) running beside;
- ``training_leased``: the same training, but through hwnas's compute slots, with the timing
  holding the node's timing lease (training pauses between batches while it times).

Each case: 6 windows of the profile's protocol (15 rounds, samples >= 10 ms). Writes JSON.

    python bench/_quiet.py OUT.json
"""

from __future__ import annotations

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
print("ready", flush=True)
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
while True:
    if leased:
        with slots.step():
            step()
    else:
        step()
"""


def main(out: Path) -> None:
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

    def windows(lease: bool) -> dict[str, Any]:
        meds, cvs, waits = [], [], []
        for _ in range(6):
            t0 = time.perf_counter()
            if lease:
                with timing_lease() as (_held, waited):
                    item = prepare(vm, dev, inp, profile.measure)
                    s = rounds([item], profile.measure.repeat)[0]
                waits.append(waited)
            else:
                item = prepare(vm, dev, inp, profile.measure)
                s = rounds([item], profile.measure.repeat)[0]
            t = timing_of(s, item.number)
            meds.append(t.median_ms)
            cvs.append(t.cv)
            time.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
        return {
            "median_ms": float(np.median(meds)),
            "window_medians_ms": meds,
            "cv_within_window": float(np.median(cvs)),
            "cv_across_windows": float(np.std(meds, ddof=1) / np.mean(meds)),
            "lease_wait_s": float(np.median(waits)) if waits else None,
        }

    result: dict[str, Any] = {"canary": canary.id, "idle": windows(False)}
    for name, mode in (("training", "plain"), ("training_leased", "lease")):
        proc = subprocess.Popen(
            [sys.executable, "-c", TRAINER.format(root=str(ROOT)), mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(2.0)
            result[name] = windows(mode == "lease")
        finally:
            proc.kill()
            proc.wait()
    idle = result["idle"]["median_ms"]
    for name in ("training", "training_leased"):
        result[name]["median_vs_idle"] = result[name]["median_ms"] / idle
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
