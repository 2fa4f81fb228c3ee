"""The model an export starts from: the Paddle model as it was trained, and its class names.

A tsf checkpoint carries its model record (architecture with the head count, class names:
`tsf.training.weights`); a checkpoint of a run folder written before checkpoints carried one is
read with the run's config.yaml and classes.json. Only a file with neither (the reference's own
release, any other .pdparams) has its architecture read from the tensor shapes, and then the head
count, which no shape gives, is the reference's width / 64 unless `--heads` says otherwise: a
warning says so, because the parity check can only compare the ONNX with the model it was given.
Class names given to the export win over recorded ones, with a warning where they differ.

Paddle is imported only by `load_source` (the checks before it are cheap and Paddle-free).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from tsf.runtime.bundle import sha256_file
from tsf.runtime.errors import BackendError, InputError
from tsf.runtime.extras import install_hint
from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES, read_class_names

from .classes import check_class_names, default_class_names
from .settings import ExportSettings


@dataclass
class ModelSource:
    model: object  # the Paddle model, in eval mode
    config: object  # its TimeSformerConfig
    class_names: list[str]
    weights_entry: dict  # bundle.json's `weights`: where the model came from


def check_weights_path(path) -> None:
    """A directory or a missing file is named before anything heavy happens; a training run folder
    gets the paths of its weights files."""
    from tsf.training.run import RunFolder  # Paddle-free

    if os.path.isdir(path):
        run = RunFolder(os.fspath(path))
        files = run.exportable() if run.has_record() else []
        if files:
            raise InputError(f"{path} is a tsf-train run folder, not a weights file: export "
                             f"{' or '.join(files[:2])}")
        raise InputError(f"{path} is a directory, not a .pdparams weights file")
    if not os.path.isfile(path):
        raise InputError(f"weights file not found: {path}")


def given_class_names(settings: ExportSettings) -> tuple[list[str] | None, str]:
    """(the class names the export was given or None, where they came from)."""
    if settings.soccernet_classes:
        return list(SOCCERNET_V2_CLASS_NAMES), "--soccernet-classes"
    if isinstance(settings.classes, tuple):
        return list(settings.classes), "class names"
    if settings.classes is not None:
        return read_class_names(settings.classes), os.fspath(settings.classes)
    return None, ""


def import_paddle():
    """Paddle, after checking that the whole `export` extra is installed (one line if not)."""
    missing = [name for name in ("paddle", "paddle2onnx", "onnx", "onnxruntime", "safetensors")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendError(f"exporting needs {', '.join(missing)}: {install_hint('export')}")
    # Paddle warns on import that ccache is missing (it matters only for compiling custom ops).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle
    return paddle


def load_source(settings: ExportSettings, given: tuple[list[str] | None, str], log) -> ModelSource:
    paddle = import_paddle()
    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import WeightsError, load_reference_weights

    if settings.random_init:
        arch = settings.architecture
        if "heads" not in arch and arch.get("width", TimeSformerConfig.width) % 64 == 0:
            arch["heads"] = arch.get("width", TimeSformerConfig.width) // 64  # the reference's rule
        try:
            config = TimeSformerConfig(**arch)
        except ValueError as exc:
            raise InputError(f"invalid architecture: {exc}") from None
        log(f"random-init model {config.to_dict()} (seed {settings.seed})")
        paddle.seed(settings.seed)
        model = PPTimeSformer(config)
        entry = {"file": None, "sha256": None, "random_init": True, "seed": settings.seed}
        recorded_names = None
    else:
        try:
            state, config, recorded_names, found_in = _read_weights(Path(settings.weights), settings.heads, log)
            model = PPTimeSformer(config)
            load_reference_weights(model, state)
        except WeightsError as exc:
            raise InputError(str(exc)) from None
        del state
        entry = {"file": Path(settings.weights).name, "sha256": sha256_file(settings.weights), "random_init": False,
                 "architecture_from": found_in}
    model.eval()
    names = _class_names(given, recorded_names, config.num_classes, settings.random_init, log)
    return ModelSource(model, config, names, entry)


def _read_weights(path: Path, heads: int | None, log):
    """(tensors, TimeSformerConfig, recorded class names or None, where the architecture came from)."""
    from tsf.training.errors import TrainingError
    from tsf.training.run import RunFolder
    from tsf.training.weights import WeightsError, infer_config, non_finite_tensors, read_checkpoint

    state, record = read_checkpoint(path)
    broken = non_finite_tensors(state)
    if broken:
        raise WeightsError(f"{path}: {len(broken)} tensor(s) hold values that are not finite numbers: "
                           f"{', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}; not exporting them")
    found_in = "the checkpoint's model record"
    run = RunFolder.holding(os.fspath(path)) if record is None else None
    if run is not None:
        try:
            record, found_in = run.recorded_model(), f"the run folder's {os.path.basename(run.config)}"
        except TrainingError as exc:
            log(f"warning: cannot read the record of run folder {run.root} ({exc})")
    if record is None:
        config = infer_config(state, heads=heads)
        found_in = "tensor shapes, heads " + ("from --heads" if heads is not None else "= width / 64")
        if heads is None:
            log(f"warning: {path} does not record its head count; assuming {config.heads} (width {config.width} / 64, "
                f"the reference's rule). If the model was trained with other heads, pass --heads N: the parity "
                f"check compares the ONNX with the model as assumed here")
        return state, config, None, found_in
    if heads is not None and heads != record.config.heads:
        raise WeightsError(f"--heads {heads} contradicts {found_in}: the model was trained with "
                           f"{record.config.heads} heads")
    log(f"architecture and class names from {found_in}: {record.config.to_dict()}")
    return state, record.config, list(record.class_names), found_in


def _class_names(given, recorded, count: int, random_init: bool, log) -> list[str]:
    names, source = given
    if names is None:
        return recorded if recorded is not None else default_class_names(count, random_init)
    names = check_class_names(names, count, source)
    if recorded is not None and names != recorded:
        differ = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(names, recorded)) if a != b]
        log(f"warning: the class names from {source} differ from those the model was trained with "
            f"({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}); the bundle takes {source}'s")
    return names
