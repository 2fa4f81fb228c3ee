"""PyTorch: the model rebuilt from the bundle's weights, on a CUDA GPU (`cuda:N`) or on the CPU.

Most people who extract SoccerNet features have PyTorch with CUDA already, while TensorRT is the
hardest engine to install; and this engine's FP32 forward is proven against ONNX Runtime on the
CPU in CI, so its CUDA path differs from a proven one only by the device.

Dependencies and why (both imported only when this engine is tried):
- `torch` runs the ppTimeSformer of runtime/backends/torch_model.py (fused scaled-dot-product
  attention, autocast) and reads CuPy batches in place through DLPack.
- `safetensors` reads the bundle's `weights.safetensors`: no unpickling (no code runs), and the
  file is checked against its own header.

Precisions: fp32 runs the weights as exported, in IEEE FP32 on a GPU too: the patch embedding is
a matrix product (torch_model.PatchEmbed), not a cuDNN convolution, which PyTorch lets use TF32
by default (cudnn.allow_tf32), and PyTorch's matrix products stay FP32 unless the process asks
otherwise (`torch.set_float32_matmul_precision`, which tsf never calls and `describe` records);
the fused attention's FP32 kernels keep FP32 accuracy. So nothing global is switched here. fp16 and bf16 store the matrix-product weights in
that type and run under autocast: matrix products and attention in fp16/bf16, LayerNorm in FP32
(autocast's rule), the residual stream in FP32 (a half-precision branch added to it is promoted),
and the fused attention kernels accumulate softmax in FP32. Pre-cast weights spare autocast
re-casting 121 M parameters every batch.

On a GPU the engine works on a CUDA stream of its own (`run`): torch's pool streams are
non-blocking, so inference is never ordered with the legacy default stream or with the producer
thread's stream (docs/design.md, "GPU streams"). It reads a batch after the work that wrote it
(`_clips`), and `run` returns once the outputs are on the host, having waited for this stream alone.

torch.compile and CUDA graphs are not used until a measurement shows a gain: on the CPU, 86 % of
a full-size FP32 forward is the Linear layers' matrix products (torch.profiler, 2 cores), which
compiling does not make faster; on a GPU nothing has been measured yet.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..bundle import OUTPUT_NAMES, WEIGHTS_FILE, Bundle
from ..errors import EngineUnavailable, InputError, first_line
from ..extras import require
from ..gpu import Device, gpu_name

PRECISIONS = {"cuda": ("fp16", "bf16", "fp32"), "cpu": ("fp32", "bf16")}
# --backend auto on a GPU: after TensorRT, before ONNX Runtime; on the CPU only when asked for.
AUTO_PRIORITY = {"cuda": 20}
REEXPORT = "re-export the bundle with this version's tsf-export"


def load(bundle: Bundle, device: Device, precision: str, threads: int) -> TorchBackend:
    return TorchBackend(bundle, device, PRECISIONS[device.kind][0] if precision == "auto" else precision, threads)


class TorchBackend:
    """The `Backend` protocol (runtime/backends/__init__.py) over a TimeSformer module."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: Device, precision: str, threads: int):
        torch = require("torch", "torch", "the torch engine")
        require("safetensors", "torch", "the torch engine")

        if bundle.weights_path is None:
            raise EngineUnavailable(f"the bundle {bundle.dir} has no {WEIGHTS_FILE} (exported by an older "
                                    f"tsf-export); {REEXPORT}")
        if not bundle.weights_path.is_file():
            raise EngineUnavailable(f"{bundle.weights_path} is missing; {REEXPORT}")
        self._device = self._torch_device(device, precision)
        self.device = device
        self.precision = precision
        # As ONNX Runtime: on the CPU batching gains nothing and costs memory (benchmarks/RESULTS.md);
        # on a GPU 16 until the device check has measured the best batch.
        self.default_batch_size = 16 if device.is_cuda else 1
        self.wants_gpu_input = device.is_cuda
        self._widths = (bundle.width, bundle.num_classes, bundle.num_classes)  # of OUTPUT_NAMES
        if not device.is_cuda:
            torch.set_num_threads(threads)

        from .torch_model import TimeSformer, load_reference_state

        model = TimeSformer(bundle.architecture)
        try:
            load_reference_state(model, self._read_weights(bundle.weights_path))
        except InputError as e:
            raise InputError(f"{bundle.weights_path}: {e}") from None
        model.eval()
        self._dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if self._dtype is not None:
            for module in model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                    module.to(self._dtype)
        self._stream = torch.cuda.Stream(self._device) if device.is_cuda else None
        with self._on_own_stream():  # the weights' copies are then ordered before every forward
            self.model = model.to(self._device)

    @staticmethod
    def _torch_device(device: Device, precision: str):
        import torch

        if not device.is_cuda:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise EngineUnavailable(f"this PyTorch {torch.__version__} ({build}) cannot use the GPU; "
                                    "install a CUDA build of torch (see the README, 'On a GPU')")
        if device.index >= torch.cuda.device_count():
            raise EngineUnavailable(f"PyTorch sees no CUDA GPU {device.index} (found {torch.cuda.device_count()})")
        if precision == "bf16" and torch.cuda.get_device_capability(device.index) < (8, 0):
            raise EngineUnavailable(f"{gpu_name(device) or device} has no BF16 arithmetic (compute capability < 8.0)")
        return torch.device("cuda", device.index)

    @staticmethod
    def _read_weights(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError (a plain Exception) for a damaged file, OSError
            raise InputError(f"{path}: cannot read the weights ({first_line(e)}); {REEXPORT}") from None

    def describe(self) -> dict:
        import torch

        return {"library": "torch", "version": torch.__version__, "cuda": torch.version.cuda,
                "device": str(self.device), "gpu": gpu_name(self.device), "precision": self.precision,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "threads": torch.get_num_threads()}

    def _on_own_stream(self):
        """The engine's CUDA stream current for torch in this thread (nothing on the CPU)."""
        import torch

        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def _clips(self, video):
        """The batch as a tensor on the model's device; a CuPy batch on that GPU is read in place."""
        import torch

        if isinstance(video, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32)).to(self._device)
        if not self.device.is_cuda:
            return torch.from_numpy(np.ascontiguousarray(video.get(), dtype=np.float32))  # a CuPy batch: one copy
        # torch.from_dlpack hands CuPy's `__dlpack__` this thread's current torch stream (the
        # engine's own, set by `run`), and CuPy makes that stream wait, on the device, for an
        # event it records on this thread's current CuPy stream. So the batch must have been
        # written on that CuPy stream, or that stream must wait for the writer: the pipeline's
        # ConsumerStream waits for the producer's hand-off event (runtime/gpu.py). No copy, no
        # host wait.
        return torch.from_dlpack(video).to(self._device, torch.float32)

    def run(self, video) -> dict[str, np.ndarray]:
        import torch

        autocast = (torch.autocast(self._device.type, dtype=self._dtype) if self._dtype is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), self._on_own_stream(), autocast:
            outputs = self.model(self._clips(video))
            # One device-to-host copy (and one wait) for all three outputs.
            rows = torch.cat([output.float() for output in outputs], dim=1).cpu().numpy()
        edges = np.cumsum(self._widths)[:-1]
        return {name: np.ascontiguousarray(part) for name, part in zip(OUTPUT_NAMES, np.split(rows, edges, axis=1))}
