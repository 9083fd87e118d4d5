"""The timing protocol: libraries timed in interleaved rounds beside the profile's canary.

One *window* times several compiled libraries (the candidate, maybe its dense parent, and the
canary) in ``repeat`` rounds; each round takes one sample of each, in alternating order, so
whatever the machine does during the window touches all of them alike. A sample is the mean of
``number`` runs, raised so that a sample lasts at least ``min_repeat_ms`` (a few-µs model timed
20 times is mostly timer noise). Per library: median / IQR / CV of its samples; against the
canary: the median over rounds of (sample / canary sample), the *normalized* latency, which
cancels the drift between windows (the same library's absolute median swung ~1.6x between
windows on an idle VM here while its ratio to another library stayed within ~7 %).

The same code times local VMs and VMs opened over an RPC session (``workers.probe.rpc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw_profiles import Measure
from workers.probe._stats import summarize
from workers.records import Timing, Window

MAX_NUMBER = 200_000


@dataclass
class Timed:
    """A library ready to time: its VM's saved ``main`` closure and the runs per sample."""

    timer: Any
    number: int


def prepare(vm: Any, dev: Any, inp: Any, m: Measure) -> Timed:
    """Warm ``vm`` up on ``inp`` (a TVM tensor on ``dev``), save the call, size ``number``."""
    for _ in range(m.warmup):
        vm["main"](inp)
    vm.save_function("main", "main_saved", inp)
    once = vm.time_evaluator("main_saved", dev, number=1, repeat=3)
    t1 = max(min(once().results), 1e-9)
    number = max(m.number, math.ceil(m.min_repeat_ms / 1e3 / t1))
    number = min(number, MAX_NUMBER)
    return Timed(vm.time_evaluator("main_saved", dev, number=number, repeat=1), number)


def rounds(items: list[Timed], repeat: int) -> list[list[float]]:
    """``repeat`` interleaved samples (seconds) of each item, order alternating per round."""
    samples: list[list[float]] = [[] for _ in items]
    order = list(range(len(items)))
    for r in range(repeat):
        for i in order if r % 2 == 0 else order[::-1]:
            samples[i].append(float(items[i].timer().mean))
    return samples


def timing_of(samples_s: list[float], number: int) -> Timing:
    return Timing(**summarize(samples_s), number=number)


def ratio_stats(samples: list[float], canary: list[float]) -> tuple[float, float]:
    """Median and IQR over rounds of sample / canary sample."""
    r = np.asarray(samples) / np.asarray(canary)
    q25, med, q75 = np.percentile(r, [25, 50, 75])
    return float(med), float(q75 - q25)


def window(
    items: list[Timed], m: Measure, *, canary: int | None, quiet: str, lease_wait_s: float = 0.0
) -> list[Window]:
    """Time ``items`` in one window; ``canary`` is the index of the canary among them.

    When the first item's CV exceeds ``m.max_cv`` the window is timed once more and the run
    with the steadier first item kept (``remeasured``).
    """
    samples = rounds(items, m.repeat)
    remeasured = False
    if summarize(samples[0])["cv"] > m.max_cv:
        again = rounds(items, m.repeat)
        remeasured = True
        if summarize(again[0])["cv"] < summarize(samples[0])["cv"]:
            samples = again
    out = []
    for i, item in enumerate(items):
        norm = iqr = None
        if canary is not None and i != canary:
            norm, iqr = ratio_stats(samples[i], samples[canary])
        out.append(
            Window(
                timing=timing_of(samples[i], item.number),
                canary=None if canary is None else timing_of(samples[canary], items[canary].number),
                normalized=norm,
                normalized_iqr=iqr,
                quiet=quiet,  # type: ignore[arg-type]
                lease_wait_s=round(lease_wait_s, 4),
                remeasured=remeasured,
            )
        )
    return out
