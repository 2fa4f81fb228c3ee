"""Write a verified bundle, step by step: the model as trained -> ONNX -> the parity gate against it ->
weights.safetensors -> TensorRT engines -> (the INT8 model) -> bundle.json -> the reduced CPU
precisions' fidelity gates (in a child process without Paddle) -> into place.

The bundle also carries the weights the ONNX was converted from, as `weights.safetensors` under
the reference's names and layout, float32: the ONNX's initializers have paddle2onnx's names, not
the model's (docs/toolchain.md), and the torch engine builds its model from these.

Everything is built in a staging directory beside the target and moved into place only when it
has passed the checker and the gates, so a failed or interrupted export (Ctrl-C included) leaves
nothing behind; replacing a bundle replaces only what tsf wrote there (`target.py`). Every file
gets the mode the user's umask gives (so a shared model folder is readable by others where the
umask allows). The layout and names are the contract in `tsf.runtime.bundle` (docs/design.md).

`write_bundle(settings)` is the one entrance; `export_bundle(...)` is the same with keyword
arguments, for Python callers (tests, benchmarks, demos).

Dependencies: Paddle (through `tsf.training`) runs the model being exported; `safetensors` writes
the weights in a format that loads without unpickling (no code runs) and maps lazily;
`importlib.metadata` records the toolchain versions without importing the heavy packages twice.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from tsf.runtime.backends.quantize import INT8_FILE, quantize_int8
from tsf.runtime.bundle import (BUNDLE_FORMAT, BUNDLE_JSON, FORMAT_VERSION, ONNX_FILE, ONNX_OPSET, WEIGHTS_FILE,
                                bundle_id, load_bundle, reference_preprocessing, reference_window, sha256_file)
from tsf.runtime.console import DeferredInterrupt
from tsf.runtime.errors import BackendError, OutputError, TsfError, first_line
from tsf.runtime.gpu import GPU_IMPORT_ERRORS
from tsf.runtime.files import make_directories

from .cpu_gate import measure_cpu_gates
from .onnx_export import export_onnx
from .parity import check_parity, format_parity, measure_parity
from .settings import ExportSettings
from .source import ModelSource, check_weights_path, given_class_names, load_source
from .target import BundleTarget


def write_bundle(settings: ExportSettings, log=None) -> Path:
    """Export as `settings` say; returns the bundle's path. `log(str)` receives progress lines.
    Bad input and failed gates raise `TsfError` subclasses; no failure leaves anything behind."""
    log = log or (lambda message: None)
    target = BundleTarget(settings.target, settings.overwrite)
    given = given_class_names(settings)
    if settings.weights is not None:
        check_weights_path(settings.weights)
    if settings.engine is True:  # required: say so before minutes of conversion, not after
        reason = _tensorrt_engine_module()[1]
        if reason is not None:
            raise BackendError(f"cannot build a TensorRT engine: {reason}")

    # Paddle runs in this block: Ctrl-C is raised at the checks between steps (DeferredInterrupt).
    with DeferredInterrupt() as interrupt:
        source = load_source(settings, given, log)
        created_parents = make_directories(target.path.parent)
        staging = None
        try:
            staging = _staging_directory(target.path)
            meta = _build(settings, source, staging, target, interrupt, log)
            _write_json(staging / BUNDLE_JSON, meta)
            meta["fidelity"] = measure_cpu_gates(staging, log)
            if not meta["fidelity"].get("onnxruntime", {}).get("int8", {}).get("passed", True):
                (staging / meta.pop("quantized")["int8"]["file"]).unlink()  # refused: the record says why
            _write_json(staging / BUNDLE_JSON, meta)
            _give_usual_modes(staging)
            interrupt.check()
            target.commit(staging, log)
            staging = None
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for parent in created_parents:  # innermost first; only if still empty
                try:
                    parent.rmdir()
                except OSError:
                    break
            raise
    return target.path


def export_bundle(output: str | os.PathLike | None = None, *, log=None, engine: bool | str = False,
                  **options) -> Path:
    """`write_bundle(ExportSettings(output=output, **options))`: the options are tsf-export's (as
    `ExportSettings` fields), except that a TensorRT engine is built only when asked for (`engine`
    True, or "auto": where TensorRT and a GPU are usable)."""
    return write_bundle(ExportSettings(output=output, engine=engine, **options), log)


def _staging_directory(target: Path) -> Path:
    # Not mkdtemp: its 0700 mode would become the bundle's; mkdir honours the umask.
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
    return staging


def _build(settings: ExportSettings, source: ModelSource, staging: Path, target: BundleTarget, interrupt, log) -> dict:
    """Every file of the bundle into `staging`; returns bundle.json's contents (without `fidelity`)."""
    onnx_path = _convert(settings, source, staging, interrupt, log)
    log("checking ONNX Runtime (CPU) against Paddle at batch 1 and 3 ...")
    started = time.perf_counter()
    figures = measure_parity(source.model, onnx_path, source.config.to_dict())
    log(format_parity(figures) + f" [{time.perf_counter() - started:.0f} s]")
    check_parity(figures)
    interrupt.check()
    weights_entry = _write_weights(source.model, staging / WEIGHTS_FILE)
    log(f"{WEIGHTS_FILE}: {weights_entry['tensors']} tensors, {weights_entry['size_bytes'] / 2**20:.1f} MiB")
    source.model = None  # Paddle's copy of the weights is not needed any more: the gates load their own
    interrupt.check()

    onnx_sha256 = sha256_file(onnx_path)
    kept = _engines_of_replaced_bundle(target, staging, onnx_sha256) if settings.overwrite else []
    if kept:
        log(f"keeping {len(kept)} engine(s) of the bundle being replaced (same model.onnx)")
    built = _build_engines(settings, onnx_path, staging, source.config, log)
    config = source.config
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle_id": bundle_id(onnx_sha256, source.class_names),
        "architecture": {
            "frames": config.frames, "depth": config.depth, "width": config.width,
            "heads": config.heads, "classes": config.num_classes, "image_size": config.image_size,
            "patch_size": config.patch_size, "mlp_ratio": config.mlp_ratio,
        },
        "preprocessing": reference_preprocessing(config.image_size),
        "window": reference_window(config.frames),
        "class_names": source.class_names,
        "weights": source.weights_entry,
        "onnx": {"file": ONNX_FILE, "sha256": onnx_sha256, "opset": ONNX_OPSET, "size_bytes": onnx_path.stat().st_size},
        "safetensors": weights_entry,
        "versions": _versions(),
        "parity": {"onnxruntime-cpu": figures},
        "engines": [e for e in kept if e["file"] not in {b["file"] for b in built}] + built,
    }
    if settings.int8:
        log("quantizing the model to INT8 for ONNX Runtime on the CPU ...")
        meta["quantized"] = {"int8": quantize_int8(onnx_path, staging / INT8_FILE)}
    return meta


