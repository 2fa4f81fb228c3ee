"""TensorRT engines for a bundle: build one for this GPU, prove it matches ONNX Runtime, then store it.

Dependencies and why:
- `tensorrt` (10.x or 11.x) parses the bundle's ONNX and builds a serialized plan with one
  optimisation profile (batch 1..max).
- `cupy`, through `tsf.runtime.backends.tensorrt.EngineRunner`, runs the fresh plan for the parity
  gate with the very code the runtime uses.
- `onnxruntime` is the reference the engine is compared with (CUDA execution provider when
  onnxruntime-gpu is installed and sees the GPU, else the CPU).
- `onnxconverter-common` makes the FP16 ONNX that an FP16 strongly typed network is built from.

Networks are strongly typed, the only kind TensorRT 11 builds (10.x builds them when asked; docs/
toolchain.md, "The GPU stack"): every tensor's type comes from the ONNX, no builder flag chooses
precisions. An FP32 engine is built from `model.onnx` with TF32 switched off. An FP16 engine is
built from an FP16 copy of it in which LayerNormalization and Softmax (and the Casts around them)
stay FP32, inputs and outputs too: FP16 LayerNorm after attention can overflow (the sum of
squares of a 768-wide residual stream), and softmax exponentials are where FP16's range runs out
first; both are cheap next to the matrix products, which run in FP16.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tsf.runtime.bundle import ENGINES_DIR, INPUT_NAME, OUTPUT_NAMES
from tsf.runtime.errors import BackendError, TsfError
from tsf.runtime.fidelity import (MAX_REL_L2, MIN_ROW_COSINE, compare_outputs, reduced_precision_passes,
                                  same_arithmetic_failures)
from tsf.runtime.backends.tensorrt import (
    EngineRunner,
    current_gpu,
    engine_file_stem,
    tensorrt_support,
    tensorrt_version,
)


if TYPE_CHECKING:  # mypy with tensorrt-stubs checks every TensorRT call below
    import tensorrt as trt

PRECISIONS = ("fp16", "fp32")
PARITY_BATCH_SIZES = (1, 3)
# ONNX ops that stay FP32 in the FP16 ONNX for strongly typed (TensorRT >= 11) builds.
FP32_ONNX_OPS = ("LayerNormalization", "Softmax")


class EngineParityError(TsfError):
    """A built engine does not reproduce ONNX Runtime within the gate; nothing was written."""


def engine_support(gpu_id: int = 0) -> str | None:
    """None when engines can be built here (TensorRT >= 10, CuPy, a CUDA GPU), else the reason."""
    return tensorrt_support(gpu_id)


def _detach_consumed_outputs(model) -> None:
    """Give graph outputs that other nodes also read (our `features` feeds the heads) an Identity.

    With keep_io_types, onnxconverter-common casts a graph output back to float32 under its own
    name, but leaves the nodes that read that name inside the graph fed with float32 next to
    float16 weights: an invalid model (MatMul bound to float and float16). Reading an internal
    copy instead keeps the graph consistent.
    """
    from onnx import helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumed = {name for node in graph.node for name in node.input if name in outputs}
    for name in sorted(consumed):
        internal = f"{name}_tsf_internal"
        for node in graph.node:
            node.output[:] = [internal if o == name else o for o in node.output]
            node.input[:] = [internal if i == name else i for i in node.input]
        graph.node.append(helper.make_node("Identity", [internal], [name], name=f"{name}_tsf_output"))


def fp16_onnx(onnx_path: str | os.PathLike, out_path: str | os.PathLike) -> list[str]:
    """Write an FP16 copy of the ONNX for strongly typed builds (LayerNorm/Softmax FP32, I/O FP32)
    to `out_path`; the names of the nodes kept FP32."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(onnx_path))
    # onnxconverter-common names its inserted Casts after the node they guard; unnamed nodes all
    # give the same Cast names and an invalid graph ("Duplicate definition of name"), so name them.
    used = {node.name for node in model.graph.node if node.name}
    for number, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_tsf{number}"
            while candidate in used:
                candidate += "_"
            node.name = candidate
            used.add(candidate)
    _detach_consumed_outputs(model)
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP32_ONNX_OPS))
    onnx.save(converted, str(out_path))
    return [node.name for node in converted.graph.node if node.op_type in FP32_ONNX_OPS]


def _parse(network: trt.INetworkDefinition, onnx_path: Path, logger: trt.ILogger) -> trt.OnnxParser:
    """Fill `network` from the ONNX file. The returned parser owns the network's weights: keep it
    alive until the engine is built."""
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors.splitlines()[0]}")
    return parser


