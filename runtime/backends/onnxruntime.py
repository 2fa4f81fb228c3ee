"""Stage 6: batches of windows -> features, logits and event times.

Backends share one small protocol (`Backend`). ONNX Runtime is the portable one (CPU, and the CUDA
and TensorRT execution providers of onnxruntime-gpu); serialized TensorRT engines from the bundle
run through `infer_tensorrt.py`. GPU packages are imported only when a GPU backend is asked for,
and every import is guarded: without a GPU, onnxruntime-gpu imports but silently falls back to the
CPU, and the TensorRT/CUDA wheels raise ImportError, OSError or RuntimeError.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from .bundle import tsf_home
from .errors import BackendError, InputError

log = logging.getLogger("tsf")

OUTPUT_NAMES = ("features", "logits", "event_times")
GPU_EXCEPTIONS = (ImportError, OSError, RuntimeError)


class Backend(Protocol):
    name: str  # e.g. "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32" or "fp16"
    default_batch_size: int
    wants_gpu_input: bool  # True when CuPy input avoids a host round trip

    def run(self, video) -> dict[str, np.ndarray]:
        """video float32 [B, 3, T, 224, 224] (NumPy or CuPy) -> float32 NumPy arrays by OUTPUT_NAMES."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _import_onnxruntime():
    try:
        import onnxruntime
    except GPU_EXCEPTIONS as e:
        raise BackendError(f"ONNX Runtime is not installed ({e}); pip install 'tsf[cpu]' or 'tsf[gpu]'") from None
    return onnxruntime


class OnnxRuntimeBackend:
    """ONNX Runtime with the CPU, CUDA or TensorRT execution provider."""

    def __init__(self, bundle, provider: str = "cpu", gpu_id: int = 0, threads: int | None = None):
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's default thread count is the number of physical cores it detects, which ignores
        # CPU affinity (containers, Slurm); use the cores this process may actually run on.
        options.intra_op_num_threads = threads or cpu_count()
        options.log_severity_level = 3
        providers: list[Any]  # names, or (name, options) pairs
        if provider == "cpu":
            providers = ["CPUExecutionProvider"]
        elif provider == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": gpu_id}), "CPUExecutionProvider"]
        elif provider == "tensorrt":
            # ORT builds its TensorRT engines at the first run (minutes); cache them per bundle in
            # TSF_HOME, not in the bundle, which may be read-only or shared between GPU models.
            cache = str(tsf_home() / "cache" / "ort-tensorrt" / bundle.bundle_id)
            providers = [
                ("TensorrtExecutionProvider", {"device_id": gpu_id, "trt_fp16_enable": True,
                                               "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}),
                ("CUDAExecutionProvider", {"device_id": gpu_id}), "CPUExecutionProvider"]
        else:
            raise BackendError(f"unknown ONNX Runtime provider {provider!r}")
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), options, providers=providers)
        except Exception as e:
            # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...; plain Exception
            # subclasses) for unreadable or invalid models.
            raise InputError(f"{bundle.onnx_path}: ONNX Runtime cannot load the model ({_first_line(e)})") from None
        active = self.session.get_providers()
        wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                  "tensorrt": "TensorrtExecutionProvider"}[provider]
        # onnxruntime-gpu drops a provider it cannot start (no GPU, wrong CUDA) with only a log line.
        if active[0] != wanted:
            raise BackendError(f"ONNX Runtime could not start {wanted} (active: {', '.join(active)})")
        self.provider = provider
        self.gpu_id = gpu_id
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.name = f"onnxruntime-{provider}"
        self.precision = "fp16" if provider == "tensorrt" else "fp32"
        # On the CPU one window is already a large GEMM workload: batching gains no measurable
        # speed (within run-to-run noise) and batch 4 needs about twice the memory of batch 1
        # (benchmarks/RESULTS.md, 2026-11-25).
        self.default_batch_size = 1 if provider == "cpu" else 16
        self.wants_gpu_input = provider != "cpu"
        names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing or [i.name for i in self.session.get_inputs()] != ["video"]:
            raise InputError(f"{bundle.onnx_path}: the model's inputs/outputs are not video -> {', '.join(OUTPUT_NAMES)}")

    def run(self, video) -> dict[str, np.ndarray]:
        if not isinstance(video, np.ndarray) and self.provider == "cpu":
            video = video.get()  # a CuPy batch (NVDEC decoder) for the CPU provider: one copy to host
        if isinstance(video, np.ndarray):
            outputs = self.session.run(list(OUTPUT_NAMES), {"video": np.ascontiguousarray(video, dtype=np.float32)})
        else:
            outputs = self._run_cupy(video)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(OUTPUT_NAMES, outputs)}

    def _run_cupy(self, video):
        """I/O binding: the CuPy batch is read in place on the GPU, no host copy of the input."""
        import cupy

        video = cupy.ascontiguousarray(video, dtype=cupy.float32)
        binding = self.session.io_binding()
        binding.bind_input("video", "cuda", self.gpu_id, np.float32, tuple(video.shape), video.data.ptr)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cpu")
        # ORT reads the input on its own stream: make sure CuPy's kernels that wrote it are done.
        cupy.cuda.get_current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _cuda_providers_available() -> set[str]:
    try:
        ort = _import_onnxruntime()
    except BackendError:
        return set()
    return set(ort.get_available_providers())


