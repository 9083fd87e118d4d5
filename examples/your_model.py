"""Your own trained model, compressed by hwnas: the whole flow against a running service.

    make serve &                                    # or any hwnas service
    export HWNAS_URL=http://127.0.0.1:8000 HWNAS_TOKEN=$(.venv/bin/hwnas token me --create)
    .venv/bin/python examples/your_model.py         # ~15 min on 2 cores

1. your data: Fashion-MNIST as 3x32x32 images (6,000 train / 1,000 val / 1,000 test), saved as
   the .npz hwnas takes (uint8 images; y class ids);
2. your model: a small residual CNN defined below (residual adds, BatchNorm, a custom
   forward), trained for a few epochs on the training split only, inputs normalized by mean/std;
3. exported the way hwnas takes it: ``torch.export`` with a dynamic batch, ``torch.export.save``
   (a JSON graph and raw weights; hwnas never unpickles anything);
4. ``hwnas upload`` of both (the network with its --mean / --std), ``hwnas submit --watch`` of an
   8-trial job compressing it (its layer groups: weight code, prune, rank), ``hwnas pareto``;
5. ``hwnas pull`` of the fastest point within a point of your accuracy, re-scored here with plain
   ONNX Runtime and TorchScript on the test split (inputs normalized as your model's were).

Only torch, numpy, onnxruntime and the ``hwnas`` command are used: no hwnas import.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HWNAS = [sys.executable, "-m", "service.cli"]
ROOT = Path(__file__).resolve().parent.parent
FASHION = Path(os.environ.get("HWNAS_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
MEAN, STD = (0.286,) * 3, (0.353,) * 3  # Fashion-MNIST's pixel statistics


class YourNet(nn.Module):
    """A small residual CNN with a custom forward."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.block1 = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
        )  # fmt: skip
        self.down = nn.Sequential(
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
        )  # fmt: skip
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.block1(x))
        x = self.down(x)
        x = F.relu(x + self.block2(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def idx(name: str) -> np.ndarray:
    raw = gzip.open(FASHION / name).read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def your_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xt, yt = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    rgb = lambda a: np.repeat(np.pad(a, ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1)  # noqa: E731
    r, t = rng.permutation(len(y))[:7000], rng.permutation(len(yt))[:1000]
    return {
        "x_train": rgb(x[r[:6000]]), "y_train": y[r[:6000]].astype(np.int64),
        "x_val": rgb(x[r[6000:]]), "y_val": y[r[6000:]].astype(np.int64),
        "x_test": rgb(xt[t]), "y_test": yt[t].astype(np.int64),
    }  # fmt: skip


def normalized(x_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(x_uint8.astype(np.float32) / 255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train(model: nn.Module, data: dict[str, np.ndarray], epochs: int = 4) -> float:
    x, y = normalized(data["x_train"]), torch.from_numpy(data["y_train"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * (len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y) - 63, 64):
            b = order[i : i + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(normalized(data["x_val"])).argmax(1).numpy()
    return float((pred == data["y_val"]).mean())


def hwnas(*argv: str, capture: bool = True) -> str:
    done = subprocess.run([*HWNAS, *argv], cwd=ROOT, capture_output=capture, text=True)
    if done.returncode != 0:
        raise SystemExit(f"hwnas {' '.join(argv)} failed: {(done.stderr or '').strip()}")
    return done.stdout or ""


def main() -> int:
    if not os.environ.get("HWNAS_TOKEN") and not os.environ.get("HWNAS_TOKEN_FILE"):
        raise SystemExit(__doc__)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="your-model-"))
    data = your_data()
    np.savez(work / "fashion32.npz", **data)
    torch.manual_seed(0)
    model = YourNet()
    val = train(model, data)
    print(f"your model: validation accuracy {val:.4f} ({time.monotonic() - t0:.0f} s)")
    ep = torch.export.export(
        model, (torch.zeros(2, 3, 32, 32),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(ep, work / "yournet.pt2")
    print(hwnas("upload", str(work / "fashion32.npz")).strip())
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    print(hwnas("upload", str(work / "yournet.pt2"), "--mean", mean, "--std", std).strip())
    job = {
        "name": "your-model",
        "dataset": "user/fashion32",
        "space": "network",
        "network": "user/yournet",
        "profiles": ["x86/local"],
        "objectives": ["accuracy", "latency@x86/local", "size"],
        "space_overrides": {"wbits": [8, 32], "abits": [8], "codebook_bits": [0],
                            "sparsity": [0.0], "prune": [0.0, 0.25, 0.5], "rank": [1.0, 0.5]},
        "budget": {"trials": 8, "tune_s": 300},
        "training": {"finetune_epochs": 1, "train_subset": 3000, "augment": "crop_flip"},
    }  # fmt: skip
    (work / "job.json").write_text(json.dumps(job))
    job_id = hwnas("submit", str(work / "job.json")).strip()
    print(f"job {job_id} submitted; watching it")
    hwnas("watch", job_id, "--progress", "lines", capture=False)
    print(hwnas("pareto", job_id))
    front = json.loads(hwnas("pareto", job_id, "--json"))
    within = [p for p in front["data"] if (p["accuracy_change"] or 0) >= -0.01]
    best = max(within or front["data"], key=lambda p: max(p["speedup_vs_dense"].values() or [0]))
    bundle = work / "best"
    hwnas("pull", best["model_id"], "-o", str(bundle))
    card = json.loads((bundle / "card.json").read_text())
    x, y = normalized(data["x_test"]), data["y_test"]
    ts = torch.jit.load(str(bundle / "model.pt")).eval()
    with torch.no_grad():
        acc_ts = float((ts(x).argmax(1).numpy() == y).mean())
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    acc_onnx = float((logits.argmax(1) == y).mean())
    net = card["network"]
    print(
        f"model {best['model_id']}: {best['summary']}\n"
        f"  speedup vs yours {best['speedup_vs_dense']}, "
        f"{best['size_ratio_vs_dense']:.1f}x smaller\n"
        f"  test accuracy: card {card['metrics']['test_accuracy']:.4f}, TorchScript {acc_ts:.4f}, "
        f"ONNX Runtime {acc_onnx:.4f}; yours {net['uploaded_test_accuracy']:.4f}\n"
        f"  {time.monotonic() - t0:.0f} s in all; files in {work}"
    )
    ok = max(abs(acc_ts - card["metrics"]["test_accuracy"]), abs(acc_onnx - acc_ts)) <= 0.002
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
