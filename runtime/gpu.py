"""Where tsf runs: the one place that knows whether a CUDA GPU is here and which device to use,
and how work on a GPU is ordered between the producer thread and the engine (the two streams).

The GPU count comes from the CUDA driver itself (`libcuda`, through ctypes), so the answer does
not depend on which GPU libraries happen to be installed: a machine with a GPU but without CuPy
or torch still says "cuda", and each engine then says why it cannot run there. GPU libraries are
imported lazily and guarded by `GPU_IMPORT_ERRORS`: without a GPU or its driver, their wheels
raise ImportError, OSError (a missing shared library) or RuntimeError (PyNvVideoCodec), see
docs/toolchain.md, "The GPU stack".
"""

from __future__ import annotations

import ctypes
import functools
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import BackendError, first_line

# What importing a GPU library raises on a machine that cannot run it (docs/toolchain.md).
GPU_IMPORT_ERRORS = (ImportError, OSError, RuntimeError)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Device:
    """A resolved device: `cpu`, or CUDA GPU `index`."""

    kind: str  # "cpu" or "cuda"
    index: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


CPU = Device("cpu")


@functools.cache
def cuda_device_count() -> int:
    """CUDA GPUs the driver reports (0 without a driver or GPU); asks libcuda, imports nothing."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def parse_device(text: str) -> tuple[str, int | None]:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> (kind, index or None)."""
    kind, _, index = str(text).partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise BackendError(f"unknown device {text!r} (auto, cpu, cuda or cuda:N)")
    return kind, int(index) if index else None


def resolve_device(text: str) -> tuple[Device, bool]:
    """(the device to run on, whether the user insisted on it).

    `auto` is GPU 0 when the driver reports a GPU, else the CPU; `cuda[:N]` must exist (one line
    saying why not). An insisted device never falls back to another silently.
    """
    kind, index = parse_device(text)
    if kind == "cpu":
        return CPU, True
    count = cuda_device_count()
    if kind == "auto":
        return (Device("cuda", 0), False) if count else (CPU, False)
    index = index or 0
    if index >= count:
        found = f"found {count}" if count else "no NVIDIA driver or GPU found"
        raise BackendError(f"--device {text}: no CUDA GPU {index} ({found})")
    return Device("cuda", index), True


def cupy_support(device: Device) -> str | None:
    """None when CuPy can use `device`, else why not (one line)."""
    try:
        import cupy
    except GPU_IMPORT_ERRORS as e:
        return f"CuPy is not installed ({first_line(e)})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError; its class lives in a C extension
        return f"CuPy sees no usable CUDA GPU ({first_line(e)})"
    if device.index >= count:
        return f"CuPy sees no CUDA GPU {device.index} (found {count})"
    return None


class ProducerStream:
    """The CUDA stream that one producer works on: a GPU decoder, the colour conversion and
    preprocessing of its frames and their batching (docs/design.md, "GPU streams").

    Non-blocking, so never ordered with the legacy default stream: work that any library queues
    there (PyTorch's default stream is that stream) neither waits for the producer nor makes it
    wait. The decoder that writes frames creates it and hands it to the hardware decoder, so that
    decoding, its copies and everything after them are ordered by this one stream alone. What the
    producer made leaves it only through `handoff`'s event, never through a host-side wait.
    """

    def __init__(self, device: Device):
        import cupy

        self.device = device
        with cupy.cuda.Device(device.index):
            self.stream = cupy.cuda.Stream(non_blocking=True)

    @property
    def ptr(self) -> int:
        return self.stream.ptr

    @contextmanager
    def work(self):
        """This stream's device and the stream itself current in this thread for the block: CuPy
        queues the block's kernels here (CuPy's current device and stream are per thread)."""
        import cupy

        with cupy.cuda.Device(self.device.index), self.stream:
            yield

    def handoff(self):
        """A CUDA event after everything queued here so far: the consumer of what was made waits
        for it (`ConsumerStream.receive`) on the device, and the producer goes on."""
        return self.stream.record()


class ConsumerStream:
    """Where a consumer thread (the engine's caller) takes over what a producer made.

    The engines read a GPU batch after the work queued so far on the caller's current CuPy
    stream: torch through DLPack (CuPy's `__dlpack__` makes the reading stream wait for an event
    recorded on the current stream), TensorRT with an event of its own, ONNX Runtime by waiting
    for that stream (backends/). `receive(event)` makes that current stream a non-blocking one of
    the consumer's that first waits for the producer's event: the engine's read is ordered after
    the producer's kernels for this batch and after nothing else, and the host never waits.
    """

    def __init__(self, device: Device):
        import cupy

        self.device = device
        with cupy.cuda.Device(device.index):
            self.stream = cupy.cuda.Stream(non_blocking=True)

    @contextmanager
    def receive(self, event):
        """The block runs with this stream current, after it has been made to wait for `event`."""
        import cupy

        with cupy.cuda.Device(self.device.index), self.stream:
            self.stream.wait_event(event)
            yield


def gpu_name(device: Device) -> str | None:
    """The GPU's model name as the driver reports it (for the metadata), or None."""
    if not device.is_cuda or not cuda_device_count():
        return None
    driver = ctypes.CDLL("libcuda.so.1")
    handle, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
    if driver.cuDeviceGet(ctypes.byref(handle), device.index) != 0:
        return None
    if driver.cuDeviceGetName(name, len(name), handle) != 0:
        return None
    return name.value.decode("utf-8", "replace").strip()