def _tensorrt_engine_backend(bundle, gpu_id: int, explicit: bool, tensorrt_asked: bool):
    """A TensorRT backend for the bundle engine that fits this GPU and TensorRT, or None (with a warning)."""
    if not list(getattr(bundle, "engines", None) or []):
        if tensorrt_asked:
            log.warning("bundle %s has no TensorRT engine; trying ONNX Runtime's GPU providers", bundle.dir)
        return None
    # On a machine without TensorRT, a bundle's engines are simply not for it: only say so loudly
    # when TensorRT or CUDA was asked for.
    say = log.warning if explicit else log.info
    try:
        from . import infer_tensorrt
    except GPU_EXCEPTIONS as e:
        say("TensorRT unavailable (%s); using ONNX Runtime", _first_line(e))
        return None
    reason = infer_tensorrt.tensorrt_support(gpu_id)
    if reason:
        say("TensorRT unavailable (%s); using ONNX Runtime", reason)
        return None
    entry, reasons = infer_tensorrt.find_engine(bundle, gpu_id=gpu_id)
    if entry is not None:
        try:
            return infer_tensorrt.TensorRTBackend(bundle, entry, gpu_id=gpu_id)
        except GPU_EXCEPTIONS as e:
            reasons.append(f"{entry.get('file', '?')} failed to load: {_first_line(e)}")
    log.warning("no TensorRT engine in bundle %s fits this machine (%s); falling back to ONNX Runtime "
                "(rebuild the engine with tsf-export on this machine)", bundle.dir, "; ".join(reasons))
    return None


def select_backend(bundle, backend: str = "auto", device: str = "auto", *, gpu_id: int = 0) -> Backend:
    """The fastest backend that can run here, honouring what the user asked for.

    auto: TensorRT engine (GPU) -> ONNX Runtime CUDA -> ONNX Runtime CPU. `--device cpu` forces the
    CPU; `--device cuda` fails rather than silently running on the CPU.
    """
    if backend not in ("auto", "tensorrt", "onnxruntime"):
        raise BackendError(f"unknown backend {backend!r} (auto, tensorrt or onnxruntime)")
    if device not in ("auto", "cuda", "cpu"):
        raise BackendError(f"unknown device {device!r} (auto, cuda or cpu)")
    if device == "cpu":
        if backend == "tensorrt":
            raise BackendError("--backend tensorrt needs --device cuda or auto")
        return OnnxRuntimeBackend(bundle, provider="cpu")

    want_gpu = device == "cuda" or backend == "tensorrt"
    if backend in ("auto", "tensorrt"):
        engine = _tensorrt_engine_backend(bundle, gpu_id, explicit=want_gpu, tensorrt_asked=backend == "tensorrt")
        if engine is not None:
            return engine
    available = _cuda_providers_available()
    gpu_providers = ["tensorrt", "cuda"] if backend == "tensorrt" else ["cuda"]
    failures = []
    for provider in gpu_providers:
        name = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}[provider]
        if name not in available:
            failures.append(f"ONNX Runtime has no {name} (pip install 'tsf[gpu]' for onnxruntime-gpu)")
            continue
        try:
            return OnnxRuntimeBackend(bundle, provider=provider, gpu_id=gpu_id)
        except BackendError as e:
            failures.append(str(e))
    if want_gpu:
        asked = "--backend tensorrt" if backend == "tensorrt" else "--device cuda"
        raise BackendError(f"{asked}: no GPU backend could start: " + "; ".join(failures))
    return OnnxRuntimeBackend(bundle, provider="cpu")
