"""TensorRT: run a bundle's prebuilt engine on an NVIDIA GPU (TensorRT 10 Python API).

Dependencies and why:
- `tensorrt` runs the engine `tsf-export` built for this GPU (deserialize, one execution context,
  `set_input_shape` + `set_tensor_address` + `execute_async_v3`).
- `cupy` owns the device buffers and the CUDA stream (docs/design.md, "GPU path"): the GPU
  preprocessing already produces CuPy arrays, and one library means one CUDA context (the device's
  primary context) shared by NVDEC, CuPy and TensorRT. No pycuda.
Both are imported lazily and guarded: this module is imported on machines without either.

This module also owns the engine part of the bundle contract that `tsf-export` writes and the
runtime reads: how engine files are named (`engine_file_stem`) and when an engine fits the
machine (`engine_mismatch`). Engines are tied to a GPU model / compute capability and to the exact
TensorRT version that built them, so a bundle may hold several and the runtime picks the one that
fits, or falls back to ONNX Runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..bundle import INPUT_NAME, OUTPUT_NAMES, Bundle
from ..errors import BackendError, EngineUnavailable, InputError, first_line
from ..gpu import GPU_IMPORT_ERRORS, Device, cupy_support

if TYPE_CHECKING:  # for mypy with tensorrt-stubs; never imported at run time from here
    import tensorrt as trt

# Below TensorRT 10 the API this module uses (named I/O tensors, execute_async_v3) is missing.
MIN_TENSORRT_MAJOR = 10
# The precisions of the engines tsf-export builds, preferred in this order when several fit this GPU.
PRECISION_PREFERENCE = ("fp16", "fp32")
PRECISIONS = {"cuda": PRECISION_PREFERENCE}
# --backend auto on a GPU: a TensorRT engine that fits first (registry.py).
AUTO_PRIORITY = {"cuda": 10}


@dataclass(frozen=True)
class GpuIdentity:
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "9.0"


def gpu_slug(gpu_name: str) -> str:
    """A file-name-safe form of a GPU model name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"


def engine_file_stem(precision: str, gpu: GpuIdentity, tensorrt_version: str, max_batch: int) -> str:
    """The name (without suffix) of an engine and its timing cache inside `engines/`.

    Everything an engine is tied to is in the name, so one bundle can hold engines for several
    GPUs and TensorRT versions side by side without overwriting each other.
    """
    sm = gpu.compute_capability.replace(".", "")
    return f"{precision}_{gpu_slug(gpu.name)}_sm{sm}_trt{tensorrt_version}_b{max_batch}"


def engine_mismatch(entry: Mapping[str, Any], gpu: GpuIdentity, tensorrt_version: str) -> str | None:
    """Why the engine described by `entry` (a bundle.json "engines" item) cannot run here, or None.

    TensorRT refuses (or silently mis-runs) plans from another TensorRT version, and a plan holds
    kernels chosen for one GPU; both are checked exactly, the safe choice when the fallback is
    ONNX Runtime or a rebuild with `tsf-export`.
    """
    file = entry.get("file", "?")
    built_cc, built_gpu = str(entry.get("compute_capability", "")), str(entry.get("gpu_name", ""))
    if built_cc != gpu.compute_capability:
        return (f"engine {file} was built for compute capability {built_cc or '?'} ({built_gpu or '?'}); "
                f"this GPU is {gpu.name} with compute capability {gpu.compute_capability}")
    if gpu_slug(built_gpu) != gpu_slug(gpu.name):
        return f"engine {file} was built on a {built_gpu or '?'}; this GPU is a {gpu.name}"
    built_trt = str(entry.get("tensorrt_version", ""))
    if built_trt != tensorrt_version:
        return f"engine {file} was built with TensorRT {built_trt or '?'}; this is TensorRT {tensorrt_version}"
    return None


