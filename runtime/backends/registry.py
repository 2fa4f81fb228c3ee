"""The engines tsf knows, and what each one is: the registry that the chooser (`backends/__init__.py`)
and the precision gate (`precision.py`) both read, kept apart so that neither imports the other
to learn it.

Every module of this package is an engine except the chooser's own (`NOT_ENGINES`), so adding an
engine is adding its module: a `Backend` class, a `PRECISIONS` table (device kind -> the precisions
it offers there, its `auto` choice first), an `AUTO_PRIORITY` (device kind -> its place when
`--backend auto` walks the engines there, lower first; devices it is not tried on `auto` left out)
and `load(bundle, device, precision, threads)`. Engine modules import their libraries lazily, so
reading these tables costs nothing but the module itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol

import numpy as np

from ..gpu import Device

# The chooser's own modules, and the helpers of one engine (its model, its quantizer).
NOT_ENGINES = {"registry", "precision", "quantize", "torch_model"}


class Backend(Protocol):
    name: str  # its module's name: what --backend takes and what the metadata records
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
    return importlib.import_module(f".{name}", __package__)


def _discover() -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in NOT_ENGINES)
    priorities = {name: engine_module(name).AUTO_PRIORITY for name in names}
    kinds = sorted({kind for table in priorities.values() for kind in table})
    auto = {kind: tuple(sorted((n for n in names if kind in priorities[n]), key=lambda n: priorities[n][kind]))
            for kind in kinds}
    # Listed in the order `auto` tries them, GPU first, so tables and --help read fastest first.
    ordered = tuple(dict.fromkeys([n for kind in ("cuda", "cpu") for n in auto.get(kind, ())] + names))
    return ordered, auto


# The engines, and per device kind the order `--backend auto` tries them in.
ENGINES, AUTO_ORDER = _discover()


def engine_precisions(name: str) -> dict[str, tuple[str, ...]]:
    """Device kind -> the precisions engine `name` offers there (its `auto` choice first)."""
    return dict(engine_module(name).PRECISIONS)
