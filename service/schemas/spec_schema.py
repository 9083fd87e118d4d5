"""The OpenAPI truth about :class:`~service.schemas.spec.JobSpec`: every rule its validators
enforce that JSON Schema can state, built from the same registries the validators read.

What is stated: the built-in dataset names and the upload-name pattern, the known spaces,
profiles and objectives, the constraint grammar (:func:`service.schemas.constraints.grammar`),
and per space (and granularity, where it changes the parameter names) its overrides and the
parameters ``fixed_params`` may pin. What JSON Schema cannot state is left to the validators and
their 422 (none left for a request that follows the schema).
"""

from __future__ import annotations

from typing import Any

from hw_profiles import list_profiles
from search_spaces import get_space, list_spaces
from service.schemas.constraints import grammar
from workers.data import list_datasets
from workers.scoring import OBJECTIVES


def refine(schema: dict[str, Any]) -> None:
    """Tighten the generated schema of JobSpec in place."""
    props = schema["properties"]
    profiles = [p.name for p in list_profiles()]
    from service.schemas.spec import USER_DATASET

    props["dataset"]["anyOf"] = [
        {"enum": [d.name for d in list_datasets()]},
        {"pattern": USER_DATASET},
    ]
    props["space"]["enum"] = list_spaces(uploads=True)
    props["profiles"]["items"] = {"type": "string", "enum": profiles}
    props["profiles"]["uniqueItems"] = True
    props["objectives"]["items"] = {
        "type": "string",
        "enum": [*OBJECTIVES, "latency", *(f"latency@{p}" for p in profiles)],
    }
    props["objectives"]["uniqueItems"] = True
    props["constraints"]["items"] = {"type": "string", "pattern": grammar(tuple(sorted(profiles)))}
    props["constraints"]["uniqueItems"] = True
    schema["oneOf"] = [
        *(v for name in list_spaces() for v in _variants(name)),
        _network_variant(),
    ]


def _variants(space: str) -> list[dict[str, Any]]:
    """One branch per group of granularities that pin the same parameter names."""
    from service.schemas.spec import fixed_param_dimensions

    cls = get_space(space)
    overrides = cls.describe()["overrides_schema"]
    allowed = {d.name: list(d.allowed) for d in cls.dimensions()}
    pinnable = {g: fixed_param_dimensions(space, g) for g in ("stage", "block")}
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for g, dims in pinnable.items():
        groups.setdefault(tuple(sorted(dims.items())), []).append(g)
    out = []
    for pairs, granularities in groups.items():
        fixed = {
            "type": "object",
            "additionalProperties": False,
            "properties": {gene: {"enum": allowed[dim]} for gene, dim in pairs},
        }
        variant: dict[str, Any] = {
            "type": "object",
            "properties": {
                "space": {"const": space},
                "granularity": {"enum": granularities},
                "space_overrides": overrides,
                "fixed_params": fixed,
            },
            "required": ["space"] if "stage" in granularities else ["space", "granularity"],
        }
        variant["properties"]["network"] = {"type": "null"}
        out.append(variant)
    return out


def _network_variant() -> dict[str, Any]:
    """Space ``network``: the job names its upload; ``fixed_params`` pins ``<group>.<dim>``
    (which groups exist is the upload's: GET /v1/networks/{name} lists its parameters)."""
    cls = get_space("network")
    allowed = {d.name: list(d.allowed) for d in cls.dimensions()}
    per_group = ("codebook_bits", "wbits", "abits", "sparsity", "prune", "rank")
    patterns: dict[str, Any] = {
        rf"^[A-Za-z0-9_.\-]{{1,100}}\.{dim}$": {"enum": allowed[dim]} for dim in per_group
    }
    patterns |= {
        rf"^kd\.{d}$": {"enum": allowed[f"kd_{d}"]} for d in ("alpha", "temperature", "relation")
    }
    return {
        "type": "object",
        "properties": {
            "space": {"const": "network"},
            "network": {"type": "string"},
            "space_overrides": cls.describe()["overrides_schema"],
            "fixed_params": {
                "type": "object",
                "patternProperties": patterns,
                "additionalProperties": False,
            },
        },
        "required": ["space", "network"],
    }
