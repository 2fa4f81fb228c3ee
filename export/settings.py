"""What an export is asked to do: `ExportSettings`, one field per `tsf-export` option, and the rules
between the options, checked once, when the settings are made (by the command and the Python API
alike). Checking touches no file and imports nothing heavy: a mistake costs no Paddle import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tsf.runtime.bundle import ARCHITECTURE_KEYS, default_bundle_dir
from tsf.runtime.errors import InputError

PRECISIONS = ("fp16", "fp32")
ENGINE_CHOICES = (True, False, "auto")
# `--arch` takes the model config's field names; `classes` is the bundle's name for num_classes.
ARCH_ALIASES = {"classes": "num_classes"}


def parse_arch(text: str | dict | None) -> dict:
    """`"depth=2,width=128,heads=2,frames=4"` (or a dict) -> TimeSformerConfig keyword arguments."""
    if text is None:
        return {}
    items = text.items() if isinstance(text, dict) else (
        part.split("=", 1) if "=" in part else (part, None) for part in str(text).split(",") if part.strip()
    )
    fields = {ARCH_ALIASES.get(key, key) for key in ARCHITECTURE_KEYS}
    arch = {}
    for key, value in items:
        key = ARCH_ALIASES.get(key.strip(), key.strip())
        if key not in fields:
            raise InputError(f"unknown architecture key {key!r} (known: {', '.join(sorted(fields))})")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise InputError(f"architecture value {key}={value} is not an integer") from None
        if number <= 0:
            raise InputError(f"architecture value {key}={number} must be positive")
        arch[key] = number
    return arch


@dataclass(frozen=True)
class ExportSettings:
    """tsf-export's options. `classes` is a file of names (the option) or, from Python, the names."""

    weights: str | os.PathLike | None = None
    output: str | os.PathLike | None = None  # None: default_bundle_dir()
    classes: str | os.PathLike | tuple[str, ...] | None = None
    soccernet_classes: bool = False
    precision: str = "fp16"
    max_batch: int = 32
    engine: bool | str = "auto"  # True: required; False: none; "auto": where TensorRT and a GPU are usable
    int8: bool = False
    random_init: bool = False
    heads: int | None = None
    overwrite: bool = False
    arch: str | None = None  # with random_init: "depth=2,width=128,..."
    seed: int = 0  # with random_init

    def __post_init__(self):
        if isinstance(self.classes, (list, tuple)):
            object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))
        if isinstance(self.arch, dict):
            object.__setattr__(self, "arch", ",".join(f"{k}={v}" for k, v in self.arch.items()))
        if self.weights is None and not self.random_init:
            raise InputError("give a WEIGHTS file (or --random-init for an untrained demo model)")
        if self.weights is not None and self.random_init:
            raise InputError("--random-init takes no WEIGHTS file")
        if self.arch is not None and not self.random_init:
            raise InputError("--arch only applies to --random-init (a weights file defines its own architecture)")
        if self.classes is not None and self.soccernet_classes:
            raise InputError("--classes and --soccernet-classes exclude each other")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if int(self.max_batch) < 1:
            raise InputError(f"--max-batch must be at least 1, not {self.max_batch}")
        if self.engine not in ENGINE_CHOICES or isinstance(self.engine, int) and not isinstance(self.engine, bool):
            raise InputError(f"engine must be True, False or 'auto', not {self.engine!r}")
        if self.heads is not None and int(self.heads) < 1:
            raise InputError(f"--heads must be positive, not {self.heads}")
        architecture = parse_arch(self.arch)
        if self.heads is not None and architecture.get("heads", self.heads) != self.heads:
            raise InputError(f"--heads {self.heads} contradicts --arch heads={architecture['heads']}")

    @property
    def target(self) -> Path:
        return Path(self.output if self.output is not None else default_bundle_dir()).expanduser().absolute()

    @property
    def architecture(self) -> dict:
        """With random_init: the model's TimeSformerConfig arguments (`--arch`, `--heads`)."""
        return {**parse_arch(self.arch), **({"heads": int(self.heads)} if self.heads is not None else {})}
