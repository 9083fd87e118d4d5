"""The probing CPU's instruction set, and which int8 dot-product path a profile compiles for.

``supports.int8_dot`` in a profile says which instruction the int8 kernels use:

- ``auto``: on a local x86 profile, what this CPU has (AVX-512 VNNI -> ``vnni``, else
  ``none``); on a board over RPC, what the target's ``mattr`` enables (``+dotprod`` ->
  ``sdot``); on a GPU, ``none`` (int8 layers compile through the default GPU schedules).
- ``vnni`` / ``sdot``: demanded; a local profile whose CPU lacks it is refused, naming both.
- ``amx``: accepted in a profile but refused when resolved: hwnas has no AMX kernels yet (no
  CPU with AMX was available to test them on).
- ``none``: int8 layers run as plain vectorized integer code.

No torch / tvm imports: the API process checks jobs against this at submit.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

from hw_profiles._schema import Profile

# Flags worth recording beside a latency (the rest of /proc/cpuinfo says nothing about speed).
_RECORDED = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
)
# The instruction each path needs, as /proc/cpuinfo names it.
_NEEDS = {"vnni": ("avx512_vnni",), "amx": ("amx_tile", "amx_int8"), "sdot": ("asimddp",)}


class Int8DotError(ValueError):
    """A profile demands an int8 dot-product path this machine cannot run."""


@cache
def host_flags() -> frozenset[str]:
    """This CPU's flags from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def host_isa() -> list[str]:
    """This machine's architecture and the recorded subset of its flags, e.g.
    ``["x86_64", "avx2", "fma"]``: stored beside every latency measured here."""
    flags = host_flags()
    return [platform.machine(), *(f for f in _RECORDED if f in flags)]


def host_int8_dots() -> list[str]:
    """The int8 dot-product paths this CPU can run (``vnni``, ``amx``, ``sdot``)."""
    flags = host_flags()
    return [d for d, needs in _NEEDS.items() if all(f in flags for f in needs)]


def _is_arm(profile: Profile) -> bool:
    triple = str(profile.target.get("mtriple", ""))
    return triple.startswith(("aarch64", "arm64")) or (
        not triple and platform.machine() in ("aarch64", "arm64")
    )


def resolve_int8_dot(profile: Profile) -> str:
    """The int8 dot-product path ``profile`` compiles for: ``vnni``, ``sdot`` or ``none``.

    Raises:
        Int8DotError: the profile demands an instruction the probing CPU lacks (local
            profiles), or ``amx``, which has no kernels yet.
    """
    dot = profile.supports.int8_dot
    kind = str(profile.target.get("kind"))
    if dot == "none" or kind != "llvm":
        return "none"
    if not profile.is_local:  # a board: the cross-compile target is what the code uses
        if dot == "auto":
            mattr = profile.target.get("mattr", [])
            return "sdot" if _is_arm(profile) and "+dotprod" in mattr else "none"
        if dot == "amx":
            raise Int8DotError(f"{profile.name}: int8_dot = 'amx' has no kernels in hwnas yet")
        return dot
    have = host_int8_dots()
    if dot == "auto":
        if _is_arm(profile):
            return "sdot" if "sdot" in have else "none"
        return "vnni" if "vnni" in have else "none"
    if dot not in have:
        lacks = " + ".join(_NEEDS[dot])
        raise Int8DotError(
            f"profile {profile.name} demands int8_dot = {dot!r}, but the probing CPU "
            f"({platform.machine()}: {' '.join(host_isa()[1:]) or 'no recorded flags'}) "
            f"lacks {lacks}"
        )
    if dot == "amx":
        raise Int8DotError(
            f"profile {profile.name}: int8_dot = 'amx' has no kernels in hwnas yet (this CPU "
            "has AMX; use 'vnni' or 'auto')"
        )
    return dot
