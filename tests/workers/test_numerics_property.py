"""Property tests over random candidates of every registered space: the compiled TVM graph and
every exported file compute what the PyTorch model computes.

For each space (parametrized over the registry, so a new space is covered the day it is
registered), seeded random candidates are built as the pipeline shapes them (pruned,
factorized, BN folded, activation quantizers calibrated, weights quantized), then:

- the deployable copy (int8 custom ops, kept activation quantizers) and the TVM library
  compiled from it agree with the fake-quant model: argmax on >= 99 % of 64 inputs, and the
  largest logit difference a rounding-level fraction of the logit range;
- ``model.pt`` (TorchScript) and ``model.onnx`` in ONNX Runtime (default optimizations) agree
  with it the same way.

Untrained models have close logits, so a single rounding tie may flip an argmax: the bounds
allow one flip in 64 and judge the size of the logit error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hw_profiles import get_profile
from search_spaces import SpaceContext, get_space, list_spaces
from workers.export import export_onnx, export_torchscript
from workers.models import example_input
from workers.probe.build import compile_module
from workers.probe.lowering import deployable, to_relax
from workers.probe.measure import run_outputs
from workers.probe.pretune import sample_candidates
from workers.probe.structure import structural_model
from workers.probe.targets import device_of, resolve_target

PER_SPACE = 2
IMAGE = SpaceContext(input_shape=(1, 12, 12), num_classes=10)
FLAT = SpaceContext(input_shape=(1, 8, 8), num_classes=10)  # flattened by the MLP spaces


def _candidates(name: str) -> list[object]:
    cls = get_space(name)
    ctx = IMAGE
    try:
        cls.check_context(ctx)
    except ValueError:
        ctx = FLAT
    return list(sample_candidates(cls(ctx), PER_SPACE, seed=sum(map(ord, name))))


def _agree(got: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-4) -> None:
    """Argmax on >= 63 of 64 inputs, and the largest logit error at most ``tol`` of the largest
    logit: float rounding, not a different computation (a dropped 8-bit activation quantizer
    was ~1e-1, ONNX Runtime re-quantizing float weights ~4e-2, MatMulNBits ~2e-3)."""
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    scale = float(np.abs(ref).max()) or 1.0
    rel = float(np.abs(got - ref).max()) / scale
    assert agree >= 63 / 64, f"{what}: argmax agreement {agree:.3f}, max rel err {rel:.2e}"
    assert rel < tol, f"{what}: max |diff| {rel:.2e} of the largest logit (bound {tol:g})"


@pytest.mark.parametrize("space", list_spaces())
def test_random_candidates_compile_and_export_to_what_pytorch_computes(
    space: str, tmp_path: Path
) -> None:
    from tvm import relax

    profile = get_profile("x86/local")
    target = resolve_target(profile)
    dev = device_of(profile)
    for i, cand in enumerate(_candidates(space)):
        net = structural_model(cand, seed=i)  # type: ignore[arg-type]
        x = torch.randn(64, *cand.input_shape, generator=torch.Generator().manual_seed(i))  # type: ignore[attr-defined]
        with torch.no_grad():
            ref = net(x).numpy()
        label = f"{space} #{i} {cand.summary()}"  # type: ignore[attr-defined]
        dep, _ = deployable(net, profile)
        with torch.no_grad():
            _agree(dep(x).numpy(), ref, f"deployable copy of {label}")
        example = example_input(cand)  # type: ignore[arg-type]
        vm = relax.VirtualMachine(
            compile_module(to_relax(dep, example), target, profile, None), dev
        )
        _agree(
            run_outputs(vm, dev, [x[j : j + 1].numpy() for j in range(len(x))]), ref, f"TVM {label}"
        )

        export_torchscript(net, example, tmp_path / f"{i}.pt")
        with torch.no_grad():
            ts = torch.jit.load(str(tmp_path / f"{i}.pt"))(x).numpy()
        _agree(ts, ref, f"TorchScript {label}")
        export_onnx(net, example, tmp_path / f"{i}.onnx")
        sess = ort.InferenceSession(str(tmp_path / f"{i}.onnx"), providers=["CPUExecutionProvider"])
        _agree(sess.run(None, {"input": x.numpy()})[0], ref, f"ONNX Runtime {label}")
