"""Training, knowledge-distillation fine-tuning and evaluation on numpy splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.data import Split


@dataclass(frozen=True)
class Recipe:
    """How a dense parent is trained and a compressed child fine-tuned."""

    epochs: int = 20
    finetune_epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    seed: int = 0

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
) -> float:
    """Train ``model`` with Adam + cosine decay; distil from ``teacher`` when given.

    The KD loss is ``(1 - a) * CE + a * T^2 * KL(softmax(t / T) || softmax(s / T))``.
    Returns the last epoch's mean loss.
    """
    if epochs <= 0:
        return float("nan")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    steps = epochs * -(-len(data) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if teacher is not None:
        teacher.eval()
    model.train()
    mean_loss = float("nan")
    for _ in range(epochs):
        total, n = 0.0, 0
        for x, y in _batches(data, recipe.batch_size, rng):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                t = recipe.kd_temperature
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / t, dim=1)
                kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean")
                loss = (1 - recipe.kd_alpha) * loss + recipe.kd_alpha * t * t * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(y)
            n += len(y)
        mean_loss = total / max(n, 1)
    model.eval()
    return mean_loss


@torch.no_grad()
def predict(model: nn.Module, data: Split, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = [model(x).argmax(dim=1).numpy() for x, _ in _batches(data, batch_size, None)]
    return np.concatenate(outs)


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data) == data.y).mean())
