"""Assemble a verified bundle: weights -> ONNX -> parity gate -> (engine, INT8 model) -> the reduced
CPU precisions' fidelity gates -> bundle.json, atomically.

The bundle also carries the weights the ONNX was converted from, as `weights.safetensors` under
the reference's names and layout, float32: the ONNX's initializers have paddle2onnx's names, not
the model's (docs/toolchain.md), and the torch engine builds its model from these.

Everything is built in a temporary directory beside the target and renamed into place only when
the ONNX has passed the checker and the parity gate, so a failed or interrupted export (Ctrl-C
included) leaves nothing behind, and an existing bundle is replaced only with `overwrite=True`.
The layout and names are the contract in `tsf.runtime.bundle` (docs/design.md).

Dependencies: Paddle (through `tsf.training`) runs the model being exported; `safetensors` writes
the weights in a format that loads without unpickling (no code runs) and maps lazily;
`importlib.metadata` records the toolchain versions without importing the heavy packages twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
import uuid
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from tsf.runtime.backends import AUTO_ORDER, cpu_threads, engine_precisions
from tsf.runtime.fidelity import measure_cpu_gate
from tsf.runtime.backends.precision import gated_precisions
from tsf.runtime.backends.quantize import INT8_FILE, quantize_int8
from tsf.runtime.bundle import (
    ARCHITECTURE_KEYS,
    BUNDLE_FORMAT,
    BUNDLE_JSON,
    FORMAT_VERSION,
    ONNX_FILE,
    ONNX_OPSET,
    WEIGHTS_FILE,
    bundle_id,
    default_bundle_dir,
    load_bundle,
    reference_preprocessing,
    reference_window,
    sha256_file,
)
from tsf.runtime.console import DeferredInterrupt
from tsf.runtime.errors import BackendError, EngineUnavailable, InputError, OutputError, TsfError, first_line
from tsf.runtime.extras import install_hint
from tsf.runtime.gpu import GPU_IMPORT_ERRORS
from tsf.runtime.outputs import make_directories

from .classes import check_class_names, default_class_names
from .onnx_export import export_onnx
from .parity import check_parity, format_parity, measure_parity

PRECISIONS = ("fp16", "fp32")
# `--arch` accepts the config's field names; `classes` is the bundle's name for num_classes.
ARCH_ALIASES = {"classes": "num_classes"}


def parse_arch(text: str | dict | None) -> dict:
    """`"depth=2,width=128,heads=2,frames=4"` -> TimeSformerConfig keyword arguments."""
    if text is None:
        return {}
    items = text.items() if isinstance(text, dict) else (
        part.split("=", 1) if "=" in part else (part, None) for part in str(text).split(",") if part.strip()
    )
    # The bundle's architecture keys are the config's fields (bundle says `classes`); checking
    # against them here keeps a typo from costing a Paddle import first.
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


def _import_paddle():
    """Paddle, after checking that the whole `export` extra is installed (one line if not)."""
    missing = [name for name in ("paddle", "paddle2onnx", "onnx", "onnxruntime", "safetensors")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendError(f"exporting needs {', '.join(missing)}: {install_hint('export')}")
    # Paddle warns on import that ccache is missing (it matters only for compiling custom ops);
    # keep that out of the CLI's output.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle
    return paddle


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


def _is_replaceable_bundle(target: Path) -> bool:
    # --overwrite replaces bundles (or an empty directory), never an unrelated directory or file.
    return target.is_dir() and (not any(target.iterdir()) or (target / BUNDLE_JSON).is_file())


def _check_target(target: Path, overwrite: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite to replace it")
    if not _is_replaceable_bundle(target):
        raise OutputError(f"{target} exists and is not a tsf bundle; not replacing it")


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    _check_target(target, overwrite)  # again: something may have appeared while we worked
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        os.rename(staging, target)


def _write_json(path: Path, meta: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _tensorrt_engine_module():
    """(the engine builder module, None) where TensorRT and a GPU are usable, else (None, reason)."""
    try:
        from . import tensorrt_engine  # GPU-only; imports TensorRT lazily itself

        reason = tensorrt_engine.engine_support()
    except GPU_IMPORT_ERRORS as exc:
        return None, f"TensorRT is not usable here ({first_line(exc)})"
    return (tensorrt_engine, None) if reason is None else (None, reason)


def _engines_of_replaced_bundle(target: Path, staging: Path, onnx_sha256: str) -> list[dict]:
    """Engine entries (files copied into `staging`) of the bundle at `target` when its model.onnx
    is byte-identical to the new one: engines built on other GPUs stay valid, so re-exporting on a
    second machine adds its engine instead of dropping the first's. Their timing caches also let
    the builder start warm."""
    try:
        previous = load_bundle(target)
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


def _build_engines(engine, onnx_path: Path, staging: Path, precision: str, max_batch: int, config, log) -> list[dict]:
    """An engine entry list: [] when not asked for, or (with engine="auto") when TensorRT is absent
    or the engine fails its parity check (the builder's gate: FP16 features cosine >= 0.999)."""
    if engine is False:
        return []
    builder, reason = _tensorrt_engine_module()
    if builder is None:
        if engine is True:
            raise BackendError(f"cannot build a TensorRT engine: {reason}")
        log(f"no TensorRT engine: {reason}")
        return []
    log(f"building a TensorRT {precision} engine (max batch {max_batch}) ...")
    try:
        entry = builder.build_engine(
            onnx_path, staging, precision=precision, max_batch=max_batch,
            frames=config.frames, image_size=config.image_size,
        )
    except TsfError as exc:
        if engine is True:
            raise
        log(f"TensorRT engine refused: {exc}")  # the builder writes nothing when it refuses
        return []
    return [entry]


def _cpu_fidelity(bundle, log) -> dict:
    """bundle.json's `fidelity`: the gate of every reduced precision that the CPU engines `auto` walks
    can run here (engine -> precision -> record). The runtime measures the others (another CPU, an
    engine asked for by name) on first use, on the CPU that runs them."""
    records: dict = {}
    has_int8_model = "int8" in bundle.meta.get("quantized", {})
    for engine in AUTO_ORDER["cpu"]:
        offered = engine_precisions(engine).get("cpu", ())
        if "bf16" in offered and "bf16" not in gated_precisions(offered, has_int8_model):
            log(f"{engine} bf16: not measured (this CPU has no native BF16); tsf-extract measures it on first use")
        for precision in gated_precisions(offered, has_int8_model):
            started = time.perf_counter()
            try:
                record = measure_cpu_gate(bundle, engine, precision, cpu_threads())
            except EngineUnavailable as exc:
                log(f"{engine} {precision}: not measured ({exc})")
                continue
            verdict = "passed" if record["passed"] else "FAILED: tsf-extract will refuse it and run fp32"
            log(f"{engine} {precision} fidelity gate (vs fp32, {len(record['row_cosines'])} rows of a generated clip): "
                f"worst row cos {record['min_row_cosine']:.6f}, rel L2 {record['rel_l2']:.1e}, {verdict} "
                f"[{time.perf_counter() - started:.0f} s]")
            records.setdefault(engine, {})[precision] = record
    return records


def _check_arguments(weights, random_init, arch, precision, max_batch, engine, heads) -> None:
    if random_init == (weights is not None):
        raise InputError("give either a weights file or --random-init (not both, not neither)")
    if arch is not None and not random_init:
        raise InputError("--arch only applies to --random-init (a weights file defines its own architecture)")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if int(max_batch) < 1:
        raise InputError(f"max batch must be at least 1, not {max_batch}")
    if engine not in (True, False, "auto"):
        raise InputError(f"engine must be True, False or 'auto', not {engine!r}")
    if heads is not None and int(heads) < 1:
        raise InputError(f"heads must be positive, not {heads}")
    if weights is not None and not os.path.isfile(weights):
        raise InputError(f"weights file not found: {weights}")


def _write_weights(model, path: Path) -> dict:
    """`model`'s state dict as safetensors (reference names, float32); its bundle.json entry."""
    from safetensors.numpy import save_file

    from tsf.training.weights import state_of

    state = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in state_of(model).items()}
    save_file(state, str(path))
    return {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
            "tensors": len(state)}


