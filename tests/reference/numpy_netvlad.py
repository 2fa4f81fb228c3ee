"""A float64 NumPy forward of NetVLAD++ (docs/spotting.md, "NetVLAD++"), written from the formulas,
window by window and cluster by cluster, to check the PyTorch head against.

Weights are taken from a state dict of NumPy arrays under the PyTorch module's names.
"""
from __future__ import annotations

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(np.linalg.norm(v), 1e-12)


def netvlad(rows: np.ndarray, assignment: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """rows (T, D) -> (D * K,): soft-assignment residuals, per-cluster L2, D-major flatten, global L2."""
    rows = np.stack([_unit(r) for r in np.asarray(rows, np.float64)])
    scores = rows @ assignment  # (T, K)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    clusters = assignment.shape[1]
    out = np.zeros((rows.shape[1], clusters))
    for k in range(clusters):
        residual = sum(weights[t, k] * (rows[t] - centres[0, :, k]) for t in range(len(rows)))
        out[:, k] = _unit(residual)
    return _unit(out.reshape(-1))


def netvlad_plus_plus(window: np.ndarray, state: dict) -> np.ndarray:
    """window (W, width) -> (1 + classes,) sigmoid outputs, dropout off (evaluation)."""
    rows = np.asarray(window, np.float64)
    if "reduce.weight" in state:
        rows = rows @ state["reduce.weight"].T + state["reduce.bias"]
    half = len(rows) // 2
    pooled = np.concatenate([netvlad(rows[:half], state["before.assignment"], state["before.centres"]),
                             netvlad(rows[half:], state["after.assignment"], state["after.centres"])])
    logits = state["classify.weight"] @ pooled + state["classify.bias"]
    return 1 / (1 + np.exp(-logits))
