"""Every file a user pulls scores what the card says: each shipped model file is run by its own
runtime on the test split (ONNX Runtime, TorchScript, the exported TVM library), and its
accuracy, with a 95 % interval, goes on the card beside the PyTorch model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hw_profiles import get_profile
from workers.data import Split
from workers.data._rows import Rows
from workers.records import FileScore

AGREE = 0.002  # |file accuracy - card accuracy| at most this counts as the same model


def accuracy_ci95(correct: int, n: int) -> tuple[float, float]:
    """Wilson score interval (95 %) of an accuracy of ``correct`` / ``n`` test images."""
    if n == 0:
        return (0.0, 1.0)
    z = 1.959964
    p = correct / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (round(max(0.0, mid - half), 6), round(min(1.0, mid + half), 6))


def _score(path: str, runtime: str, pred: np.ndarray, test: Split, card_acc: float) -> FileScore:
    correct = int((pred == test.y).sum())
    acc = correct / len(test.y)
    return FileScore(
        path=path,
        runtime=runtime,
        test_accuracy=acc,
        ci95=accuracy_ci95(correct, len(test.y)),
        agrees_with_card=abs(acc - card_acc) <= AGREE,
    )


def _batched(x: Rows, shape: tuple[int, ...], size: int = 512) -> Iterator[np.ndarray]:
    """``x`` a batch at a time (read from disk batch by batch when it lives there)."""
    for i in range(0, len(x), size):
        b = np.asarray(x[i : i + size], dtype=np.float32)
        yield b.reshape(len(b), *shape)


def score_files(
    bundle: Path,
    test: Split,
    input_shape: tuple[int, ...],
    tvm_files: dict[str, str],
    card_accuracy: float,
) -> dict[str, FileScore]:
    """Test accuracy of ``model.onnx``, ``model.pt`` and each TVM library in ``tvm_files``
    (profile -> path in the bundle). A library cross-compiled for another device can't run
    here: its entry says so (its numerics were checked on the device by the probe)."""
    import onnxruntime as ort

    out: dict[str, FileScore] = {}
    ts = torch.jit.load(str(bundle / "model.pt")).eval()
    with torch.no_grad():
        pred = np.concatenate(
            [ts(torch.from_numpy(b)).argmax(1).numpy() for b in _batched(test.x, input_shape)]
        )
    out["torchscript"] = _score("model.pt", f"torch {torch.__version__}", pred, test, card_accuracy)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate(
        [sess.run(None, {name: b})[0].argmax(1) for b in _batched(test.x, input_shape)]
    )
    out["onnx"] = _score(
        "model.onnx",
        f"onnxruntime {ort.__version__} (CPU, default optimizations)",
        pred,
        test,
        card_accuracy,
    )
    for profile_name, rel in tvm_files.items():
        out[f"tvm:{profile_name}"] = _score_tvm(
            bundle / rel, rel, profile_name, test, input_shape, card_accuracy
        )
    return out


def _score_tvm(
    lib: Path, rel: str, profile_name: str, test: Split, shape: tuple[int, ...], card_acc: float
) -> FileScore:
    from workers.probe.measure import load_vm
    from workers.probe.targets import device_of, is_gpu, tvm

    profile = get_profile(profile_name)
    t = tvm()
    runtime = f"tvm {t.__version__} relax.VirtualMachine"
    if not profile.is_local:
        return FileScore(
            path=rel,
            runtime=runtime,
            test_accuracy=None,
            note=f"cross-compiled for {profile.name} ({profile.target.get('mtriple')}): not run "
            "on this host; its outputs were checked against PyTorch on the device by the probe",
        )
    if is_gpu(profile) and not t.cuda(0).exist:
        return FileScore(path=rel, runtime=runtime, test_accuracy=None, note="no GPU on this host")
    dev = device_of(profile)
    vm = load_vm(lib, dev)
    pred = np.array(
        [
            int(vm["main"](t.runtime.tensor(b[i : i + 1], dev)).numpy().argmax())
            for b in _batched(test.x, shape)
            for i in range(len(b))
        ]
    )
    return _score(rel, runtime + " (batch 1)", pred, test, card_acc)
