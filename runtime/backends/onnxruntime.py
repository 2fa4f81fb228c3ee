"""ONNX Runtime: the portable engine. It runs the bundle's `model.onnx` as exported, on the CPU
(the `cpu` extra's onnxruntime) or on a GPU through the CUDA execution provider (the `gpu`
extra's onnxruntime-gpu), and it is the reference the exporter's parity gate compares with. On the
CPU it also runs INT8: the bundle's model with dynamically quantized matrix products
(`backends/quantize.py`), opt-in only (`--precision int8`).

onnxruntime-gpu imports fine on a machine without a GPU and silently drops the CUDA provider
(docs/toolchain.md, "The GPU stack"), so the provider that actually started is checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import INPUT_NAME, OUTPUT_NAMES, Bundle
from ..errors import EngineUnavailable, InputError, first_line
from ..extras import install_hint, require
from ..gpu import Device, gpu_name

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
PRECISIONS = {"cpu": ("fp32", "int8"), "cuda": ("fp32",)}
# --backend auto: the last resort on a GPU, after OpenVINO on the CPU (registry.py).
AUTO_PRIORITY = {"cuda": 30, "cpu": 20}


def load(bundle: Bundle, device: Device, precision: str, threads: int) -> OnnxRuntimeBackend:
    if precision == "int8":
        from .quantize import int8_model_path

        return OnnxRuntimeBackend(bundle, device, threads, int8_model_path(bundle), "int8")
    return OnnxRuntimeBackend(bundle, device, threads)


class OnnxRuntimeBackend:
    """An InferenceSession with the CPU or the CUDA execution provider."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: Device, threads: int, model_path=None, precision: str = "fp32"):
        model_path = model_path or bundle.onnx_path
        ort = require("onnxruntime", "gpu" if device.is_cuda else "cpu", "the onnxruntime engine")
        wanted = PROVIDERS[device.kind]
        if wanted not in ort.get_available_providers():
            raise EngineUnavailable(f"this ONNX Runtime has no {wanted}: onnxruntime-gpu brings it, "
                                    f"{install_hint('gpu')}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.is_cuda:
            providers.insert(0, (wanted, {"device_id": device.index}))
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as e:
            # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...; plain Exception
            # subclasses) for unreadable or invalid models.
            raise InputError(f"{model_path}: ONNX Runtime cannot load the model ({first_line(e)})") from None
        active = self.session.get_providers()
        if active[0] != wanted:
            raise EngineUnavailable(f"ONNX Runtime could not start {wanted} (active: {', '.join(active)})")
        self.device = device
        self.precision = precision
        self.model_path = model_path
        self.threads = threads
        self.version = ort.__version__
        # On the CPU one window is already a large GEMM workload: batching gains no measurable
        # speed and batch 4 needs about twice the memory of batch 1 (benchmarks/RESULTS.md).
        self.default_batch_size = 16 if device.is_cuda else 1
        self.wants_gpu_input = device.is_cuda
        names = [o.name for o in self.session.get_outputs()]
        if [n for n in OUTPUT_NAMES if n not in names] or [i.name for i in self.session.get_inputs()] != [INPUT_NAME]:
            raise InputError(f"{model_path}: the model's inputs/outputs are not "
                             f"{INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}")

    def describe(self) -> dict:
        return {"library": "onnxruntime", "version": self.version,
                "provider": self.session.get_providers()[0], "threads": self.threads, "model": str(self.model_path),
                "gpu": gpu_name(self.device)}

    def run(self, video) -> dict[str, np.ndarray]:
        if isinstance(video, np.ndarray):
            outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(video, dtype=np.float32)})
        elif not self.device.is_cuda:
            outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: video.get()})  # a CuPy batch: one copy
        else:
            outputs = self._run_cupy(video)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(OUTPUT_NAMES, outputs)}

    def _run_cupy(self, video):
        """I/O binding: the CuPy batch is read in place on the GPU, no host copy of the input."""
        import cupy

        video = cupy.ascontiguousarray(video, dtype=cupy.float32)
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", self.device.index, np.float32, tuple(video.shape), video.data.ptr)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cpu")
        # ORT reads the input on its own stream: the CuPy kernels that wrote it must be done.
        cupy.cuda.get_current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

