"""A stored dataset larger than the memory a process may use is still trained and scored: its
rows are read from disk a batch at a time. The process runs with its data segment limited
(RLIMIT_DATA) below the size of the dataset's file, let alone its float32 form. Slow: it writes
~600 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ROWS = 200_000  # x 3 x 32 x 32 uint8 = 614 MB on disk, 2.4 GB as float32
LIMIT = 560 << 20  # the child's data segment: torch and numpy take ~320 MB of it

CHILD = """
import resource, sys, numpy as np, torch
from torch import nn
resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
from workers.data import load_splits
from workers.train import Recipe, fit, predict, subset
torch.set_num_threads(1)
splits = load_splits("user/big", 0, __import__("pathlib").Path(sys.argv[1]))
model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 4))
pred = predict(model, splits.train, batch_size=1024)          # every training row, read in batches
fit(model, subset(splits.train, 4096), epochs=1, recipe=Recipe(batch_size=256))
try:
    np.ones((len(splits.train), 3, 32, 32), np.float32)      # the whole split at once: refused
    whole = "allocated"
except MemoryError:
    whole = "MemoryError"
print(len(pred), int((pred >= 0).sum()), whole)
"""


def test_a_dataset_larger_than_memory_trains_from_disk(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    folder = root / "big"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (folder / "x_train.npy").open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (ROWS, 3, 32, 32)}
        )
        for _ in range(ROWS // 10_000):
            f.write(rng.integers(0, 256, (10_000, 3, 32, 32), dtype=np.uint8).tobytes())
    np.save(folder / "y_train.npy", np.arange(ROWS, dtype=np.int64) % 4)
    np.save(folder / "x_test.npy", rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8))
    np.save(folder / "y_test.npy", np.arange(100, dtype=np.int64) % 4)
    info = {"input_shape": [3, 32, 32], "num_classes": 4, "x_scale": 1 / 255,
            "preprocessing": "test rows", "layout": "npy"}  # fmt: skip
    (root / "big.json").write_text(json.dumps(info))
    assert (folder / "x_train.npy").stat().st_size > LIMIT
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(limit=LIMIT), str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored, valid, whole = done.stdout.split()
    assert int(scored) == int(valid) == ROWS - ROWS // 10  # train after the 10 % validation split
    assert whole == "MemoryError"  # the limit is real: the split as one array does not fit
