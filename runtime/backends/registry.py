"""The engines tsf knows, and what each one is: the registry that the chooser (`backends/__init__.py`)
and the precision gate (`precision.py`) both read, kept apart so that neither imports the other
to learn it. Engine modules are imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from ..gpu import Device

# name -> module of this package. The names are what --backend takes and what the metadata records.
ENGINES = {
    "tensorrt": "tensorrt",
    "torch": "torch",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
}


class Backend(Protocol):
    name: str  # a key of ENGINES
    device: Device
    precision: str  # "fp32", "fp16", ...
    precision_reason: str  # why this precision: "asked for", "auto: ...", a refusal (set by load_engine)
    default_batch_size: int
    wants_gpu_input: bool  # True when a CuPy batch is read in place (no host round trip)

    def run(self, video) -> dict[str, np.ndarray]:
        """float32 [B, 3, T, S, S] (NumPy or CuPy) -> float32 NumPy arrays by bundle.OUTPUT_NAMES."""

    def describe(self) -> dict:
        """What the metadata records about this engine: library versions, provider, GPU name."""


def engine_module(name: str):
    return importlib.import_module(f".{ENGINES[name]}", __package__)


def engine_precisions(name: str) -> dict[str, tuple[str, ...]]:
    """Device kind -> the precisions engine `name` offers there (its `auto` choice first)."""
    return dict(engine_module(name).PRECISIONS)
