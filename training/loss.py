"""The training loss: cross-entropy over the classes + w * MSE of the labelled class's event time.

    loss = mean_i CE(logits_i, label_i)
         + w * sum_{i: label_i != bg} (event_times[i, label_i] - target_i)^2 / max(1, #{i: label_i != bg})

The event-time term uses, per sample, only the output of that sample's own class (a gather), and
only for event samples: a background clip has no event time. The reference instead broadcast a
[N] target against an [N, 1] prediction into an N x N cross term for batch N > 1 (fixed here).

Dependencies: paddle.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F


def labelled_event_times(event_times, labels):
    """event_times[i, labels[i]] for each i, as a [N] tensor (a one-hot gather, differentiable)."""
    one_hot = F.one_hot(labels, event_times.shape[-1]).astype(event_times.dtype)
    return (event_times * one_hot).sum(axis=-1)


def training_loss(logits, event_times, labels, targets, event_time_weight: float, background_index: int):
    """Returns (total, cross_entropy, event_time_mse) as scalar tensors, computed in float32."""
    logits = logits.astype("float32")
    event_times = event_times.astype("float32")
    labels = labels.reshape([-1]).astype("int64")
    targets = targets.reshape([-1]).astype("float32")
    cross_entropy = F.cross_entropy(logits, labels, reduction="mean")
    is_event = (labels != background_index).astype("float32")
    squared = (labelled_event_times(event_times, labels) - targets) ** 2
    mse = (squared * is_event).sum() / paddle.clip(is_event.sum(), min=1.0)
    return cross_entropy + event_time_weight * mse, cross_entropy, mse