def _load_model(weights, random_init: bool, arch_args: dict, heads, seed: int, log):
    """(Paddle model in eval mode, its TimeSformerConfig, the bundle.json `weights` entry)."""
    paddle = _import_paddle()
    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import WeightsError, infer_config, load_reference_weights, read_pdparams

    if random_init:
        arch_args = dict(arch_args)
        if heads is not None:
            if arch_args.get("heads", heads) != heads:
                raise InputError(f"--heads {heads} contradicts --arch heads={arch_args['heads']}")
            arch_args["heads"] = int(heads)
        if "heads" not in arch_args and arch_args.get("width", 64) % 64 == 0:
            arch_args["heads"] = arch_args.get("width", TimeSformerConfig.width) // 64  # as infer_config
        try:
            config = TimeSformerConfig(**arch_args)
        except ValueError as exc:
            raise InputError(f"invalid architecture: {exc}") from None
        log(f"random-init model {config.to_dict()} (seed {seed})")
        paddle.seed(seed)
        model = PPTimeSformer(config)
        weights_meta = {"file": None, "sha256": None, "random_init": True, "seed": seed}
    else:
        weights = Path(weights)
        try:
            state = read_pdparams(weights)
            config = infer_config(state, heads=heads)
            model = PPTimeSformer(config)
            load_reference_weights(model, state)
        except WeightsError as exc:
            raise InputError(str(exc)) from None
        del state
        log(f"loaded {weights} ({config.to_dict()})")
        weights_meta = {"file": weights.name, "sha256": sha256_file(weights), "random_init": False}
    model.eval()
    return model, config, weights_meta


