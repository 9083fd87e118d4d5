"""Every profile's target builds; models cross-compile for ARM (aarch64 ELF) and CUDA without the
device; on a CUDA host, the compiled model runs and matches PyTorch."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hw_profiles import Profile, get_profile, list_profiles
from workers.probe import reach
from workers.probe.targets import device_of, resolve_target, tvm

EM_AARCH64, EM_X86_64 = 183, 62
CUDA_PROFILES = ["nvidia/h100", "nvidia/a100"]


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    with torch.no_grad():  # non-trivial BN statistics, so folding BN is checked too
        bn = net[1]
        assert isinstance(bn, nn.BatchNorm2d)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def example() -> tuple[nn.Module, torch.Tensor]:
    return _cnn(), torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def relax_mod(example: tuple[nn.Module, torch.Tensor]) -> Any:
    """The CNN as a Relax module: torch.export -> from_exported_program -> BN decomposed."""
    t = tvm()
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    net, x = example
    ep = torch.export.export(net, (x,))
    mod = from_exported_program(ep, unwrap_unit_return_tuple=True)
    return relax.transform.DecomposeOpsForInference()(mod), t


def _compile(relax_mod: Any, profile: Profile) -> Any:
    mod, t = relax_mod
    from tvm import relax

    target = resolve_target(profile)
    return t.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int(struct.unpack_from("<H", head, 18)[0])


def _modules(m: Any) -> list[Any]:
    return [m, *(x for i in m.imports for x in _modules(i))]


# --- targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_profile_target_builds(profile: Profile) -> None:
    target = resolve_target(profile)
    kind = profile.target["kind"]
    assert target.kind.name == kind
    if kind == "llvm":
        from tvm.target import codegen

        mcpu = str(target.attrs["mcpu"]) if "mcpu" in target.attrs else None
        if mcpu:  # TVM only logs an unknown -mcpu and falls back to generic: check it here
            assert mcpu in list(codegen.llvm_get_cpu_archlist(target)), mcpu
        features = set(codegen.llvm_get_cpu_features(target))
        for attr in profile.target.get("mattr", []):
            assert attr.lstrip("+") in features, (attr, sorted(features))
        if "mtriple" in profile.target:
            assert str(target.attrs["mtriple"]) == profile.target["mtriple"]
        if profile.supports.int8_dot == "sdot":
            assert target.attrs["feature.has_dotprod"]
    if kind == "cuda":
        assert str(target.attrs["arch"]) == profile.target["arch"]


# --- ARM ----------------------------------------------------------------------------------------


def _cross_compiler(profile: Profile) -> str:
    cc = profile.cross_compiler
    assert cc, f"{profile.name} has no cross_compiler"
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (bash scripts/setup-system.sh installs it)")
    crti = subprocess.run([cc, "-print-file-name=crti.o"], capture_output=True, text=True)
    if not os.path.isabs(crti.stdout.strip()):
        pytest.skip(f"{cc} has no target C library (crti.o): install libc6-dev-arm64-cross")
    return cc


@pytest.mark.parametrize("name", ["arm/rasp4b64", "arm/rasp5"])
def test_arm_cross_compile_gives_an_aarch64_library(
    relax_mod: Any, name: str, tmp_path: Path
) -> None:
    profile = get_profile(name)
    cc = _cross_compiler(profile)
    ex = _compile(relax_mod, profile)
    path = tmp_path / "model.so"
    ex.export_library(str(path), cc=cc)
    assert _elf_machine(path) == EM_AARCH64
    if shutil.which("readelf"):
        header = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True)
        assert "Machine:                           AArch64" in header.stdout, header.stdout
        assert "DYN" in header.stdout  # a shared object the board's RPC server can load


def test_tuning_builder_exports_candidates_for_the_board(relax_mod: Any) -> None:
    """MetaSchedule's builder workers export tuning candidates with the profile's cross
    compiler (registered by worker_init), so an ARM board's RPC runner can load them."""
    from tvm_ffi import get_global_func

    from workers.probe._builder import EXPORT_CROSS, worker_init

    profile = get_profile("arm/rasp4b64")
    worker_init(_cross_compiler(profile))
    path = Path(get_global_func(EXPORT_CROSS)(_compile(relax_mod, profile).mod))
    assert path.suffix == ".so" and _elf_machine(path) == EM_AARCH64


# --- CUDA without a GPU -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CUDA_PROFILES)
def test_cuda_compiles_without_a_gpu(relax_mod: Any, name: str, tmp_path: Path) -> None:
    profile = get_profile(name)
    ex = _compile(relax_mod, profile)
    kinds = [m.kind for m in _modules(ex.mod)]
    assert "cuda" in kinds and "llvm" in kinds, kinds
    (cuda,) = [m for m in _modules(ex.mod) if m.kind == "cuda"]
    source = cuda.inspect_source("")
    assert source.count("__global__") >= 3, "expected a kernel per fused conv/pool/dense"
    path = tmp_path / "model.so"
    ex.export_library(str(path))  # host code + CUDA source; compiled to a cubin when loaded
    assert _elf_machine(path) == EM_X86_64 and path.stat().st_size > 0


@pytest.mark.parametrize("name", CUDA_PROFILES)
def test_cuda_source_compiles_for_the_profile_arch(relax_mod: Any, name: str) -> None:
    """nvcc builds the generated kernels for the profile's ``sm_XY`` (what the GPU host does)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc (CUDA toolkit) is not on PATH")
    from tvm.support import nvcc

    profile = get_profile(name)
    ex = _compile(relax_mod, profile)
    (cuda,) = [m for m in _modules(ex.mod) if m.kind == "cuda"]
    with resolve_target(profile):
        fatbin = nvcc.compile_cuda(
            cuda.inspect_source(""),
            target_format="fatbin",
            arch=profile.target["arch"],
            compiler="nvcc",
        )
    assert len(fatbin) > 1000


# --- on a real GPU ------------------------------------------------------------------------------


def _gpu_profile() -> Profile:
    """The shipped nvidia/* profile of this host's GPU, else one made for its compute capability."""
    gpus = reach.cuda_gpus()
    for name in CUDA_PROFILES:
        if reach.reachable(get_profile(name))[0]:
            return get_profile(name)
    cc = gpus[0][1] if gpus else tvm().cuda(0).compute_version
    arch = "sm_" + cc.replace(".", "")
    return get_profile("nvidia/h100").model_copy(
        update={"name": "nvidia/this", "target": {"kind": "cuda", "arch": arch}}
    )


@pytest.mark.gpu
def test_gpu_compile_run_matches_torch(
    relax_mod: Any, example: tuple[nn.Module, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tvm()
    from tvm import relax
    from tvm.support import nvcc  # noqa: F401  (registers the compiler a CUDA module loads with)

    try:
        import cuda.bindings  # noqa: F401  (NVRTC, TVM's default)
    except ImportError:
        if shutil.which("nvcc") is None:
            pytest.skip("loading a CUDA module needs NVRTC (cuda-bindings) or nvcc")
        monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", "nvcc")
    profile = _gpu_profile()
    ex = _compile(relax_mod, profile)
    dev = device_of(profile)
    assert dev.exist, "TVM's CUDA runtime sees no device (libcudart?)"
    vm = relax.VirtualMachine(ex, dev)
    net, x = example
    inp = t.runtime.tensor(x.numpy(), dev)
    out = vm["main"](inp).numpy()
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    vm.save_function("main", "main_saved", inp)
    ms = np.median(vm.time_evaluator("main_saved", dev, number=20, repeat=5)().results) * 1e3
    assert 0 < ms < 100, ms