def _convert(settings: ExportSettings, source: ModelSource, staging: Path, interrupt, log) -> Path:
    """model.onnx, converted in a child process that reads the weights from a file."""
    if settings.random_init:
        from tsf.training.weights import save_pdparams

        child_weights = staging / ".random-init.pdparams"
        save_pdparams(source.model, child_weights)
        interrupt.check()
    else:
        child_weights = Path(settings.weights)
    onnx_path = staging / ONNX_FILE
    log(f"converting to ONNX (paddle2onnx, opset {ONNX_OPSET}) ...")
    started = time.perf_counter()
    export_onnx(child_weights, source.config.to_dict(), onnx_path)
    interrupt.check()
    log(f"model.onnx: {onnx_path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.0f} s, "
        "passes onnx.checker")
    if settings.random_init:
        child_weights.unlink()
    return onnx_path


def _write_weights(model, path: Path) -> dict:
    """`model`'s state dict as safetensors (reference names, float32); its bundle.json entry."""
    from safetensors.numpy import save_file

    from tsf.training.weights import state_of

    state = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in state_of(model).items()}
    save_file(state, str(path))
    return {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
            "tensors": len(state)}


def _tensorrt_engine_module():
    """(the engine builder module, None) where TensorRT and a GPU are usable, else (None, reason)."""
    try:
        from . import tensorrt_engine  # GPU-only; imports TensorRT lazily itself

        reason = tensorrt_engine.engine_support()
    except GPU_IMPORT_ERRORS as exc:
        return None, f"TensorRT is not usable here ({first_line(exc)})"
    return (tensorrt_engine, None) if reason is None else (None, reason)


def _engines_of_replaced_bundle(target: BundleTarget, staging: Path, onnx_sha256: str) -> list[dict]:
    """Engine entries (files copied into `staging`) of the bundle at the target when its model.onnx
    is byte-identical to the new one: engines built on other GPUs stay valid, so re-exporting on a
    second machine adds its engine instead of dropping the first's. Their timing caches also let
    the builder start warm."""
    try:
        previous = load_bundle(target.path)
    except TsfError:
        return []
    if previous.meta["onnx"]["sha256"] != onnx_sha256:
        return []
    kept = []
    for entry in previous.engines:
        files = [entry["file"]] + ([entry["timing_cache"]] if entry.get("timing_cache") else [])
        if not all(isinstance(f, str) and previous.path(f).is_file() for f in files):
            continue
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(previous.path(name), staging / name)
        kept.append(entry)
    return kept


def _build_engines(settings: ExportSettings, onnx_path: Path, staging: Path, config, log) -> list[dict]:
    """An engine entry list: [] when not asked for, or (with engine="auto") when TensorRT is absent
    or the engine fails its parity check (the builder's gate: FP16 features cosine >= 0.999)."""
    if settings.engine is False:
        return []
    builder, reason = _tensorrt_engine_module()
    if builder is None:
        if settings.engine is True:
            raise BackendError(f"cannot build a TensorRT engine: {reason}")
        log(f"no TensorRT engine: {reason}")
        return []
    log(f"building a TensorRT {settings.precision} engine (max batch {settings.max_batch}) ...")
    try:
        entry = builder.build_engine(onnx_path, staging, precision=settings.precision,
                                     max_batch=int(settings.max_batch), frames=config.frames,
                                     image_size=config.image_size)
    except TsfError as exc:
        if settings.engine is True:
            raise
        log(f"TensorRT engine refused: {exc}")  # the builder writes nothing when it refuses
        return []
    return [entry]


def _versions() -> dict:
    import tsf

    def version(*distributions):
        for name in distributions:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {
        "tsf": tsf.__version__,
        "paddle": version("paddlepaddle", "paddlepaddle-gpu"),
        "paddle2onnx": version("paddle2onnx"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime", "onnxruntime-gpu"),
        "safetensors": version("safetensors"),
    }


def _write_json(path: Path, meta: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _give_usual_modes(staging: Path) -> None:
    """Every file the mode the umask gives a new file, every folder a new folder's. Some writers make
    their files for their owner only (safetensors, tempfile), which would keep a shared bundle from
    everyone else. The staging folder was made with mkdir, so its mode is the umask's for folders."""
    folder_mode = staging.stat().st_mode & 0o777
    for path in staging.rglob("*"):
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else folder_mode & 0o666)