def batch_slices(total: int, max_batch: int) -> list[slice]:
    """Consecutive slices of at most `max_batch` rows covering `total` rows (engines have a max batch)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def _import_tensorrt():
    """The tensorrt module, or a reason string when it cannot be used."""
    try:
        import tensorrt
    except GPU_IMPORT_ERRORS as e:
        return f"TensorRT is not installed ({first_line(e)})"
    version = getattr(tensorrt, "__version__", None)
    if version is None or not hasattr(tensorrt, "Builder"):
        # `pip install tensorrt-stubs` (type stubs only) leaves an importable namespace package
        # named tensorrt with nothing in it; do not mistake it for TensorRT.
        return "TensorRT is not installed (found only an empty 'tensorrt' package, e.g. its type stubs)"
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        return f"TensorRT reports an unreadable version {version!r}"
    if major < MIN_TENSORRT_MAJOR:
        return f"TensorRT {version} is too old: tsf needs TensorRT {MIN_TENSORRT_MAJOR} or newer"
    return tensorrt


def tensorrt_support(gpu_id: int = 0) -> str | None:
    """None when TensorRT engines can run here, else the reason (one line)."""
    trt_or_reason = _import_tensorrt()
    if isinstance(trt_or_reason, str):
        return trt_or_reason
    return cupy_support(Device("cuda", gpu_id))


def tensorrt_version() -> str:
    import tensorrt

    return str(tensorrt.__version__)


def current_gpu(gpu_id: int = 0) -> GpuIdentity:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(gpu_id)
    name = props["name"]
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return GpuIdentity(name=str(name).strip(), compute_capability=f"{props['major']}.{props['minor']}")


def engine_matches(entry: Mapping[str, Any], gpu_id: int = 0) -> str | None:
    """None when the engine described by `entry` can run on this machine, else why not."""
    reason = tensorrt_support(gpu_id)
    if reason is not None:
        return reason
    return engine_mismatch(entry, current_gpu(gpu_id), tensorrt_version())


def find_engine(bundle: Bundle, precision: str | None = None, gpu_id: int = 0) -> tuple[dict | None, list[str]]:
    """The bundle's engine that fits this machine (fp16 before fp32 unless `precision` is given),
    and the reasons every other engine was passed over (for the fallback warning)."""
    reasons: list[str] = []
    order = [precision] if precision else list(PRECISION_PREFERENCE)
    candidates = sorted((e for e in bundle.engines if e.get("precision") in order),
                        key=lambda e: order.index(e["precision"]))
    if not candidates:
        return None, [f"the bundle has no {precision or ''} TensorRT engine (build one with tsf-export on this GPU)".replace("  ", " ")]
    for entry in candidates:
        reason = engine_matches(entry, gpu_id)
        if reason is None and not bundle.path(entry["file"]).is_file():
            reason = f"engine file {entry['file']} is missing from the bundle"
        if reason is None:
            return entry, reasons
        reasons.append(reason)
    return None, reasons


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    # trt.Dims behaves like a tuple at run time, but its stubs declare no __iter__.
    return tuple(int(dims[i]) for i in range(len(dims)))


class EngineRunner:
    """One deserialized engine, one execution context, device buffers sized once for max batch.

    Shared by the runtime backend and by `tsf-export`'s parity gate, which runs a freshly built
    plan before anything is written.
    """

    def __init__(self, plan: bytes, gpu_id: int = 0):
        trt_or_reason = _import_tensorrt()
        if isinstance(trt_or_reason, str):
            raise EngineUnavailable(trt_or_reason)
        import cupy
        import tensorrt as trt

        self._cupy = cupy
        self._device = cupy.cuda.Device(gpu_id)
        self._device.use()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineUnavailable(f"TensorRT {trt.__version__} could not load the engine "
                               "(built by another TensorRT version or for another GPU? rebuild it with tsf-export)")
        self._engine: trt.ICudaEngine = engine
        self._check_interface(trt)
        # Profile 0 spans batch min..max (tsf-export builds exactly one profile).
        min_shape, opt_shape, max_shape = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.opt_batch, self.max_batch = min_shape[0], opt_shape[0], max_shape[0]
        self.clip_shape = _dims(max_shape)[1:]  # (3, T, S, S)
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineUnavailable("TensorRT could not create an execution context (out of GPU memory?)")
        self._context: trt.IExecutionContext = context
        # Non-blocking: TensorRT's work must not serialise with other threads' default-stream work.
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._input = cupy.empty((self.max_batch, *self.clip_shape), dtype=cupy.float32)
        # Output buffers are allocated once, for the largest batch; each run writes a prefix.
        self._outputs = {}
        self._host: dict[str, np.ndarray] = {}  # pinned host buffers by tensor name (see `_pinned`)
        self._context.set_input_shape(INPUT_NAME, (self.max_batch, *self.clip_shape))
        for name in OUTPUT_NAMES:
            shape = _dims(self._context.get_tensor_shape(name))
            self._outputs[name] = cupy.empty(shape, dtype=cupy.float32)
            if not self._context.set_tensor_address(name, self._outputs[name].data.ptr):
                raise EngineUnavailable(f"TensorRT refused the buffer for output {name!r}")

    def _check_interface(self, trt) -> None:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        expected = [INPUT_NAME, *OUTPUT_NAMES]
        if sorted(names) != sorted(expected):
            raise EngineUnavailable(f"TensorRT engine has tensors {names}, expected {expected}")
        if self._engine.get_tensor_mode(INPUT_NAME) != trt.TensorIOMode.INPUT:
            raise EngineUnavailable(f"TensorRT engine: {INPUT_NAME!r} is not an input")
        for name in expected:
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise EngineUnavailable(f"TensorRT engine: tensor {name!r} is not float32")

    def run(self, video) -> dict[str, np.ndarray]:
        """float32 [B, 3, T, S, S] (NumPy or CuPy, any B) -> NumPy float32 outputs, in row order.

        Every copy and every chunk's inference is queued on one stream and the host waits once,
        at the end: chunks reuse the device buffers safely because the stream runs them in order.
        Host memory on either side of a copy is pinned, without which CUDA copies synchronously.
        """
        cupy = self._cupy
        if tuple(video.shape[1:]) != self.clip_shape:
            raise InputError(f"TensorRT engine expects clips of shape {self.clip_shape}, got {tuple(video.shape[1:])}")
        total = int(video.shape[0])
        with self._device:
            on_gpu = isinstance(video, cupy.ndarray)
            if on_gpu:
                video = cupy.ascontiguousarray(video, dtype=cupy.float32)
                # The clips were written on the caller's current stream; TensorRT reads on ours.
                self._stream.wait_event(cupy.cuda.get_current_stream().record())
            else:
                staged = self._pinned(INPUT_NAME, tuple(video.shape))
                staged[...] = video
                video = staged
            results = {name: self._pinned(name, (total, *self._outputs[name].shape[1:])) for name in OUTPUT_NAMES}
            try:
                for rows in batch_slices(total, self.max_batch):
                    count = rows.stop - rows.start
                    if on_gpu:
                        chunk = video[rows]  # a C-contiguous slice along the batch axis: no copy
                    else:
                        chunk = self._input[:count]
                        chunk.set(video[rows], stream=self._stream)
                    if not self._context.set_input_shape(INPUT_NAME, (count, *self.clip_shape)):
                        raise BackendError(f"TensorRT refused batch size {count} (engine max {self.max_batch})")
                    self._context.set_tensor_address(INPUT_NAME, chunk.data.ptr)
                    if not self._context.execute_async_v3(self._stream.ptr):
                        raise BackendError("TensorRT inference failed (see the TensorRT log above)")
                    for name in OUTPUT_NAMES:
                        self._outputs[name][:count].get(stream=self._stream, out=results[name][rows], blocking=False)
            finally:
                # The one wait; also after a failure, so that no queued copy outlives this call.
                self._stream.synchronize()
        # The pinned buffers are reused by the next run: hand out copies.
        return {name: np.array(results[name]) for name in OUTPUT_NAMES}

    def _pinned(self, name: str, shape: tuple) -> np.ndarray:
        """A page-locked float32 host buffer of `shape` for `name`, grown only when a run needs more rows."""
        held = self._host.get(name)
        if held is None or held.shape[0] < shape[0]:
            import cupyx

            held = self._host[name] = cupyx.empty_pinned(shape, dtype=np.float32)
        return held[:shape[0]]


def load(bundle: Bundle, device: Device, precision: str, threads: int) -> TensorRTBackend:
    """The bundle's engine that fits this GPU and TensorRT version (`precision` auto: fp16 first)."""
    reason = tensorrt_support(device.index)
    if reason is not None:
        raise EngineUnavailable(reason)
    entry, reasons = find_engine(bundle, None if precision == "auto" else precision, gpu_id=device.index)
    if entry is None:
        raise EngineUnavailable("; ".join(reasons) + " (build one with tsf-export on this machine)")
    return TensorRTBackend(bundle, entry, device)


