"""Parse job constraints: ``"latency@arm/rasp4b64 <= 15 ms"``, ``"size <= 200 KB"``,
``"accuracy >= 0.85"`` into the study metric they bound, with the bound in its unit."""

from __future__ import annotations

import re
from typing import Literal

from workers.scoring import LATENCY_PREFIX, OBJECTIVES, Constraint

_UNITS: dict[str, dict[str, float]] = {
    "latency": {"": 1.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3},
    "size": {"": 1.0, "b": 1.0, "kb": 1e3, "kib": 1024.0, "mb": 1e6, "mib": 2.0**20},
    "accuracy": {"": 1.0, "%": 0.01},
    "macs": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
    "bitops": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
}
_METRIC = {name: metric for name, (metric, _) in OBJECTIVES.items()}
_OP = {"accuracy": ">="}  # every other metric is bounded from above
_SYNTAX = re.compile(
    r"^\s*(?P<name>[a-z]+)(?:@(?P<profile>\S+))?\s*(?P<op><=|>=|<|>|=)\s*"
    r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-zµ%]*)\s*$"
)


def parse_constraint(text: str, profiles: list[str]) -> Constraint:
    """Parse one constraint; ``ValueError`` says what is wrong with it."""
    m = _SYNTAX.match(text)
    if m is None:
        raise ValueError(
            f"cannot parse {text!r}; write '<metric> <= <number> [unit]', e.g. "
            "'latency@x86/local <= 15 ms', 'size <= 200 KB', 'accuracy >= 0.85'"
        )
    name, profile, op, unit = m["name"], m["profile"], m["op"], m["unit"]
    if name not in _UNITS:
        raise ValueError(
            f"unknown metric {name!r} in {text!r}; use latency[@profile], size, accuracy, "
            "macs or bitops"
        )
    if profile is not None and name != "latency":
        raise ValueError(f"only latency takes a profile ({text!r})")
    want: Literal["<=", ">="] = ">=" if _OP.get(name) == ">=" else "<="
    if op != want:
        raise ValueError(f"{name} constraints are '{want}' bounds, got {op!r} in {text!r}")
    units = _UNITS[name]
    if unit.lower() not in units and unit not in units:
        raise ValueError(
            f"unknown unit {unit!r} for {name} in {text!r}; use one of "
            f"{sorted(u for u in units if u)}"
        )
    bound = float(m["num"]) * units.get(unit, units.get(unit.lower(), 1.0))
    if name == "accuracy" and not 0 <= bound <= 1:
        raise ValueError(f"accuracy bound must lie in [0, 1] (or 0-100 %), got {text!r}")
    if name == "latency":
        if profile is None:
            if len(profiles) != 1:
                raise ValueError(
                    f"{text!r}: name the profile (latency@<profile>) when a job has several"
                )
            profile = profiles[0]
        if profile not in profiles:
            raise ValueError(f"{text!r} names profile {profile!r}, not in profiles {profiles}")
        return Constraint(
            text=text.strip(), metric=f"{LATENCY_PREFIX}{profile}", op=op, bound=bound
        )
    return Constraint(text=text.strip(), metric=_METRIC[name], op=want, bound=bound)