def build_plan(onnx_path: Path, precision: str, min_batch: int, opt_batch: int, max_batch: int,
               clip_shape: tuple[int, ...], timing_cache: bytes) -> tuple[bytes, bytes, list[str]]:
    """(serialized plan, serialized timing cache, names of the ONNX nodes kept FP32) for one profile."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    with tempfile.TemporaryDirectory(prefix="tsf-trt-") as scratch:
        source, kept = onnx_path, []
        if precision == "fp16":
            source = Path(scratch) / "model.fp16.onnx"
            kept = fp16_onnx(onnx_path, source)
        # Required on TensorRT 10, accepted (and implied) on 11.
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = _parse(network, source, logger)  # held until the build below has finished

        config = builder.create_builder_config()  # workspace: TensorRT's default, the whole GPU
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # TF32 matmuls would miss the FP32 gate

        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, trt.Dims([min_batch, *clip_shape]), trt.Dims([opt_batch, *clip_shape]),
                          trt.Dims([max_batch, *clip_shape]))
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing_cache)
        config.set_timing_cache(cache, False)

        plan = builder.build_serialized_network(network, config)
        del parser
        if plan is None:
            raise BackendError(f"TensorRT could not build a {precision} engine (see the TensorRT log above)")
        return bytes(plan), bytes(config.get_timing_cache().serialize()), kept


def reference_session(onnx_path: Path):
    """ONNX Runtime on the GPU when it really runs there, else on the CPU; and which one it is."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        session = onnxruntime.InferenceSession(str(onnx_path), options,
                                               providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        # The CUDA provider silently falls back to the CPU when it cannot load: ask what was used.
        if session.get_providers()[0] == "CUDAExecutionProvider":
            return session, "onnxruntime-cuda"
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session, "onnxruntime-cpu"


def parity_gate(precision: str, reference: dict[str, np.ndarray], engine: dict[str, np.ndarray],
                reference_name: str, batch_sizes: list[int]) -> dict:
    """The engine's parity figures (runtime/fidelity.py's measure and bars: FP16 keeps every feature
    row at cosine >= 0.999, FP32, built without TF32, every output at relative L2 <= 1e-4); raises
    EngineParityError when the gate fails."""
    figures: dict = {"reference": reference_name, "batch_sizes": batch_sizes, **compare_outputs(reference, engine)}
    if precision == "fp16":
        if not reduced_precision_passes(figures):
            raise EngineParityError(
                f"TensorRT fp16 engine refused: features cosine {figures['features']['min_row_cosine']:.5f} "
                f"< {MIN_ROW_COSINE} against {reference_name}")
    else:
        failing = same_arithmetic_failures(figures)
        if failing:
            raise EngineParityError(f"TensorRT fp32 engine refused: {', '.join(failing)} > {MAX_REL_L2:g} "
                                    f"against {reference_name}")
    return figures


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path: str | os.PathLike, bundle_dir: str | os.PathLike, precision: str = "fp16",
                 max_batch: int = 32, opt_batch: int | None = None, frames: int = 16, image_size: int = 224,
                 gpu_id: int = 0, seed: int | None = None) -> dict:
    """Build, verify and store one engine in `bundle_dir/engines/`; returns its bundle.json entry.

    Raises BackendError when TensorRT or a GPU is missing or the build fails, EngineParityError
    when the engine misses the gate; in both cases nothing is written.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r} (fp16 or fp32)")
    if max_batch < 1:
        raise BackendError(f"max batch must be at least 1, got {max_batch}")
    opt_batch = min(16, max_batch) if opt_batch is None else opt_batch
    if not 1 <= opt_batch <= max_batch:
        raise BackendError(f"optimum batch {opt_batch} is outside 1..{max_batch}")
    reason = engine_support(gpu_id)
    if reason is not None:
        raise BackendError(f"cannot build a TensorRT engine: {reason}")

    onnx_path, bundle_dir = Path(onnx_path), Path(bundle_dir)
    gpu, version = current_gpu(gpu_id), tensorrt_version()
    stem = engine_file_stem(precision, gpu, version, max_batch)
    engine_rel, cache_rel = f"{ENGINES_DIR}/{stem}.engine", f"{ENGINES_DIR}/{stem}.cache"
    cache_path = bundle_dir / cache_rel
    old_cache = cache_path.read_bytes() if cache_path.is_file() else b""
    clip_shape = (3, frames, image_size, image_size)

    started = time.perf_counter()
    plan, timing_cache, kept = build_plan(onnx_path, precision, 1, opt_batch, max_batch, clip_shape, old_cache)
    build_seconds = time.perf_counter() - started

    runner = EngineRunner(plan, gpu_id)
    session, reference_name = reference_session(onnx_path)
    rng = np.random.default_rng(seed)
    batch_sizes = sorted({min(b, max_batch) for b in PARITY_BATCH_SIZES})
    reference: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    engine: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for batch in batch_sizes:
        video = rng.random((batch, *clip_shape), dtype=np.float32)
        for name, value in zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: video})):
            reference[name].append(value)
        for name, value in runner.run(video).items():
            engine[name].append(value)
    parity = parity_gate(precision, {k: np.concatenate(v) for k, v in reference.items()},
                         {k: np.concatenate(v) for k, v in engine.items()}, reference_name, batch_sizes)
    parity["fp32_layers"] = len(kept)

    (bundle_dir / ENGINES_DIR).mkdir(parents=True, exist_ok=True)
    _write_atomically(bundle_dir / engine_rel, plan)
    _write_atomically(cache_path, timing_cache)
    return {
        "file": engine_rel,
        "timing_cache": cache_rel,
        "precision": precision,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "tensorrt_version": version,
        "min_batch": 1,
        "opt_batch": opt_batch,
        "max_batch": max_batch,
        "build_seconds": round(build_seconds, 1),
        "size_bytes": len(plan),
        "parity": parity,
    }
