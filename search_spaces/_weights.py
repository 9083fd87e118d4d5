"""The weight-code dimensions every joint space shares, and how a layer's code is sampled.

Per layer (or stage / block): ``codebook_bits`` (0 = off) picks weight sharing, which takes the
place of ``wbits`` on that layer; otherwise ``wbits`` picks float (32 / 16), integers (8 / 4 /
2: a true 4-level code), ``ternary`` or ``binary``. ``abits`` is sampled only where the weights
are integer-coded (an 8-bit input then makes the layer an int8 kernel); ``sparsity`` only where
the code has a zero (not binary). Per candidate: ``kd.alpha``, ``kd.temperature`` and
``kd.relation`` set its distillation (used when the job's training has KD on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search_spaces._candidate import INT_CODED, Distill, default_format
from search_spaces._space import Dimension, TrialLike

WBITS_ALLOWED: tuple[int | str, ...] = ("binary", "ternary", 2, 4, 8, 16, 32)
NAMED_CODES = {"binary": (1, "binary"), "ternary": (2, "ternary")}


def wbits_dim(default: tuple[int | str, ...], description: str) -> Dimension:
    return Dimension(name="wbits", allowed=WBITS_ALLOWED, default=default, description=description)


def codebook_dim(default: tuple[int, ...]) -> Dimension:
    return Dimension(
        name="codebook_bits",
        allowed=(0, 2, 3, 4, 5, 6, 8),
        default=default,
        description="weight sharing: a per-layer k-means codebook of 2^bits centroids "
        "(0 = off); takes the place of wbits on that layer and computes as dense float weights",
    )


def sparsity_dim(default: tuple[float, ...]) -> Dimension:
    return Dimension(
        name="sparsity",
        allowed=(0.0, 0.5, 0.75, 0.9),
        default=default,
        description="unstructured magnitude pruning: fraction of the layer's weights zeroed, "
        "stored as a bitmask + values (latency measured dense: no sparse kernels here)",
    )


def kd_dims(
    alpha: tuple[float, ...] = (0.5, 0.9),
    temperature: tuple[float, ...] = (4.0,),
    relation: tuple[float, ...] = (0.0, 1000.0),
) -> list[Dimension]:
    return [
        Dimension(
            name="kd_alpha",
            allowed=(0.0, 0.3, 0.5, 0.7, 0.9),
            default=alpha,
            description="logit-KD weight (0 = cross-entropy only)",
        ),
        Dimension(
            name="kd_temperature",
            allowed=(1.0, 2.0, 4.0, 8.0),
            default=temperature,
            description="logit-KD temperature",
        ),
        Dimension(
            name="kd_relation",
            allowed=(0.0, 100.0, 1000.0, 3000.0),
            default=relation,
            description="relation-KD weight (similarity-preserving loss at every stage)",
        ),
    ]


def sample_code(
    trial: TrialLike, prefix: str, choices: Mapping[str, tuple[Any, ...]]
) -> dict[str, Any]:
    """``wbits``, ``wformat``, ``abits`` and ``sparsity`` of one layer (names ``prefix*``)."""
    book = int(trial.suggest_categorical(f"{prefix}codebook_bits", choices["codebook_bits"]))
    if book:
        wbits, wformat = book, "kmeans"
    else:
        raw = trial.suggest_categorical(f"{prefix}wbits", choices["wbits"])
        wbits, wformat = NAMED_CODES[raw] if isinstance(raw, str) else (int(raw), "")
    integer = (wformat or default_format(wbits)) in INT_CODED
    abits = int(trial.suggest_categorical(f"{prefix}abits", choices["abits"])) if integer else 32
    sparsity = 0.0
    if wformat != "binary":
        sparsity = float(trial.suggest_categorical(f"{prefix}sparsity", choices["sparsity"]))
    return {"wbits": wbits, "wformat": wformat or None, "abits": abits, "sparsity": sparsity}


def sample_distill(
    trial: TrialLike, choices: Mapping[str, tuple[Any, ...]], prefix: str = ""
) -> Distill:
    c, p = choices, f"{prefix}kd."
    return Distill(
        alpha=float(trial.suggest_categorical(f"{p}alpha", c["kd_alpha"])),
        temperature=float(trial.suggest_categorical(f"{p}temperature", c["kd_temperature"])),
        relation=float(trial.suggest_categorical(f"{p}relation", c["kd_relation"])),
    )
