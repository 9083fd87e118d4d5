"""Training, knowledge-distillation fine-tuning and evaluation on numpy splits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import Distill
from workers import progress
from workers.data import Split
from workers.data._rows import take
from workers.lease import ComputeSlots


@dataclass(frozen=True)
class Recipe:
    """How a dense parent is trained and a compressed child fine-tuned (see service Training)."""

    epochs: int = 20
    finetune_epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    kd: bool = True
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    feature_kd: float = 0.0
    kd_relation: float = 0.0
    prune_criterion: str = "l1"
    prune_steps: int = 1
    sparsity_steps: int = 1
    sparsity_scope: str = "layer"
    conv_decomposition: str = "tucker2"
    rank_energy: float | None = None
    quant: str = "auto"
    qat_epochs: int = 2
    act_observer: str = "minmax"
    weight_observer: str = "minmax"
    calib_batches: int = 16
    train_subset: int | None = None
    augment: str = "off"
    seed: int = 0

    def with_distill(self, distill: Distill | None) -> Recipe:
        """This recipe with a candidate's distillation settings (when KD is on at all)."""
        if distill is None or not self.kd:
            return self
        return replace(
            self,
            kd_alpha=distill.alpha,
            kd_temperature=distill.temperature,
            kd_relation=distill.relation,
        )

    def parent_part(self) -> dict[str, object]:
        """The fields a trained parent depends on (its cache key)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
        }


def _batches(split: Split, batch_size: int, rng: np.random.Generator | None):  # type: ignore[no-untyped-def]
    order = rng.permutation(len(split)) if rng is not None else np.arange(len(split))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield torch.from_numpy(split.x[idx]), torch.from_numpy(split.y[idx])


def fit(
    model: nn.Module,
    data: Split,
    *,
    epochs: int,
    recipe: Recipe,
    teacher: nn.Module | None = None,
    lr: float | None = None,
    stage: str = "training epoch",
) -> float:
    """Train ``model`` with Adam + cosine decay; distil from ``teacher`` when given.

    Logit KD: ``(1 - a) * CE + a * T^2 * KL(softmax(t / T) || softmax(s / T))``; with
    ``recipe.feature_kd`` > 0, plus that weight times the MSE between the teacher's penultimate
    features and a learned linear map of the student's; with ``recipe.kd_relation`` > 0, plus
    that weight times the similarity-preserving loss (Tung & Mori 2019) at every stage output
    and the penultimate features (:func:`relation_loss`: it compares how the batch's samples
    relate, so it needs no adapter when widths differ). Each epoch is reported as ``stage``
    k/n (:mod:`workers.progress`). Returns the last epoch's mean loss.
    """
    if epochs <= 0:
        return float("nan")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    adapter: nn.Linear | None = None
    params = list(model.parameters())
    use_feat = teacher is not None and recipe.feature_kd > 0 and hasattr(model, "features")
    if use_feat:
        assert teacher is not None
        x0 = torch.from_numpy(data.x[:2])
        with torch.no_grad():
            s_dim, t_dim = model.features(x0).shape[1], teacher.features(x0).shape[1]  # type: ignore[operator]
        adapter = nn.Linear(s_dim, t_dim)
        params += list(adapter.parameters())
    opt = torch.optim.Adam(params, lr=lr or recipe.lr)
    steps = epochs * -(-len(data) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if teacher is not None:
        teacher.eval()
    model.train()
    mean_loss = float("nan")
    with ComputeSlots() as slots:  # a latency timing on this node pauses us between batches
        for epoch in range(epochs):
            progress.report(stage, epoch + 1, epochs)
            total, n = 0.0, 0
            for x, y in _batches(data, recipe.batch_size, rng):
                if recipe.augment == "crop_flip" and x.dim() == 4:
                    x = crop_flip(x, rng)
                with slots.step():
                    loss = _loss(model, x, y, recipe, teacher, adapter)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
            mean_loss = total / max(n, 1)
    model.eval()
    return mean_loss


def crop_flip(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image of a batch shifted by a random crop of it padded by 1/8 of its size (zeros),
    and flipped left-right with probability 1/2."""
    n, _, h, w = x.shape
    ph, pw = max(1, h // 8), max(1, w // 8)
    padded = F.pad(x, (pw, pw, ph, ph))
    dy = rng.integers(0, 2 * ph + 1, n)
    dx = rng.integers(0, 2 * pw + 1, n)
    flip = rng.random(n) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if flip.any():
        out[torch.from_numpy(flip)] = out[torch.from_numpy(flip)].flip(-1)
    return out


def _loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    teacher: nn.Module | None,
    adapter: nn.Linear | None,
) -> torch.Tensor:
    """Cross-entropy, plus logit KD (feature KD through ``adapter``, relation KD at every
    stage) from ``teacher``."""
    relation = teacher is not None and recipe.kd_relation > 0
    want_feats = adapter is not None or relation
    feats, logits, s_stages = forward_parts(model, x, feats=want_feats, stages=relation)
    loss = F.cross_entropy(logits, y)
    if teacher is None:
        return loss
    t = recipe.kd_temperature
    with torch.no_grad():
        t_feats, t_logits, t_stages = forward_parts(teacher, x, feats=want_feats, stages=relation)
    soft = F.softmax(t_logits / t, dim=1)
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean")
    loss = (1 - recipe.kd_alpha) * loss + recipe.kd_alpha * t * t * kd
    if adapter is not None and feats is not None and t_feats is not None:
        loss = loss + recipe.feature_kd * F.mse_loss(adapter(feats), t_feats)
    if relation and feats is not None and t_feats is not None:
        pairs = [*zip(s_stages, t_stages, strict=False), (feats, t_feats)]
        loss = loss + recipe.kd_relation * sum(relation_loss(a, b) for a, b in pairs)
    return loss