def export_bundle(
    out_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    arch: str | dict | None = None,
    class_names=None,
    heads: int | None = None,
    engine: bool | str = False,
    precision: str = "fp16",
    max_batch: int = 32,
    overwrite: bool = False,
    seed: int = 0,
    log=None,
    class_names_source: str = "class_names",
    int8: bool = False,
) -> Path:
    """Export `weights` (or a seeded random-init model) to a bundle at `out_dir`; return its path.

    `out_dir` None means `default_bundle_dir()`. `arch` ("depth=2,width=128,..." or a dict) shapes
    a random-init model. `engine`: False, True (required: fail without TensorRT) or "auto" (build
    when TensorRT and a GPU are usable). `class_names` None means `class_0 ...` (SoccerNet-v2's names
    for an 18-class random-init model);
    `class_names_source` says where they came from in errors. `log(str)` receives progress lines.
    `int8` also writes the INT8 model for ONNX Runtime on the CPU. Every reduced CPU precision
    that can run here is put through its fidelity gate and recorded (bundle.json `fidelity`).
    Bad input and failed gates raise `TsfError` subclasses; no failure leaves anything behind.
    """
    log = log or (lambda message: None)
    _check_arguments(weights, random_init, arch, precision, max_batch, engine, heads)
    arch_args = parse_arch(arch)
    target = Path(out_dir if out_dir is not None else default_bundle_dir()).expanduser().absolute()
    _check_target(target, overwrite)
    if engine is True:  # required: say so before minutes of conversion, not after
        reason = _tensorrt_engine_module()[1]
        if reason is not None:
            raise BackendError(f"cannot build a TensorRT engine: {reason}")

    # Paddle runs in this block: Ctrl-C is raised at the checks between steps (DeferredInterrupt).
    with DeferredInterrupt() as interrupt:
        model, config, weights_meta = _load_model(weights, random_init, arch_args, heads, seed, log)
        if class_names is None:
            names = default_class_names(config.num_classes, random_init)
        else:
            names = check_class_names(class_names, config.num_classes, class_names_source)

        created_parents = make_directories(target.parent)
        staging = None
        try:
            try:
                # Not mkdtemp: its 0700 mode would become the bundle's; mkdir honours the umask.
                staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
                staging.mkdir()
            except OSError as exc:
                raise OutputError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
            if random_init:
                # The conversion runs in a child process that reads weights from a file.
                from tsf.training.weights import save_pdparams

                child_weights = staging / ".random-init.pdparams"
                save_pdparams(model, child_weights)
                interrupt.check()
            else:
                child_weights = weights
            onnx_path = staging / ONNX_FILE
            log("converting to ONNX (paddle2onnx, opset 17) ...")
            started = time.perf_counter()
            export_onnx(child_weights, config.to_dict(), onnx_path)
            interrupt.check()
            log(f"model.onnx: {onnx_path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.0f} s, "
                "passes onnx.checker")
            if random_init:
                child_weights.unlink()

            log("checking ONNX Runtime (CPU) against Paddle at batch 1 and 3 ...")
            started = time.perf_counter()
            figures = measure_parity(model, onnx_path, config.to_dict())
            log(format_parity(figures) + f" [{time.perf_counter() - started:.0f} s]")
            check_parity(figures)
            interrupt.check()
            weights_entry = _write_weights(model, staging / WEIGHTS_FILE)
            interrupt.check()
            log(f"{WEIGHTS_FILE}: {weights_entry['tensors']} tensors, {weights_entry['size_bytes'] / 2**20:.1f} MiB")
            del model  # Paddle's copy of the weights is not needed any more: the gates below load their own

            onnx_sha256 = sha256_file(onnx_path)
            kept = _engines_of_replaced_bundle(target, staging, onnx_sha256) if overwrite else []
            if kept:
                log(f"keeping {len(kept)} engine(s) of the bundle being replaced (same model.onnx)")
            built = _build_engines(engine, onnx_path, staging, precision, int(max_batch), config, log)
            engines = [e for e in kept if e["file"] not in {b["file"] for b in built}] + built

            meta = {
                "format": BUNDLE_FORMAT,
                "format_version": FORMAT_VERSION,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "bundle_id": bundle_id(onnx_sha256, names),
                "architecture": {
                    "frames": config.frames, "depth": config.depth, "width": config.width,
                    "heads": config.heads, "classes": config.num_classes, "image_size": config.image_size,
                    "patch_size": config.patch_size, "mlp_ratio": config.mlp_ratio,
                },
                "preprocessing": reference_preprocessing(config.image_size),
                "window": reference_window(config.frames),
                "class_names": names,
                "weights": weights_meta,
                "onnx": {"file": ONNX_FILE, "sha256": onnx_sha256, "opset": ONNX_OPSET,
                         "size_bytes": onnx_path.stat().st_size},
                "safetensors": weights_entry,
                "versions": _versions(),
                "parity": {"onnxruntime-cpu": figures},
                "engines": engines,
            }
            if int8:
                log("quantizing the model to INT8 for ONNX Runtime on the CPU ...")
                meta["quantized"] = {"int8": quantize_int8(onnx_path, staging / INT8_FILE)}
            _write_json(staging / BUNDLE_JSON, meta)
            meta["fidelity"] = _cpu_fidelity(load_bundle(staging), log)
            if not meta["fidelity"].get("onnxruntime", {}).get("int8", {}).get("passed", True):
                (staging / meta.pop("quantized")["int8"]["file"]).unlink()  # refused: the record says why
            _write_json(staging / BUNDLE_JSON, meta)
            interrupt.check()
            _move_into_place(staging, target, overwrite)
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
        return target
