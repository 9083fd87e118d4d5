"""Time pulled hwnas bundles' TVM libraries against ONNX Runtime on the same bundle's ONNX file.

Usage: python examples/tvm_vs_ort.py BUNDLE [BUNDLE ...]

For each bundle, ``tvm/<profile>.so`` (``relax.VirtualMachine``) and ``model.onnx`` (ONNX Runtime,
CPU execution provider, default graph optimizations) are timed in rounds that alternate the two,
1 thread, batch 1, on the input shape of the card: what a user choosing between the two runtimes
would compare. Prints one JSON object: per bundle ``tvm_ms``, ``ort_ms`` and ``tvm_over_ort``,
then the median and worst ratio. Only numpy, onnxruntime and tvm are imported.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROUNDS, MIN_ROUND_S = 15, 0.02


def interleaved(
    fns: list[Any], rounds: int = ROUNDS, min_round_s: float = MIN_ROUND_S
) -> list[float]:
    """Median ms per call of each of ``fns``, timed in rounds that alternate them."""
    for fn in fns:
        for _ in range(5):
            fn()
    number = []
    for fn in fns:
        t = time.perf_counter()
        fn()
        number.append(max(5, int(min_round_s / max(time.perf_counter() - t, 1e-7))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            for _ in range(number[i]):
                fn()
            samples[i].append((time.perf_counter() - t) / number[i] * 1e3)
    return [float(np.median(s)) for s in samples]


def compare(bundle: Path) -> dict[str, Any]:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    card = json.loads((bundle / "card.json").read_text())
    shape = [1, *card["input"]["shape"][1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out: dict[str, Any] = {"bundle": bundle.name, "trial_summary": card.get("summary")}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for profile, rel in card["files"]["tvm"].items():
        if profile != "x86/local":
            continue  # a board's library does not run here
        dev = tvm.cpu(0)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle / rel)), dev)
        inp = tvm.runtime.tensor(x, dev)
        vm.save_function("main", "main_saved", inp)
        run_tvm = vm["main_saved"]
        tvm_ms, ort_ms = interleaved([run_tvm, lambda: sess.run(None, feed)])
        out.update(
            {
                "profile": profile,
                "tvm_ms": tvm_ms,
                "ort_ms": ort_ms,
                "tvm_over_ort": tvm_ms / ort_ms,
                "partial": card["latency"][profile].get("partial"),
                "int8_dot": card["latency"][profile].get("int8_dot"),
            }
        )
    return out


def main(argv: list[str]) -> dict[str, Any]:
    rows = [compare(Path(b)) for b in argv]
    ratios = [r["tvm_over_ort"] for r in rows if "tvm_over_ort" in r]
    return {
        "how": "each bundle's tvm/x86_local.so and model.onnx (ONNX Runtime, CPU EP) timed in "
        f"{ROUNDS} alternating rounds, 1 thread, batch 1",
        "points": rows,
        "median_tvm_over_ort": float(np.median(ratios)) if ratios else None,
        "worst_tvm_over_ort": max(ratios) if ratios else None,
        "goal": "each <= 1.10, median <= 1.0",
        "met": bool(ratios) and max(ratios) <= 1.10 and float(np.median(ratios)) <= 1.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
