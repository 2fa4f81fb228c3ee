"""Optimiser and learning-rate schedule of the recipe (docs/reference.md §7).

Momentum 0.9 with Nesterov; L2 decay 7e-5 on every parameter except the embeddings (cls_token,
pos_embed, time_embed); gradients clipped to a global norm of 40; the two head layers
(`head.fc`, `head.fc_event_times`) each in their own parameter group with the learning rate x100.
Paddle clips each parameter group by its own norm; `ClipByGlobalNormOfAllGroups` restores one
norm over all gradients.

Paddle keys optimiser state (the momentum velocity) by each parameter's internal `name`. The
reference built its two head layers with the same internal names, so they shared one velocity;
here every parameter's internal name must be unique, which `build_optimizer` checks.

The schedule is PaddleVideo's warm-up cosine, stepped per iteration: a cosine from the base rate
over the whole run (in fractional epochs), with the first warm-up epochs replaced by a straight
line from `warmup_start_lr` up to the cosine's value at the end of the warm-up.

Dependencies: paddle (optimizer, regularizer, clip, lr scheduler base; APIs present in 2.6 and 3.x).
"""

from __future__ import annotations

import math
from collections import Counter

import paddle

from .errors import TrainingError

EMBEDDINGS = ("backbone.cls_token", "backbone.pos_embed", "backbone.time_embed")
HEAD_LAYERS = ("head.fc", "head.fc_event_times")


def parameter_groups(model, weight_decay: float, head_lr_multiplier: float, no_weight_decay=EMBEDDINGS) -> list[dict]:
    """Backbone with decay, embeddings without decay, then one group per head layer."""
    backbone, embeddings = [], []
    heads = {layer: [] for layer in HEAD_LAYERS}
    for name, param in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        if layer in heads:
            heads[layer].append(param)
        elif name in no_weight_decay:
            embeddings.append(param)
        else:
            backbone.append(param)
    groups = [
        {"params": backbone, "weight_decay": float(weight_decay), "learning_rate": 1.0},
        {"params": embeddings, "weight_decay": 0.0, "learning_rate": 1.0},
    ]
    for layer in HEAD_LAYERS:
        if not heads[layer]:
            raise TrainingError(f"the model has no {layer} layer")
        groups.append({"params": heads[layer], "weight_decay": float(weight_decay),
                       "learning_rate": float(head_lr_multiplier)})
    return [g for g in groups if g["params"]]


class WarmupCosine(paddle.optimizer.lr.LRScheduler):
    """Per-iteration warm-up cosine; `step()` once per optimiser step."""

    def __init__(self, base_lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                 warmup_start_lr: float = 0.0, last_epoch: int = -1):
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_start_lr = warmup_start_lr
        super().__init__(learning_rate=base_lr, last_epoch=last_epoch)

    def cosine(self, epoch: float) -> float:
        return self.base_lr * 0.5 * (math.cos(math.pi * min(epoch, self.epochs) / self.epochs) + 1.0)

    def lr_at(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            end = self.cosine(self.warmup_epochs)
            return self.warmup_start_lr + (end - self.warmup_start_lr) * epoch / self.warmup_epochs
        return self.cosine(epoch)

    def get_lr(self) -> float:
        return self.lr_at(self.last_epoch)

    def go_to_epoch(self, epoch: int) -> None:
        """Continue at the start of `epoch` + 1. The position is counted in epochs, not saved steps,
        so that a resumed run whose steps per epoch changed (another batch size, more data) goes on
        where its schedule stood instead of past its end."""
        self.last_epoch = epoch * self.steps_per_epoch
        self.last_lr = self.get_lr()

    def peak_from(self, step: int) -> float:
        """The highest rate of the steps from `step` on (the warm-up rises, the cosine falls)."""
        warmup_end = math.ceil(self.warmup_epochs * self.steps_per_epoch)
        return max(self.lr_at(step), self.lr_at(max(step, warmup_end)))


class ClipByGlobalNormOfAllGroups(paddle.nn.ClipGradByGlobalNorm):
    """Global-norm clipping over every parameter of the model, also when there are groups.

    Paddle applies an optimiser's `grad_clip` to each parameter group separately, so a plain
    `ClipGradByGlobalNorm` would clip each group by its own norm. The recipe clips by the norm of
    all gradients together: this computes that norm from every parameter and scales the group's
    gradients by the common factor (`_dygraph_clip` is the hook Paddle calls in eager mode).
    """

    def __init__(self, clip_norm: float, parameters):
        super().__init__(clip_norm=float(clip_norm))
        self._all_parameters = list(parameters)

    def _dygraph_clip(self, params_grads):
        squares = [paddle.sum(paddle.square(p.grad.astype("float32")))
                   for p in self._all_parameters if p.grad is not None]
        if not squares:
            return params_grads
        norm = paddle.sqrt(paddle.add_n(squares))
        scale = self.clip_norm / paddle.maximum(norm, paddle.full([], self.clip_norm, "float32"))
        return [(p, g if g is None else g * scale.astype(g.dtype)) for p, g in params_grads]


def build_optimizer(model, scheduler, *, weight_decay=7e-5, momentum=0.9, nesterov=True, clip_global_norm=40.0,
                    head_lr_multiplier=100.0, no_weight_decay=EMBEDDINGS):
    duplicated = [n for n, c in Counter(p.name for p in model.parameters()).items() if c > 1]
    if duplicated:
        # Shared internal names would make parameters share one velocity (the reference's bug).
        raise TrainingError(f"parameters share internal names {', '.join(duplicated)}; optimiser state would be shared")
    return paddle.optimizer.Momentum(
        learning_rate=scheduler,
        momentum=momentum,
        use_nesterov=nesterov,
        parameters=parameter_groups(model, weight_decay, head_lr_multiplier, no_weight_decay),
        weight_decay=float(weight_decay),
        grad_clip=ClipByGlobalNormOfAllGroups(clip_global_norm, model.parameters()),
    )
