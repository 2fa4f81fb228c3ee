"""Validation metrics: top-1 accuracy, per-class accuracy, event-time mean absolute error.

Accumulated over the whole validation set in NumPy (predictions are small), so the numbers do not
depend on the batch size; with several GPUs each rank collects its shard and `merged` joins them.

Dependencies: NumPy.
"""

from __future__ import annotations

import numpy as np


class ValidationMetrics:
    def __init__(self, class_names: list[str], background_index: int, window_seconds: float):
        self.class_names = list(class_names)
        self.background_index = background_index
        self.window_seconds = window_seconds
        self.predictions, self.labels, self.time_errors, self.losses = [], [], [], []

    def add(self, logits: np.ndarray, event_times: np.ndarray, labels: np.ndarray, targets: np.ndarray,
            loss: float | None = None):
        labels = labels.reshape(-1).astype(np.int64)
        self.predictions.append(np.argmax(logits, axis=-1))
        self.labels.append(labels)
        predicted_time = event_times[np.arange(len(labels)), labels]
        is_event = labels != self.background_index
        self.time_errors.append(np.abs(predicted_time - targets.reshape(-1))[is_event])
        if loss is not None:
            self.losses.append((float(loss), len(labels)))

    @classmethod
    def merged(cls, parts: list["ValidationMetrics"]) -> "ValidationMetrics":
        first = parts[0]
        out = cls(first.class_names, first.background_index, first.window_seconds)
        for part in parts:
            out.predictions += part.predictions
            out.labels += part.labels
            out.time_errors += part.time_errors
            out.losses += part.losses
        return out

    def summary(self) -> dict:
        predictions = np.concatenate(self.predictions) if self.predictions else np.zeros(0, np.int64)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        errors = np.concatenate(self.time_errors) if self.time_errors else np.zeros(0)
        per_class = {}
        for index, name in enumerate(self.class_names):
            mask = labels == index
            per_class[name] = float(np.mean(predictions[mask] == index)) if mask.any() else None
        out = {
            "samples": int(len(labels)),
            "top1": float(np.mean(predictions == labels)) if len(labels) else None,
            "per_class_accuracy": per_class,
            # In seconds: the head predicts a fraction of the window.
            "event_time_mae_s": float(np.mean(errors) * self.window_seconds) if len(errors) else None,
        }
        if self.losses:
            total = sum(n for _, n in self.losses)
            out["loss"] = sum(l * n for l, n in self.losses) / total
        return out
