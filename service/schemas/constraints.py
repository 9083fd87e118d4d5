"""Job constraints: ``"latency@arm/rasp4b64 <= 15 ms"``, ``"size <= 200 KB"``,
``"accuracy >= 0.85"``, parsed into the study metric they bound, with the bound in its unit.

One grammar (:func:`grammar`) is both what the parser accepts and the ``pattern`` the OpenAPI
document states, so a constraint the schema allows always parses and one it forbids never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
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
_SP = "[ \t]*"
# a non-negative decimal, exponent of at most two digits (1e999 would be an infinite bound)
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,2})?"
_FRACTION = r"(?:0+(?:\.[0-9]*)?|0*\.[0-9]+|0*1(?:\.0*)?)"  # 0 .. 1
_PERCENT = r"(?:0*100(?:\.0*)?|0*[0-9]{1,2}(?:\.[0-9]*)?|0*\.[0-9]+)"  # 0 .. 100


def _anycase(word: str) -> str:
    """``kb`` -> ``[kK][bB]``: JSON Schema patterns have no case-insensitive flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() and c != "µ" else c for c in word)


def _units(metric: str) -> str:
    units = sorted((u for u in _UNITS[metric] if u), key=len, reverse=True)
    return f"(?:{_SP}(?:{'|'.join(_anycase(u) for u in units)}))?"


def _escape(name: str) -> str:
    # profile names are [a-z0-9/._-]; only '.' is special (a '\-' escape is not valid ECMA)
    return name.replace(".", r"\.")


@cache
def grammar(profiles: tuple[str, ...]) -> str:
    """The constraint grammar as an anchored regular expression (ECMA 262 and Python alike)."""
    at = f"(?:@(?:{'|'.join(_escape(p) for p in profiles)}))?" if profiles else ""
    upper = [
        f"latency{at}{_SP}<={_SP}{_NUM}{_units('latency')}",
        f"size{_SP}<={_SP}{_NUM}{_units('size')}",
        f"macs{_SP}<={_SP}{_NUM}{_units('macs')}",
        f"bitops{_SP}<={_SP}{_NUM}{_units('bitops')}",
    ]
    accuracy = f"accuracy{_SP}>={_SP}(?:{_FRACTION}|{_PERCENT}{_SP}%)"
    return f"^{_SP}(?:{'|'.join([*upper, accuracy])}){_SP}$"


_PARTS = re.compile(
    r"^\s*(?P<name>[a-z]+)(?:@(?P<profile>\S+))?\s*(?P<op><=|>=)\s*"
    r"(?P<num>[0-9]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-zµ%]*)\s*$"
)


def parse_constraint(text: str, profiles: Iterable[str], known: Iterable[str] = ()) -> Constraint:
    """Parse one constraint of a job measuring ``profiles``; ``ValueError`` says what is wrong.

    ``known`` are the profile names the grammar admits (default: ``profiles``). A bare
    ``latency`` bound needs exactly one profile (:func:`expand_latency` names it first).
    """
    profiles = list(profiles)
    check_syntax(text, tuple(sorted(set(known) | set(profiles))))
    m = _PARTS.match(text)
    assert m is not None  # the grammar is a sub-language of _PARTS
    name, profile, op, unit = m["name"], m["profile"], m["op"], m["unit"]
    units = _UNITS[name]
    bound = float(m["num"]) * units.get(unit, units.get(unit.lower(), 1.0))
    if name == "latency":
        if profile is None:
            if len(profiles) != 1:
                raise ValueError(f"{text!r}: name the profile (latency@<profile>)")
            profile = profiles[0]
        if profile not in profiles:
            raise ValueError(f"{text!r} names profile {profile!r}, not in profiles {profiles}")
        return Constraint(
            text=text.strip(), metric=f"{LATENCY_PREFIX}{profile}", op="<=", bound=bound
        )
    want: Literal["<=", ">="] = ">=" if name == "accuracy" else "<="
    assert op == want
    return Constraint(text=text.strip(), metric=_METRIC[name], op=want, bound=bound)


def check_syntax(text: str, profiles: tuple[str, ...]) -> None:
    """Raise ``ValueError`` saying what is wrong unless ``text`` is in the grammar for the known
    ``profiles``."""
    if re.fullmatch(grammar(tuple(sorted(profiles))), text) is None:
        raise ValueError(_diagnose(text, profiles))


_LOOSE = re.compile(
    r"^\s*(?P<name>[a-z]+)(?:@(?P<profile>\S+))?\s*(?P<op><=|>=|<|>|=)\s*"
    r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-zµ%]*)\s*$"
)


def _diagnose(text: str, profiles: tuple[str, ...]) -> str:
    """What is wrong with a constraint outside the grammar, as precisely as can be said."""
    m = _LOOSE.match(text)
    if m is None:
        return (
            f"cannot parse {text!r}; write '<metric> <= <number> [unit]' with metric "
            "latency[@profile] (ms, us, s), size (B, KB, KiB, MB, MiB), macs or bitops (k, M, G), "
            "or 'accuracy >= <0..1 | 0..100 %>', e.g. 'latency@x86/local <= 15 ms', "
            "'size <= 200 KB', 'accuracy >= 0.85'"
        )
    name, profile, op, unit = m["name"], m["profile"], m["op"], m["unit"]
    if name not in _UNITS:
        return (
            f"unknown metric {name!r} in {text!r}; use latency[@profile], size, accuracy, "
            "macs or bitops"
        )
    if profile is not None and name != "latency":
        return f"only latency takes a profile ({text!r})"
    if profile is not None and profile not in profiles:
        return f"{text!r} names unknown profile {profile!r}; known: {list(profiles)}"
    want = ">=" if name == "accuracy" else "<="
    if op != want:
        return f"{name} constraints are '{want}' bounds, got {op!r} in {text!r}"
    units = _UNITS[name]
    if unit.lower() not in units and unit not in units:
        return (
            f"unknown unit {unit!r} for {name} in {text!r}; use one of "
            f"{sorted(u for u in units if u)}"
        )
    if name == "accuracy":
        return f"accuracy bound must lie in [0, 1] (or 0-100 %), got {text!r}"
    return f"cannot parse {text!r} (a number of at most two exponent digits)"


def named_profile(text: str) -> str | None:
    """The profile a ``latency@<profile>`` constraint names, else None."""
    m = _PARTS.match(text)
    return m["profile"] if m is not None else None


def expand_latency(text: str, profiles: list[str]) -> list[str]:
    """A bare ``latency <= x`` bounds every profile: one ``latency@<p> <= x`` each."""
    m = _PARTS.match(text)
    if m is None or m["name"] != "latency" or m["profile"] is not None:
        return [text.strip()]
    rest = text.strip()[len("latency") :]
    return [f"latency@{p}{rest}" for p in profiles]
