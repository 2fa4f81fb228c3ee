"""Synthetic `tsf-extract --heads` outputs with events planted at known rows, for the spotting tests."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from tsf.runtime.outputs import write_outputs
from tsf.runtime.sample import row_centres
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
                event_times: np.ndarray | None = None, rate: int = 1) -> str:
    """An output set with heads, as tsf-extract --heads writes one (class_names=None leaves them out);
    its rows at `rate` per second. Returns the heads file's path."""
    if event_times is None:
        event_times = np.full(logits.shape, 0.5, dtype=np.float32)
    stride = 1 / rate
    bundle = {"id": "synthetic", **({"class_names": list(class_names)} if class_names is not None else {})}
    metadata = {"alignment": alignment, "rows": len(logits), "rows_per_second": float(rate),
                "window": {"frames": 16, "seconds": 5.0, "stride_seconds": stride},
                "row_centre_seconds": [float(c) for c in row_centres(alignment, len(logits), Fraction(1, rate), 5)],
                "bundle": bundle}
    write_outputs(prefix + ".npy", features=np.zeros((len(logits), 8), np.float32), logits=logits,
                  event_times=event_times, metadata=metadata)
    return prefix + ".heads.npz"


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Independent float64 softmax (no max subtraction needed at these magnitudes)."""
    e = np.exp(np.asarray(logits, dtype=np.float64))
    return e / e.sum(axis=1, keepdims=True)
