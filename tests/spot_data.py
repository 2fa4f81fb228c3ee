"""Synthetic `tsf-extract --heads` outputs with events planted at known rows, for the spotting tests."""

from __future__ import annotations

import json
import os

import numpy as np

from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES

CLASS_NAMES = list(SOCCERNET_V2_CLASS_NAMES)
BACKGROUND_LOGIT = 6.0


def planted_logits(rows: int, events: dict[str, list[tuple[int, float]]], seed: int = 0) -> np.ndarray:
    """(rows, 18) logits: background wins everywhere except at the planted (row, logit) peaks,
    which fall off by 2 per row on either side so that neighbours are lower but not negligible."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-1.0, 0.0, size=(rows, len(CLASS_NAMES))).astype(np.float32)
    logits[:, CLASS_NAMES.index("background")] = BACKGROUND_LOGIT
    for label, peaks in events.items():
        c = CLASS_NAMES.index(label)
        for row, peak in peaks:
            for offset in (-2, -1, 0, 1, 2):
                if 0 <= row + offset < rows:
                    logits[row + offset, c] = max(logits[row + offset, c], peak - 2.0 * abs(offset))
    return logits


def write_heads(prefix: str, logits: np.ndarray, alignment: str = "center", class_names=CLASS_NAMES,
                event_times: np.ndarray | None = None) -> str:
    """OUT.heads.npz + OUT.json as tsf-extract --heads writes them (class_names=None leaves them out)."""
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    if event_times is None:
        event_times = np.full(logits.shape, 0.5, dtype=np.float32)
    np.savez(prefix + ".heads.npz", logits=logits, event_times=event_times)
    metadata = {"alignment": alignment, "rows": len(logits), "window": {"frames": 16, "seconds": 5.0, "stride_seconds": 1.0}}
    if class_names is not None:
        metadata["class_names"] = list(class_names)
    with open(prefix + ".json", "w") as f:
        json.dump(metadata, f)
    return prefix + ".heads.npz"


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Independent float64 softmax (no max subtraction needed at these magnitudes)."""
    e = np.exp(np.asarray(logits, dtype=np.float64))
    return e / e.sum(axis=1, keepdims=True)
