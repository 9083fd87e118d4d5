"""Load an hwnas model bundle with plain PyTorch and ONNX Runtime (no hwnas import) and score it.

Usage: python examples/load_bundle.py BUNDLE_DIR

Prints the test-split accuracy of model.pt (TorchScript) and model.onnx, and how far their
logits differ. The test split is rebuilt from the card (dataset + the test row indices).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np


def test_split(card: dict) -> tuple[np.ndarray, np.ndarray]:
    data = card["data"]
    if data["dataset"] == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        idx = np.asarray(data["test_indices"], dtype=np.int64)
        x = (d.images.astype(np.float32) / 16.0)[:, None][idx]
        return x, d.target[idx].astype(np.int64)
    if data["dataset"] in ("fashion_mnist", "fashion_mnist_small"):
        root = Path("/usr/share/datasets/fashion-mnist")

        def idx_file(name: str) -> np.ndarray:
            raw = gzip.open(root / name).read()
            n = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * n).reshape(dims)

        if data["dataset"] == "fashion_mnist":  # the 10k test file
            x = idx_file("t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
            return x, idx_file("t10k-labels-idx1-ubyte.gz").astype(np.int64)
        # the 8k subset's test rows: indices into the training file
        idx = np.asarray(data["test_indices"], dtype=np.int64)
        x = idx_file("train-images-idx3-ubyte.gz")[idx].astype(np.float32)[:, None] / 255.0
        return x, idx_file("train-labels-idx1-ubyte.gz")[idx].astype(np.int64)
    raise SystemExit(f"don't know how to load dataset {data['dataset']!r}")


def main(bundle: Path) -> None:
    import onnxruntime as ort
    import torch

    card = json.loads((bundle / "card.json").read_text())
    x, y = test_split(card)
    shape = card["input"]["shape"][1:]
    x = x.reshape(len(x), *shape)

    ts = torch.jit.load(str(bundle / "model.pt")).eval()
    with torch.no_grad():
        logits_ts = ts(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits_onnx = sess.run(None, {sess.get_inputs()[0].name: x})[0]

    acc_ts = float((logits_ts.argmax(1) == y).mean())
    acc_onnx = float((logits_onnx.argmax(1) == y).mean())
    diff = float(np.abs(logits_ts - logits_onnx).max())
    print(
        json.dumps(
            {
                "test_images": len(y),
                "torchscript_accuracy": acc_ts,
                "onnx_accuracy": acc_onnx,
                "max_abs_logit_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