def forward_parts(
    model: nn.Module, x: torch.Tensor, *, feats: bool, stages: bool
) -> tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]:
    """Penultimate features (when asked), logits, and each stage's output (when asked)."""
    outs: list[torch.Tensor] = []
    handles = []
    if stages and isinstance(getattr(model, "stages", None), nn.ModuleList):
        for stage in model.stages:  # type: ignore[union-attr]
            handles.append(stage.register_forward_hook(lambda _m, _i, o: outs.append(o)))
    try:
        if feats and hasattr(model, "features"):
            f = model.features(x)  # type: ignore[operator]
            return f, model.head(f), outs  # type: ignore[operator]
        return None, model(x), outs
    finally:
        for h in handles:
            h.remove()


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD: ``||G_s - G_t||_F^2 / b^2`` with ``G`` each side's
    row-normalised batch Gram matrix of the flattened activations."""
    b = student.shape[0]

    def gram(a: torch.Tensor) -> torch.Tensor:
        flat = a.reshape(b, -1)
        return F.normalize(flat @ flat.t(), dim=1)

    return ((gram(student) - gram(teacher)) ** 2).sum() / (b * b)


def batches(
    data: Split, batch_size: int, count: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` shuffled batches of ``data`` (calibration, Taylor scores)."""
    rng = np.random.default_rng(seed)
    out = []
    for xb in _batches(data, batch_size, rng):
        out.append(xb)
        if len(out) >= count:
            break
    return out


def subset(data: Split, n: int | None, seed: int = 0) -> Split:
    """A fixed random subset of ``n`` rows (all of ``data`` when n is None or larger)."""
    if n is None or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return Split(take(data.x, idx), data.y[idx], None if data.index is None else data.index[idx])


@torch.no_grad()
def predict(model: nn.Module, data: Split, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = []
    with ComputeSlots() as slots:
        for x, _ in _batches(data, batch_size, None):
            with slots.step():
                outs.append(model(x).argmax(dim=1).numpy())
    return np.concatenate(outs)


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data) == data.y).mean())
