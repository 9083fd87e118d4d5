"""The per-candidate compression order: prune -> factorize -> sparsify -> fine-tune (KD) ->
fold BN -> cluster / quantize (QAT or PTQ).

Split in two so one shrunk model can be quantized at several bit-widths (the compression
benchmark does; a search may too): :func:`shrink` changes the structure (channels, ranks,
zeros), :func:`quantize_child` the weight code.
"""

from __future__ import annotations

import copy
from typing import Any

from workers.compress.cluster import attach_clusters
from workers.compress.fold import fold_batchnorm
from workers.compress.lowrank import factorize_model
from workers.compress.prune import prune_model
from workers.compress.quantize import (
    attach_act_quant,
    attach_fake_quant,
    bake,
    calibrate,
    quantize_weights,
    snap_bias,
)
from workers.compress.sparse import bake_masks, remask, sparsify_model
from workers.data import Split
from workers.models import CompressibleNet, spec_of, weight_layers
from workers.train import Recipe, batches, fit, subset


def _finetuner(train: Split, recipe: Recipe, teacher: CompressibleNet | None):  # type: ignore[no-untyped-def]
    ft = subset(train, recipe.train_subset, recipe.seed)

    def finetune(net: CompressibleNet, epochs: int = 1, stage: str = "fine-tuning epoch") -> None:
        fit(
            net,
            ft,
            epochs=epochs,
            recipe=recipe,
            teacher=teacher,
            lr=recipe.finetune_lr,
            stage=stage,
        )

    return ft, finetune


def shrink(parent: CompressibleNet, train: Split, recipe: Recipe) -> CompressibleNet:
    """A copy of ``parent`` pruned (its channel groups' ratios), factorized (each layer's
    ``hw.rank``), magnitude-sparsified (each layer's ``hw.sparsity``) and fine-tuned, with KD
    from ``parent`` when ``recipe.kd``; BN not yet folded, zeros baked into the weights."""
    child = copy.deepcopy(parent).eval()
    ft, finetune = _finetuner(train, recipe, parent if recipe.kd else None)
    prune_model(
        child,
        recipe.prune_criterion,  # type: ignore[arg-type]
        steps=recipe.prune_steps,
        batches=lambda: batches(ft, recipe.batch_size, 8, recipe.seed),
        finetune=finetune,
    )
    factorize_model(
        child,
        conv_method=recipe.conv_decomposition,  # type: ignore[arg-type]
        energy=recipe.rank_energy,
    )
    sparsify_model(
        child,
        steps=recipe.sparsity_steps,
        scope=recipe.sparsity_scope,  # type: ignore[arg-type]
        finetune=finetune,
    )
    finetune(child, recipe.finetune_epochs)
    return bake_masks(child).eval()


def quantize_child(
    child: CompressibleNet, train: Split, recipe: Recipe, teacher: CompressibleNet | None
) -> tuple[CompressibleNet, dict[str, Any]]:
    """Fold BN, calibrate activation quantizers, then PTQ (every weight >= 8 bits, or
    ``quant="ptq"``) or QAT (fake-quant fine-tune with KD from ``teacher``; k-means layers
    clustered and their centroids fine-tuned in the same pass, zeros of sparse layers kept),
    and snap the int8 layers' biases to their int32 grid, in place."""
    ft, finetune = _finetuner(train, recipe, teacher if recipe.kd else None)
    fold_batchnorm(child)
    info: dict[str, Any] = {
        "act_quantizers": len(attach_act_quant(child, recipe.act_observer))  # type: ignore[arg-type]
    }
    if info["act_quantizers"]:
        calibrate(child, [x for x, _ in batches(ft, recipe.batch_size, recipe.calib_batches, 1)])
    specs = [spec_of(m) for _, m in weight_layers(child)]
    low_bits = any(s.wbits < 8 for s in specs)
    clusters = any(s.wformat == "kmeans" for s in specs)
    qat = recipe.quant == "qat" or (recipe.quant == "auto" and low_bits) or clusters
    info["clustered_layers"] = attach_clusters(child)  # centroids are fine-tuned: always QAT
    if qat:
        remask(child)
        attach_fake_quant(child)
        finetune(child, recipe.qat_epochs, stage="quantization-aware training epoch")
        bake(child)
    else:
        quantize_weights(child, recipe.weight_observer)
    snap_bias(child)  # int8 layers' biases on their int32 grid: ONNX Runtime adds the same
    info["quantization"] = "qat" if qat else "ptq"
    return child.eval(), info


def compress(
    parent: CompressibleNet, train: Split, recipe: Recipe
) -> tuple[CompressibleNet, dict[str, Any]]:
    """The whole order on a copy of ``parent``; the choices come from its ``hw`` annotations
    and channel groups (set by the builder from the candidate)."""
    return quantize_child(shrink(parent, train, recipe), train, recipe, parent)
