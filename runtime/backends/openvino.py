"""OpenVINO: the fast CPU engine, FP32 or BF16. It compiles the bundle's `model.onnx` directly (no
conversion step, nothing written) into oneDNN kernels, whose BF16 matrix products run on the
CPU's native BF16 dot products (AVX512_BF16, AMX) with FP32 accumulation.

OpenVINO's CPU plugin switches to BF16 by itself on CPUs with native BF16 (docs/toolchain.md,
"CPU inference"), so the precision is always set explicitly: `f32` for fp32 and `bf16` only when
`backends.precision` allowed it (native BF16 and the bundle's fidelity gate passed).
"""

from __future__ import annotations

import functools

import numpy as np

from ..bundle import INPUT_NAME, OUTPUT_NAMES, Bundle
from ..errors import InputError
from ..extras import require
from ..gpu import Device

PRECISIONS = {"cpu": ("bf16", "fp32")}
# --backend auto on the CPU: first (registry.py).
AUTO_PRIORITY = {"cpu": 10}
INFERENCE_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _reason(error: Exception) -> str:
    """OpenVINO's messages start with the source lines that raised them; the reason is the last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def load(bundle: Bundle, device: Device, precision: str, threads: int) -> OpenVinoBackend:
    return OpenVinoBackend(bundle, device, precision, threads)


@functools.cache
def shared_core():
    """The process's one OpenVINO Core, kept for its whole life and shared by every engine.

    Each Core loads its own CPU plugin, which gives the compiling thread an alternate signal stack
    and, when torn down, frees it and puts back the stack that was there before. Two Cores dropped
    in the order they were made leave the thread on the first one's freed stack, and the next
    signal Python handles (Ctrl-C) kills the process (docs/toolchain.md, "CPU inference"). With one
    Core the stack is set up once and never torn down while the process runs."""
    return require("openvino", "cpu", "the openvino engine").Core()


class OpenVinoBackend:
    """One compiled model and one synchronous infer request on the CPU plugin."""

    name = "openvino"
    default_batch_size = 1  # as ONNX Runtime: one window is already a large GEMM workload on a CPU
    wants_gpu_input = False

    def __init__(self, bundle: Bundle, device: Device, precision: str, threads: int):
        ov = require("openvino", "cpu", "the openvino engine")
        # Through the ONNX frontend only: Core.read_model tries every frontend on a file the ONNX one
        # cannot parse, and TensorFlow's prints its own parse errors to stderr.
        onnx_frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
        try:
            model = onnx_frontend.convert(onnx_frontend.load(str(bundle.onnx_path)))
        except Exception as e:  # frontend failures (GeneralFailure, ...) derive from Exception only
            raise InputError(f"{bundle.onnx_path}: OpenVINO cannot read the model ({_reason(e)})") from None
        inputs = [i.get_any_name() for i in model.inputs]
        outputs = {name for o in model.outputs for name in o.get_names()}
        if inputs != [INPUT_NAME] or not outputs.issuperset(OUTPUT_NAMES):
            raise InputError(f"{bundle.onnx_path}: the model's inputs/outputs are not "
                             f"{INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}")
        # LATENCY: one stream using every thread for one request at a time, which is how the
        # pipeline calls it (one batch after another).
        self.compiled = shared_core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION_HINTS[precision],
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
        })
        del model  # the compiled model holds its own copy of the weights
        self.request = self.compiled.create_infer_request()
        self.output_ports = [self.compiled.output(name) for name in OUTPUT_NAMES]
        self.device = device
        self.precision = precision
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.version = ov.__version__

    def describe(self) -> dict:
        return {"library": "openvino", "version": self.version, "device": "CPU", "threads": self.threads,
                "inference_precision": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                "gpu": None}

    def run(self, video) -> dict[str, np.ndarray]:
        if not isinstance(video, np.ndarray):
            video = video.get()  # a CuPy batch: one copy to the host
        results = self.request.infer({INPUT_NAME: np.ascontiguousarray(video, dtype=np.float32)})
        # The request reuses its output buffers on the next call: copy.
        return {name: np.array(results[port], dtype=np.float32) for name, port in zip(OUTPUT_NAMES, self.output_ports)}
