"""Re-measure downloaded hwnas bundles the way a user would, without importing hwnas.

Usage: python bench/retime_bundle.py --manifest M.json --out OUT.json --windows W

For each bundle: the test accuracy of every shipped file, each run by its own runtime (ONNX
Runtime, TorchScript, the TVM library through ``tvm.runtime.load_module`` +
``relax.VirtualMachine``), and the latency of the TVM library timed with TVM's
``time_evaluator`` in rounds alternating with the shipped canary library
(``tvm/<profile>.canary.so``), 1 thread, in ``W`` windows spread over the run (window 1 of
every bundle, then window 2, ...). The manifest lists ``[{"bundle": DIR, "test": NPZ}, ...]``;
each NPZ holds ``x`` and ``y`` of that bundle's test split.
Only numpy, onnxruntime, torch and tvm are imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

WARMUP, NUMBER, ROUNDS, MIN_SAMPLE_S = 5, 20, 15, 0.010


def _timer(vm: Any, dev: Any, x: np.ndarray) -> Any:
    import tvm

    inp = tvm.runtime.tensor(x, dev)
    for _ in range(WARMUP):
        vm["main"](inp)
    vm.save_function("main", "main_saved", inp)
    t1 = max(min(vm.time_evaluator("main_saved", dev, number=1, repeat=3)().results), 1e-9)
    number = max(NUMBER, math.ceil(MIN_SAMPLE_S / t1))
    return vm.time_evaluator("main_saved", dev, number=number, repeat=1)


def _window(model: Any, canary: Any) -> dict[str, Any]:
    m, c = [], []
    for r in range(ROUNDS):
        pair = [(model, m), (canary, c)]
        for timer, out in pair if r % 2 == 0 else pair[::-1]:
            out.append(float(timer().mean) * 1e3)
    ratio = np.asarray(m) / np.asarray(c)
    return {
        "model_ms": float(np.median(m)),
        "canary_ms": float(np.median(c)),
        "normalized": float(np.median(ratio)),
        "t": time.time(),
    }


def _accuracy(bundle: Path, card: dict[str, Any], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    x = x.reshape(len(x), *card["input"]["shape"][1:]).astype(np.float32)
    out: dict[str, Any] = {}
    ts = torch.jit.load(str(bundle / "model.pt")).eval()
    with torch.no_grad():
        pred = np.concatenate(
            [ts(torch.from_numpy(x[i : i + 512])).argmax(1).numpy() for i in range(0, len(x), 512)]
        )
    out["acc_torchscript"] = float((pred == y).mean())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate(
        [sess.run(None, {name: x[i : i + 512]})[0].argmax(1) for i in range(0, len(x), 512)]
    )
    out["acc_onnx"] = float((pred == y).mean())
    lib = bundle / next(iter(card["files"]["tvm"].values()))
    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), dev)
    pred = np.array(
        [
            int(vm["main"](tvm.runtime.tensor(x[i : i + 1], dev)).numpy().argmax())
            for i in range(len(x))
        ]
    )
    out["acc_tvm"] = float((pred == y).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--windows", type=int, default=3)
    a = ap.parse_args()
    items = json.loads(a.manifest.read_text())
    import tvm
    from tvm import relax

    dev = tvm.cpu(0)
    timers = {}
    results: dict[str, Any] = {}
    for item in items:
        bundle, test = Path(item["bundle"]), Path(item["test"])
        card = json.loads((bundle / "card.json").read_text())
        ((profile, rel),) = card["files"]["tvm"].items()
        canary_rel = card["files"]["canary"][profile]
        shape = [1, *card["input"]["shape"][1:]]
        model = relax.VirtualMachine(tvm.runtime.load_module(str(bundle / rel)), dev)
        canary = relax.VirtualMachine(tvm.runtime.load_module(str(bundle / canary_rel)), dev)
        rng = np.random.default_rng(0)
        timers[str(bundle)] = (
            _timer(model, dev, rng.standard_normal(shape).astype(np.float32)),
            _timer(
                canary, dev, rng.standard_normal(card["retime"]["canary_input"]).astype(np.float32)
            ),
        )
        results[str(bundle)] = {"profile": profile, "windows": []}
    # time first: the accuracy runs below bring ONNX Runtime and torch (their thread pools) in
    for _ in range(a.windows):
        for key, (model_t, canary_t) in timers.items():
            results[key]["windows"].append(_window(model_t, canary_t))
            time.sleep(0.2)
    for item in items:
        bundle, test = Path(item["bundle"]), Path(item["test"])
        card = json.loads((bundle / "card.json").read_text())
        with np.load(test) as d:
            results[str(bundle)].update(_accuracy(bundle, card, d["x"], d["y"]))
    for r in results.values():
        r["retimed_ms"] = float(np.median([w["model_ms"] for w in r["windows"]]))
        r["retimed_normalized"] = float(np.median([w["normalized"] for w in r["windows"]]))
        r["canary_ms"] = float(np.median([w["canary_ms"] for w in r["windows"]]))
    a.out.write_text(json.dumps({"tvm": tvm.__version__, "bundles": results}, indent=1))


if __name__ == "__main__":
    main()
