"""Which int8 dot-product path a profile compiles for, from the probing CPU's flags."""

from __future__ import annotations

from typing import Any

import pytest

from hw_profiles import Profile, get_profile, isa

X86_VNNI = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})
X86_AMX = X86_VNNI | {"amx_tile", "amx_int8"}
X86_AVX2 = frozenset({"avx2", "fma"})


def _local(dot: Any) -> Profile:
    return Profile.model_validate(
        {
            "name": "test/cpu",
            "target": {"kind": "llvm", "mcpu": "host"},
            "supports": {"int8_dot": dot},
        }
    )


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(f: frozenset[str], machine: str = "x86_64") -> None:
        monkeypatch.setattr(isa, "host_flags", lambda: f)
        monkeypatch.setattr(isa.platform, "machine", lambda: machine)

    return use


@pytest.mark.parametrize(
    ("cpu", "dot", "want"),
    [
        (X86_VNNI, "auto", "vnni"),
        (X86_AMX, "auto", "vnni"),  # no AMX kernels: VNNI, which every AMX CPU also has
        (X86_AVX2, "auto", "none"),
        (X86_VNNI, "none", "none"),
        (X86_VNNI, "vnni", "vnni"),
        (X86_AVX2, False, "none"),  # older profiles: booleans
        (X86_VNNI, True, "vnni"),
    ],
)
def test_auto_follows_the_probing_cpu(flags: Any, cpu: frozenset[str], dot: Any, want: str) -> None:
    flags(cpu)
    assert isa.resolve_int8_dot(_local(dot)) == want


def test_a_demanded_instruction_the_cpu_lacks_names_both(flags: Any) -> None:
    flags(X86_AVX2)
    with pytest.raises(
        isa.Int8DotError, match=r"test/cpu demands int8_dot = 'vnni'.*avx2.*lacks avx512_vnni"
    ):
        isa.resolve_int8_dot(_local("vnni"))
    with pytest.raises(isa.Int8DotError, match="lacks amx_tile"):
        isa.resolve_int8_dot(_local("amx"))
    flags(X86_AMX)
    with pytest.raises(isa.Int8DotError, match="no kernels in hwnas yet"):
        isa.resolve_int8_dot(_local("amx"))


def test_boards_follow_their_target_not_this_host(flags: Any) -> None:
    flags(X86_AVX2)
    assert isa.resolve_int8_dot(get_profile("arm/rasp5")) == "sdot"
    assert isa.resolve_int8_dot(get_profile("arm/rasp4b64")) == "none"
    auto = get_profile("arm/rasp5").model_copy(update={"supports": _local("auto").supports})
    assert isa.resolve_int8_dot(auto) == "sdot"  # +dotprod in its mattr
    assert isa.resolve_int8_dot(get_profile("nvidia/h100")) == "none"


def test_profiles_refuse_an_instruction_their_target_cannot_emit() -> None:
    a72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    with pytest.raises(ValueError, match=r"'sdot' needs an aarch64 target with '\+dotprod'"):
        Profile.model_validate({"name": "t/a72", "target": a72, "supports": {"int8_dot": "sdot"}})
    with pytest.raises(ValueError, match="'vnni' needs an x86 llvm target"):
        Profile.model_validate({"name": "t/a72", "target": a72, "supports": {"int8_dot": "vnni"}})
    with pytest.raises(ValueError, match="int8_dot"):
        _local("avx2")


def test_host_isa_records_the_architecture_first() -> None:
    recorded = isa.host_isa()
    assert recorded[0] in ("x86_64", "aarch64", "arm64")
    assert set(recorded[1:]) <= set(isa._RECORDED)
