"""Channel and rank rounding: compressed widths land on multiples of :data:`CHANNEL_MULTIPLE`.

A pruned or factorized width of 13 or 27 is a workload nobody else has: its tuning records are
never reused and its kernels vectorize badly (AVX2 holds 8 floats, a 32-lane int8 dot product
wants channel counts in steps of 4-8). AIMET calls this rank rounding. Every width the
compression passes produce goes through :func:`round_channels`, so the trained pipeline and the
untrained structure of the pre-filter (``workers.probe.structure``) agree by construction, and
the model card records the multiple.
"""

from __future__ import annotations

CHANNEL_MULTIPLE = 8


def round_channels(n: int, full: int, multiple: int = CHANNEL_MULTIPLE, *, up: bool = False) -> int:
    """``n`` (a width or rank of at most ``full``) moved to the nearest multiple of ``multiple``
    (``up``: the next one, e.g. for a rank that must keep an energy share).

    Ties go down (the user asked to compress). The result is at least ``multiple`` and at most
    ``full``; ``n == full`` and a layer no wider than ``multiple`` keep ``n``.
    """
    if not 1 <= n <= full:
        raise ValueError(f"width {n} is outside 1..{full}")
    if n == full or multiple <= 1 or full <= multiple:
        return n
    lo = n // multiple * multiple
    if lo == n:
        return n
    if lo == 0:  # below one multiple: the multiple itself
        return multiple
    hi = lo + multiple
    best = hi if up or hi - n < n - lo else lo
    return min(best, full)
