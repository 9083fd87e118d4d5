"""Time shipped libraries in a fresh process: ``python -m workers.probe.retime SPEC OUT``.

The verification of a job's front runs this in a new interpreter, so nothing from the search
(warm caches, a VM compiled in memory, a tuned module) touches the number: it loads the files a
user downloads with ``tvm.runtime.load_module`` and times them with the profile's protocol. SPEC
is JSON: ``{"profile": name, "windows": W, "points": [{"key": k, "libs": [[path, shape], ...]}]}``
where each point's last library is the canary. Windows go over all points in turn (window 1 of
every point, then window 2, ...), so each point's windows are spread over the run. Locally each
point's window holds the node's timing lease; RPC profiles time on their device. OUT receives
``{"points": {key: [[Window, ...] per window]}}`` (one Window per library).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _input(shape: list[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _local(profile: Any, points: list[dict[str, Any]], windows: int) -> dict[str, Any]:
    from workers.lease import timing_lease
    from workers.probe.measure import load_vm
    from workers.probe.targets import device_of, tvm
    from workers.probe.timing import prepare, window

    t = tvm()
    dev = device_of(profile)
    m = profile.measure
    vms = {p["key"]: [load_vm(Path(path), dev) for path, _ in p["libs"]] for p in points}
    out: dict[str, list[Any]] = {p["key"]: [] for p in points}
    for _ in range(windows):
        for p in points:
            with timing_lease() as (held, waited):
                items = [
                    prepare(vm, dev, t.runtime.tensor(_input(shape, i), dev), m)
                    for i, (vm, (_, shape)) in enumerate(zip(vms[p["key"]], p["libs"], strict=True))
                ]
                w = window(
                    items,
                    m,
                    canary=len(items) - 1,
                    quiet="lease" if held else "none",
                    lease_wait_s=waited,
                )
            out[p["key"]].append([x.model_dump(mode="json") for x in w])
    return out


def _remote(profile: Any, points: list[dict[str, Any]], windows: int) -> dict[str, Any]:
    from workers.probe.rpc import measure_remote

    out: dict[str, list[Any]] = {}
    for p in points:
        libs = [(Path(path), _input(shape, i)) for i, (path, shape) in enumerate(p["libs"])]
        (first, x0), others, (canary, _) = libs[0], libs[1:-1], libs[-1]
        r = measure_remote(first, x0, [], profile, canary=canary, others=others, windows=windows)
        out[p["key"]] = [[w.model_dump(mode="json") for w in ws] for ws in r["windows"]]
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    from hw_profiles import get_profile

    profile = get_profile(spec["profile"])
    run = _local if profile.is_local else _remote
    result = run(profile, spec["points"], int(spec["windows"]))
    Path(argv[1]).write_text(json.dumps({"points": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
