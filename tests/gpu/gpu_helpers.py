"""Constants and helpers shared by the GPU tests (imported by tests/gpu/conftest.py and the tests)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tsf.runtime.backends.tensorrt import tensorrt_support

TRT_REASON = tensorrt_support()
SMALL_ARCH = {"depth": 2, "width": 128, "heads": 2, "frames": 4}
SMALL_MAX_BATCH = 4


def bundle_with(bundle_dir: Path, entries: list[dict]):
    """The bundle as the runtime sees it once bundle.json lists `entries` (export writes that)."""
    from tsf.runtime.bundle import load_bundle

    return dataclasses.replace(load_bundle(bundle_dir), engines=list(entries))


def row_cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))