class TensorRTBackend:
    """The `Backend` protocol (runtime/backends/__init__.py) over a bundle's TensorRT engine."""

    name = "tensorrt"
    wants_gpu_input = True  # CuPy batches are read in place

    def __init__(self, bundle: Bundle, engine_entry: Mapping[str, Any], device: Device):
        reason = engine_matches(engine_entry, device.index)
        if reason is not None:
            raise EngineUnavailable(reason)
        path = bundle.path(engine_entry["file"])
        try:
            plan = path.read_bytes()
        except OSError as e:
            raise EngineUnavailable(f"{path}: cannot read TensorRT engine ({first_line(e)})") from None
        self._runner = EngineRunner(plan, device.index)
        self.device = device
        self.engine_file = str(engine_entry["file"])
        self.precision = str(engine_entry.get("precision", "fp16"))
        self.max_batch = self._runner.max_batch
        self.default_batch_size = max(1, min(self._runner.opt_batch, self.max_batch))
        expected = (3, bundle.frames, bundle.image_size, bundle.image_size)
        if self._runner.clip_shape != expected:
            raise EngineUnavailable(f"{path}: engine input {self._runner.clip_shape} does not match the bundle's {expected}")

    def describe(self) -> dict:
        gpu = current_gpu(self.device.index)
        return {"library": "tensorrt", "version": tensorrt_version(), "engine": self.engine_file,
                "gpu": gpu.name, "compute_capability": gpu.compute_capability}

    def run(self, video) -> dict[str, np.ndarray]:
        return self._runner.run(video)
