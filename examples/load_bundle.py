"""Load an hwnas model bundle with plain PyTorch and ONNX Runtime (no hwnas import) and score it.

Usage: python examples/load_bundle.py BUNDLE_DIR [YOUR_DATA.npz]

Prints the test-split accuracy of model.pt (TorchScript) and model.onnx, and how far their
logits differ. The test split is rebuilt from the card (dataset + the test row indices); for an
uploaded dataset (user/<name>) give the .npz you uploaded (x_test, y_test; uint8 images are
scaled to [0, 1] as hwnas does). A model of an uploaded network takes its input normalized as
the card's network.normalization says (mean / std per channel), as yours did.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np


def test_split(card: dict, upload: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    data = card["data"]
    if data["dataset"].startswith("user/"):
        if upload is None:
            raise SystemExit(f"{data['dataset']} is an upload: give its .npz as the 2nd argument")
        with np.load(upload, allow_pickle=False) as z:
            x, y = z["x_test"], z["y_test"].astype(np.int64)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return (x[:, None] if x.ndim == 3 else x), y
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


def normalized(x: np.ndarray, card: dict) -> np.ndarray:
    """The input as an uploaded network takes it (the card's network.normalization)."""
    norm = (card.get("network") or {}).get("normalization") or {"kind": "unit"}
    if norm["kind"] != "mean_std":
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(norm["mean"], np.float32).reshape(shape)
    std = np.asarray(norm["std"], np.float32).reshape(shape)
    return ((x - mean) / std).astype(np.float32)


def main(bundle: Path, upload: Path | None = None) -> None:
    import onnxruntime as ort
    import torch

    card = json.loads((bundle / "card.json").read_text())
    x, y = test_split(card, upload)
    shape = card["input"]["shape"][1:]
    x = normalized(x.reshape(len(x), *shape), card)

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
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
