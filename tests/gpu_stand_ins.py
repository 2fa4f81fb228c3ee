"""Stand-ins for CuPy, PyTorch's CUDA side, PyNvVideoCodec and TensorRT that model the real APIs, for tests on the CPU.

Each models the real library's signature (a keyword the library does not take is a TypeError
here too) and the behaviour tsf relies on, read from the libraries' own sources:

- The device (`Cuda`): streams of three kinds, as CUDA defines them. The legacy default stream
  (handle 0; DLPack's 1) is one per context and shared by every library in the process: CuPy's
  null stream and PyTorch's default stream are the same stream. Work queued on it waits for all
  work queued before on every *blocking* stream, and work queued later on a blocking stream waits
  for it; *non-blocking* streams are never ordered with it. Events order one stream after
  another's work so far; a host wait (a stream's, an event's or the device's `synchronize`, a copy
  to pageable host memory) covers what it waits for. Every piece of device work is an `Op` with a
  vector clock of what it is ordered after, and every device allocation a `Buffer` that knows
  its last writer and the readers since: a read not ordered after the write, or a write not
  ordered after the reads and write before it, is recorded in `Cuda.races` (as compute-sanitizer's
  racecheck would find it, but deterministic). `producer_waits_on(tag)` lists each op or host wait
  of the producer thread that is ordered after work of the consumer's (say "inference"): the
  producer waiting on the consumer, i.e. stages that do not overlap.
  Kernels compute at once (NumPy plays device memory); copies between the device and host memory
  and TensorRT's work run in stream order when their stream is waited for, so a result read too
  early is visibly missing.
  `Cuda(hold_producer="tsf-decode")` makes a thread of that name, once it has recorded its first
  event through CuPy (the pipeline's hand-off of a batch), queue no more work until the consumer
  has queued an "inference" op: the GPU's normal state, inference in flight while the producer
  works, made certain, so that a dependency on it cannot be missed by the luck of thread timing.
- CuPy 14 (cupy/cuda/stream.pyx, cupy/_core/core.pyx, cupy/_core/dlpack.pyx):
  `cuda.Stream(null=False, non_blocking=False, ptds=False, priority=None)`, `Stream.record()`,
  `wait_event`, `synchronize`, `with stream:` (the current stream is per thread; the null stream
  unless set), `cuda.Device(device=None)`, `cuda.Event`, `get_current_stream()`;
  `ndarray.__dlpack__(stream=...)` makes the consumer's stream wait for an event recorded on the
  *calling thread's* current stream; `from_dlpack(obj)` hands `obj.__dlpack__` the current stream
  (the legacy stream as 1), with `max_version` first and without it on TypeError;
  `ndarray.get(stream=None, order='C', out=None, blocking=True)`, `ndarray.set(arr, stream=None)`,
  `cupyx.empty_pinned`. Kernels need their arrays on the current device; an ndarray refuses
  NumPy's implicit conversion, as CuPy does.
- PyTorch 2.x (torch/utils/dlpack.py, c10/cuda/CUDAStream.cpp): `torch.cuda.Stream(device=None,
  priority=0)` takes a pool stream, created non-blocking (c10's kDefaultFlags); the current
  stream is per thread, the legacy default stream unless `torch.cuda.stream(s)` sets it;
  `torch.from_dlpack(x)` passes `x.__dlpack__` the current stream of x's device (1 for the legacy
  stream); `Tensor.cpu()` copies on the current stream and waits for it on the host.
- PyNvVideoCodec 2.2.4 (its pybind module, NvDecoder.cpp, ExternalBuffer.cpp): `CreateDemuxer`,
  `GetDecoderCaps`, and `CreateDecoder`'s two overloads (the first, without
  `enableasyncallocations`, is what a call with neither that nor `bWaitForSessionWarmUp` gets,
  and creates the decoder without asynchronous allocations). Given `cudastream`, each decoded
  frame's post-processing and copy into its output buffer are queued on that stream and a
  per-frame event recorded there; with no stream (0) the decoder works on the legacy stream and
  waits on the host after each frame. The output buffers are reused by the next `Decode`.
  `DecodedFrame.__dlpack__(stream)` (its only parameter) refuses 0, does nothing for -1 or the
  decoder's own stream, and otherwise makes that stream wait for the frame's event;
  `WaitOnCUStream(stream)` makes `stream` wait for the decoder only with asynchronous allocations,
  else does nothing. NV12 frames (luma rows, padded to 16, then interleaved U/V rows). PyAV
  decodes the packets. Only what tsf asks for is modelled: NATIVE (NV12) output in device memory.
  The demuxer's packets carry `key`, `pts`, `dts`, `pos` and `bsl` as its PacketData does;
  `Decode` releases the GIL (PyNvDecoder::Decode drops it around the hardware decode), so
  decoders in several threads run at once, sharing the GPU's engines (`NvdecEngines`, in
  simulated time).
- TensorRT 10 (tensorrt-stubs 10.13): an execution context whose `execute_async_v3(stream_handle)`
  queues the engine's work on that stream.
"""
from __future__ import annotations

import contextlib
import ctypes
import enum
import itertools
import threading
import time
import types

import numpy as np

KDL_CPU, KDL_CUDA = 1, 2  # DLPack device types
DLPACK_LEGACY_STREAM = 1  # the array API's code for CUDA's legacy default stream (0 is refused)
HOLD_TIMEOUT_S = 60  # only turns a broken test's hang into a failure; nothing waits this long when it passes


# ------------------------------------------------------------------------------- the device model

def _join(clock: dict, other: dict) -> None:
    for stream_id, count in other.items():
        if count > clock.get(stream_id, 0):
            clock[stream_id] = count


class Op:
    """One piece of device work: `index`-th on its stream, ordered after `after` (a vector clock of
    stream id -> ops), and after `done_before` (what host waits had covered when it was queued)."""

    def __init__(self, stream: Stream, index: int, tag: str, after: dict, done_before: dict, seq: int):
        self.stream, self.index, self.tag = stream, index, tag
        self.thread = threading.current_thread().name
        self.after, self.done_before, self.seq = after, done_before, seq

    def ordered_before(self, other: Op) -> bool:
        sid = self.stream.id
        return other.after.get(sid, 0) >= self.index or other.done_before.get(sid, 0) >= self.index

    def __repr__(self):
        return f"{self.tag} #{self.index} on {self.stream} ({self.thread})"


class Buffer:
    """One device allocation: its last writer and the readers since."""

    def __init__(self, name: str):
        self.name = name
        self.writer: Op | None = None
        self.readers: list[Op] = []


class Cuda:
    """The state of a stand-in CUDA machine: devices, streams by handle, pinned buffers, the
    ordering of every op, host waits and races (see the module's docstring)."""

    def __init__(self, device_count: int = 1, hold_producer: str | None = None):
        self.device_count = device_count
        self.lock = threading.Condition(threading.RLock())
        self.streams: dict[int, Stream] = {}
        self.pinned: list[np.ndarray] = []
        self.host_waits = 0
        self.waits: list[tuple[str, dict, str]] = []  # (thread, clock waited for, what)
        self.ops: list[Op] = []
        self.races: list[str] = []
        self.completed: dict[int, int] = {}
        self.current = threading.local()
        self._handles = itertools.count(0x1000, 0x10)
        self._ids = itertools.count(1)
        self.hold_producer = hold_producer
        self._armed: set[str] = set()
        self._released: set[str] = set()
        self.legacy = Stream(self, "legacy")

    # -- devices
    def current_device(self) -> int:
        return getattr(self.current, "device", 0)

    def check_device(self, device: int) -> None:
        if not 0 <= device < self.device_count:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")

    def stack(self, name: str) -> list:
        if not hasattr(self.current, name):
            setattr(self.current, name, [])
        return getattr(self.current, name)

    def new_handle(self) -> int:
        return next(self._handles)

    def stream_for(self, handle: int) -> Stream:
        """The stream a raw handle names: 0 (CUDA's) or 1 (DLPack's) is the legacy default stream."""
        if handle in (0, DLPACK_LEGACY_STREAM):
            return self.legacy
        if handle not in self.streams:
            raise RuntimeError(f"cudaErrorInvalidResourceHandle: unknown CUDA stream {handle:#x}")
        return self.streams[handle]

    def is_pinned(self, array: np.ndarray) -> bool:
        base = array
        while isinstance(base, np.ndarray) and base.base is not None and not any(base is p for p in self.pinned):
            base = base.base
        return any(base is p for p in self.pinned)

    # -- ordering
    def _is_producer(self) -> bool:
        return bool(self.hold_producer) and threading.current_thread().name.startswith(self.hold_producer)

    def arm_hold(self) -> None:
        """A producer thread handed something over: hold its next work until inference is queued."""
        name = threading.current_thread().name
        if self._is_producer() and name not in self._released:
            self._armed.add(name)

    def _hold(self) -> None:
        name = threading.current_thread().name
        if name in self._armed:
            if not self.lock.wait_for(lambda: any(op.tag == "inference" for op in self.ops), HOLD_TIMEOUT_S):
                raise RuntimeError("stand-in CUDA: the producer waited for the consumer's first inference op, "
                                   "which never came")
            self._armed.discard(name)
            self._released.add(name)

    def enqueue(self, stream: Stream, tag: str, reads=(), writes=(), work=None) -> Op:
        with self.lock:
            self._hold()
            stream.implicit_ordering()
            stream.clock[stream.id] = stream.clock.get(stream.id, 0) + 1
            op = Op(stream, stream.clock[stream.id], tag, dict(stream.clock), dict(self.completed), len(self.ops))
            for buffer in reads:
                if buffer.writer is not None and not buffer.writer.ordered_before(op):
                    self.races.append(f"{op} reads {buffer.name} before its writer {buffer.writer} is done")
                buffer.readers.append(op)
            for buffer in writes:
                for earlier in ([buffer.writer] if buffer.writer else []) + buffer.readers:
                    if not earlier.ordered_before(op):
                        self.races.append(f"{op} writes {buffer.name} while {earlier} may still use it")
                buffer.writer, buffer.readers = op, []
            self.ops.append(op)
            if work is not None:
                stream.pending.append(work)
            self.lock.notify_all()
            return op

    def host_wait(self, clock: dict, what: str, arms: bool = True) -> None:
        """The calling thread waits until everything `clock` covers is done. `arms=False` for waits
        a library makes on its own (PyNvVideoCodec without a stream), which hand nothing over."""
        with self.lock:
            self.host_waits += 1
            self.waits.append((threading.current_thread().name, dict(clock), what))
            _join(self.completed, clock)
            if arms:
                self.arm_hold()

    def producer_waits_on(self, tag: str = "inference", producer: str = "tsf-decode") -> list[str]:
        """Each op or host wait of a `producer` thread that is ordered after an op tagged `tag`."""
        consumer_ops = [op for op in self.ops if op.tag == tag]
        found = []
        for op in self.ops:
            if op.thread.startswith(producer):
                after = [c for c in consumer_ops if op.after.get(c.stream.id, 0) >= c.index]
                if after:
                    found.append(f"{op} waits on the device for {after[0]}")
        for thread, clock, what in self.waits:
            if thread.startswith(producer):
                after = [c for c in consumer_ops if clock.get(c.stream.id, 0) >= c.index]
                if after:
                    found.append(f"{thread} waits on the host ({what}) for {after[0]}")
        return found


class Stream:
    """A CUDA stream: "legacy" (the default stream), "blocking" or "non_blocking"."""

    def __init__(self, cuda: Cuda, kind: str, device_id: int = -1):
        self._cuda = cuda
        self.kind = kind
        self.ptr = 0 if kind == "legacy" else cuda.new_handle()
        self.id = 0 if kind == "legacy" else next(cuda._ids)
        self.device_id = device_id
        self.clock: dict[int, int] = {}
        self.pending: list = []
        cuda.streams[self.ptr] = self

    def __repr__(self):
        return "the legacy default stream" if self.kind == "legacy" else f"{self.kind} stream {self.id}"

    @property
    def is_non_blocking(self) -> bool:
        return self.kind == "non_blocking"

    def implicit_ordering(self) -> None:
        """Before new work: the legacy stream follows every blocking stream, a blocking stream the legacy one."""
        if self.kind == "legacy":
            for other in list(self._cuda.streams.values()):
                if other.kind == "blocking":
                    _join(self.clock, other.clock)
        elif self.kind == "blocking":
            _join(self.clock, self._cuda.legacy.clock)

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    # CuPy's Stream API
    def record(self, event=None):
        event = self.record_internal(event)
        self._cuda.arm_hold()
        return event

    def record_internal(self, event=None):
        """An event recorded by a library on its own (PyNvVideoCodec's per-frame event)."""
        with self._cuda.lock:
            self._cuda._hold()
            self.implicit_ordering()
            event = event or Event(self._cuda)
            event.stream, event.clock = self, dict(self.clock)
            return event

    def wait_event(self, event) -> None:
        with self._cuda.lock:
            _join(self.clock, event.clock)
            # Queued work of the other stream runs before this stream's later work.
            self.pending.append(event.stream.drain)

    def synchronize(self, arms: bool = True) -> None:
        self._cuda.host_wait(self.clock, f"{self}.synchronize()", arms)
        self.drain()

    def use(self):
        self._cuda.current.stream = self
        return self

    def __enter__(self):
        if self.device_id not in (-1, self._cuda.current_device()):
            raise RuntimeError(f"the current device is {self._cuda.current_device()}, the stream's {self.device_id}")
        self._cuda.stack("streams").append(getattr(self._cuda.current, "stream", None))
        self._cuda.current.stream = self
        return self

    def __exit__(self, *exc):
        self._cuda.current.stream = self._cuda.stack("streams").pop()
        return False


class Event:
    """cupy.cuda.Event: what its stream had queued when it was recorded."""

    def __init__(self, cuda: Cuda, block=False, disable_timing=False, interprocess=False):
        self._cuda = cuda
        self.stream: Stream | None = None
        self.clock: dict[int, int] = {}

    def record(self, stream=None):
        (stream or current_stream(self._cuda)).record(self)

    def synchronize(self):
        self._cuda.host_wait(self.clock, "Event.synchronize()")
        if self.stream is not None:
            self.stream.drain()


class Device:
    """cupy.cuda.Device: the current device is per thread; `with` sets it for the block."""

    def __init__(self, cuda: Cuda, device=None):
        self._cuda = cuda
        self.id = cuda.current_device() if device is None else int(device)

    def use(self) -> None:
        self._cuda.check_device(self.id)
        self._cuda.current.device = self.id

    def synchronize(self) -> None:
        everything: dict[int, int] = {}
        for stream in list(self._cuda.streams.values()):
            _join(everything, stream.clock)
        self._cuda.host_wait(everything, "Device.synchronize()")
        for stream in list(self._cuda.streams.values()):
            stream.drain()

    def __enter__(self):
        self._cuda.check_device(self.id)
        self._cuda.stack("devices").append(self._cuda.current_device())
        self._cuda.current.device = self.id
        return self

    def __exit__(self, *exc):
        self._cuda.current.device = self._cuda.stack("devices").pop()
        return False


def current_stream(cuda: Cuda) -> Stream:
    """CuPy's current stream in this thread (the legacy default stream unless set)."""
    return getattr(cuda.current, "stream", None) or cuda.legacy


class Capsule:
    """What a DLPack export hands over (a PyCapsule in the real libraries): the memory, its buffer
    and its device, which only the stand-ins read."""

    def __init__(self, data: np.ndarray, buffer: Buffer, device_id: int):
        self.data, self.buffer, self.device_id = data, buffer, device_id


# ------------------------------------------------------------------------------------------ CuPy

def fake_cupy(cuda: Cuda, own_streams: bool = True):
    """(cupy, cupyx) stand-in modules over `cuda`. `own_streams=False` makes every `Stream(...)`
    the legacy default stream: code that works on the default stream, for negative controls."""

    def stream_now(stream=None) -> Stream:
        return stream or current_stream(cuda)

    def check_on_current_device(array: ndarray) -> None:
        if array._device_id != cuda.current_device():
            raise ValueError(f"Array device must be same as the current device: array device = "
                             f"{array._device_id} while current = {cuda.current_device()}")

    class ndarray:
        # NumPy defers to our operators, and NumPy functions refuse us (CuPy arrays are not NumPy's).
        __array_ufunc__ = None

        def __init__(self, data: np.ndarray, buffer: Buffer, device_id: int):
            self._data, self._buffer, self._device_id = data, buffer, device_id

        shape = property(lambda self: self._data.shape)
        dtype = property(lambda self: self._data.dtype)
        ndim = property(lambda self: self._data.ndim)
        size = property(lambda self: self._data.size)
        data = property(lambda self: types.SimpleNamespace(ptr=self._data.ctypes.data))
        device = property(lambda self: types.SimpleNamespace(id=self._device_id))

        def __len__(self):
            return len(self._data)

        def __repr__(self):
            return f"stand-in cupy.ndarray {self.shape} {self.dtype} on device {self._device_id}"

        def __array__(self, *args, **kwargs):
            raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                            "Please use `.get()` to construct a NumPy array explicitly.")

        def _derived(self, result: np.ndarray, name: str, *others):
            """A view of this array's memory, or else a kernel's new array."""
            if np.may_share_memory(result, self._data):
                return ndarray(result, self._buffer, self._device_id)
            return kernel_result(name, result, self, *others)

        def __getitem__(self, key):
            return self._derived(self._data[unwrap(key)], "gather", *arrays_in(key))

        def __setitem__(self, key, value):
            check_on_current_device(self)
            self._data[unwrap(key)] = unwrap(value)
            cuda.enqueue(stream_now(), "scatter", reads=[a._buffer for a in arrays_in(value)],
                         writes=[self._buffer])

        def reshape(self, *shape):
            return self._derived(self._data.reshape(*shape), "reshape")

        def transpose(self, *axes):
            return self._derived(self._data.transpose(*axes), "transpose")

        def astype(self, dtype, copy=True):
            if not copy and np.dtype(dtype) == self.dtype:
                return self
            return kernel("astype", lambda a: a.astype(dtype), self)

        def copy(self):
            return kernel("copy", np.copy, self)

        def get(self, stream=None, order="C", out=None, blocking=True):
            source = self._data
            if out is None:
                out = np.empty(self.shape, self.dtype, order=order)
            elif out.shape != self.shape or out.dtype != self.dtype:
                raise ValueError("get(out=...) needs an array of the same shape and dtype")
            stream = stream_now(stream)
            cuda.enqueue(stream, "copy to host", reads=[self._buffer],
                         work=lambda: out.__setitem__(Ellipsis, source))
            if blocking or not cuda.is_pinned(out):  # to pageable memory the copy returns when done
                stream.synchronize()
            return out

        def set(self, arr, stream=None):
            if not isinstance(arr, np.ndarray) or arr.shape != self.shape or arr.dtype != self.dtype:
                raise ValueError("set() needs a numpy.ndarray of the same shape and dtype")
            target = self._data
            # From pageable memory CUDA stages the data at once and returns (no device wait).
            staged = arr if cuda.is_pinned(arr) else arr.copy()
            cuda.enqueue(stream_now(stream), "copy from host", writes=[self._buffer],
                         work=lambda: target.__setitem__(Ellipsis, staged))

        def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
            consumer = DLPACK_LEGACY_STREAM if stream is None else stream
            if consumer < -1:
                raise ValueError(f"On CUDA, the valid stream for the DLPack protocol is -1, 1, 2, or any larger "
                                 f"value, but {stream} was provided")
            if consumer >= 0:
                ours = current_stream(cuda)
                theirs = cuda.stream_for(consumer)
                if theirs is not ours:
                    theirs.wait_event(ours.record())
            return Capsule(self._data, self._buffer, self._device_id)

        def __dlpack_device__(self):
            return (KDL_CUDA, self._device_id)

        def _binary(name, fn, reflected=False):
            def method(self, other):
                return kernel(name, (lambda a, b: fn(b, a)) if reflected else fn, self, other)
            return method

        __add__, __radd__ = _binary("add", np.add), _binary("add", np.add, True)
        __sub__, __rsub__ = _binary("subtract", np.subtract), _binary("subtract", np.subtract, True)
        __mul__, __rmul__ = _binary("multiply", np.multiply), _binary("multiply", np.multiply, True)
        __truediv__, __rtruediv__ = _binary("divide", np.true_divide), _binary("divide", np.true_divide, True)

        def __neg__(self):
            return kernel("negative", np.negative, self)

    ndarray.__module__ = "cupy._core.core"  # how runtime.preprocess.array_module recognises CuPy
    ndarray.__qualname__ = ndarray.__name__ = "ndarray"

    def arrays_in(value) -> list:
        if isinstance(value, ndarray):
            return [value]
        if isinstance(value, (list, tuple)):
            return [a for item in value for a in arrays_in(item)]
        return []

    def unwrap(value):
        if isinstance(value, ndarray):
            check_on_current_device(value)
            return value._data
        if isinstance(value, (list, tuple)):
            return type(value)(unwrap(item) for item in value)
        return value

    def new_array(data: np.ndarray, name: str) -> ndarray:
        return ndarray(np.ascontiguousarray(data), Buffer(name), cuda.current_device())

    def kernel_result(name: str, result, *inputs) -> ndarray:
        out = new_array(np.asarray(result), name)
        cuda.enqueue(stream_now(), name, reads=[a._buffer for a in inputs], writes=[out._buffer])
        return out

    def kernel(name: str, fn, *args, **kwargs) -> ndarray:
        inputs = arrays_in(list(args) + list(kwargs.values()))
        result = fn(*unwrap(args), **{key: unwrap(value) for key, value in kwargs.items()})
        return kernel_result(name, result, *inputs)

    def asarray(a, dtype=None, order=None, *, blocking=False):
        if isinstance(a, ndarray):
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        out = new_array(np.asarray(a, dtype=dtype, order=order), "array from host")
        cuda.enqueue(stream_now(), "copy from host", writes=[out._buffer])  # staged: no host wait
        return out

    def ascontiguousarray(a, dtype=None):
        if isinstance(a, ndarray):
            if a._data.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
                return a
            return kernel("ascontiguousarray", lambda x: np.ascontiguousarray(x, dtype=dtype), a)
        return asarray(np.ascontiguousarray(a, dtype=dtype))

    def empty(shape, dtype=float, order="C"):
        return ndarray(np.empty(shape, dtype, order=order), Buffer("empty"), cuda.current_device())

    def from_dlpack(array, *, device=None, copy=None):
        device_type, device_id = array.__dlpack_device__()
        if device_type != KDL_CUDA:
            raise TypeError("CPU arrays cannot be directly imported to CuPy")
        stream = current_stream(cuda).ptr or DLPACK_LEGACY_STREAM
        try:
            capsule = array.__dlpack__(stream=stream, max_version=(1, 0), copy=copy)
        except TypeError:
            if copy is not None:
                raise
            capsule = array.__dlpack__(stream=stream)
        return ndarray(capsule.data, capsule.buffer, capsule.device_id)

    def empty_pinned(shape, dtype=float, order="C"):
        buffer = np.empty(shape, dtype, order=order)
        cuda.pinned.append(buffer)
        return buffer

    def make_stream(null=False, non_blocking=False, ptds=False, priority=None):
        if null or not own_streams:
            return cuda.legacy
        return Stream(cuda, "non_blocking" if non_blocking else "blocking", cuda.current_device())

    make_stream.null = cuda.legacy

    contexts = {}
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0"
    cupy.ndarray, cupy.float32, cupy.uint8 = ndarray, np.float32, np.uint8
    cupy.empty, cupy.asarray, cupy.ascontiguousarray, cupy.from_dlpack = empty, asarray, ascontiguousarray, from_dlpack
    cupy.asnumpy = lambda a, stream=None, order="C", out=None, *, blocking=True: a.get(stream, order, out, blocking)
    for name in ("stack", "take", "clip", "floor", "repeat"):
        setattr(cupy, name, (lambda fn: lambda *args, **kwargs: kernel(fn.__name__, fn, *args, **kwargs))(
            getattr(np, name)))
    cupy.reshape = lambda a, shape: a.reshape(shape)
    cupy.transpose = lambda a, axes=None: a.transpose(axes)
    cupy.rot90 = lambda a, k=1, axes=(0, 1): a._derived(np.rot90(a._data, k, axes), "rot90")
    cupy.cuda = types.SimpleNamespace(
        Device=lambda device=None: Device(cuda, device),
        Stream=make_stream,
        Event=lambda block=False, disable_timing=False, interprocess=False: Event(cuda, block, disable_timing,
                                                                                 interprocess),
        get_current_stream=lambda device_id=-1: current_stream(cuda),
        driver=types.SimpleNamespace(
            ctxGetCurrent=lambda: contexts.setdefault(cuda.current_device(), 0xC0DE00 + cuda.current_device())),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: cuda.device_count))
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = empty_pinned
    return cupy, cupyx


# ----------------------------------------------------------------------------- PyTorch (CUDA side)

def fake_torch(cuda: Cuda, own_streams: bool = True):
    """A torch module for what an engine does around its model on a CUDA device: streams, DLPack,
    copies to and from the host, `cat`. `own_streams=False` makes `torch.cuda.Stream()` the legacy
    default stream (negative controls). The model itself is the test's (`Tensor` in, Tensors out)."""
    torch = types.ModuleType("torch")
    torch.__version__ = "2.11.0+cu130"
    torch.version = types.SimpleNamespace(cuda="13.0")
    torch.float16, torch.bfloat16, torch.float32 = "float16", "bfloat16", "float32"
    current = threading.local()

    class TorchDevice:
        def __init__(self, type, index=None):
            if ":" in str(type):
                type, index = str(type).split(":")
            self.type, self.index = str(type), None if index is None else int(index)

        def __eq__(self, other):
            return isinstance(other, TorchDevice) and (self.type, self.index or 0) == (other.type, other.index or 0)

    class CudaStream:
        def __init__(self, stream: Stream):
            self._stream = stream
            self.cuda_stream = stream.ptr

        def wait_event(self, event):
            self._stream.wait_event(event)

        def synchronize(self):
            self._stream.synchronize()

    def current_stream(device=None) -> CudaStream:
        return getattr(current, "stream", None) or CudaStream(cuda.legacy)

    def make_stream(device=None, priority=0, **kwargs):
        # c10's pool streams are created with cudaStreamNonBlocking.
        return CudaStream(Stream(cuda, "non_blocking", cuda.current_device()) if own_streams else cuda.legacy)

    @contextlib.contextmanager
    def stream(s):
        if s is None:
            yield
            return
        before = getattr(current, "stream", None)
        current.stream = s
        try:
            yield
        finally:
            current.stream = before

    class Tensor:
        def __init__(self, data: np.ndarray, buffer: Buffer | None, where: TorchDevice):
            self._data, self._buffer, self.device = data, buffer, where

        shape = property(lambda self: self._data.shape)

        def __len__(self):
            return len(self._data)

        def float(self):
            return self if self._data.dtype == np.float32 else Tensor(self._data.astype(np.float32), self._buffer,
                                                                        self.device)

        def to(self, where=None, dtype=None):
            where = self.device if where is None else where if isinstance(where, TorchDevice) else TorchDevice(where)
            if where == self.device:
                return self
            if where.type == "cuda":  # from (pageable) host memory: staged, queued on the current stream
                buffer = Buffer("torch tensor from host")
                cuda.enqueue(current_stream()._stream, "copy from host", writes=[buffer])
                return Tensor(self._data.copy(), buffer, where)
            return self.cpu()

        def cpu(self):
            if self.device.type == "cpu":
                return self
            out = np.empty_like(self._data)
            source = self._data
            on = current_stream()._stream
            cuda.enqueue(on, "copy to host", reads=[self._buffer], work=lambda: out.__setitem__(Ellipsis, source))
            on.synchronize()  # to pageable memory: the copy returns when it is done
            return Tensor(out, None, TorchDevice("cpu"))

        def numpy(self):
            if self.device.type != "cpu":
                raise TypeError(f"can't convert {self.device.type}:{self.device.index} device type tensor to "
                                "numpy. Use Tensor.cpu() to copy the tensor to host memory first.")
            return self._data

    def from_numpy(array):
        return Tensor(array, None, TorchDevice("cpu"))

    def from_dlpack(ext_tensor, *, device=None, copy=None):
        ext_device = ext_tensor.__dlpack_device__()
        kwargs = {"max_version": (1, 0)}
        if ext_device[0] == KDL_CUDA:
            on = current_stream(f"cuda:{ext_device[1]}")
            kwargs["stream"] = DLPACK_LEGACY_STREAM if on.cuda_stream == 0 else on.cuda_stream
        try:
            capsule = ext_tensor.__dlpack__(**kwargs)
        except TypeError:
            kwargs.pop("max_version")
            capsule = ext_tensor.__dlpack__(**kwargs)
        return Tensor(capsule.data, capsule.buffer, TorchDevice("cuda", capsule.device_id))

    def cat(tensors, dim=0):
        tensors = list(tensors)
        on_gpu = tensors[0].device.type == "cuda"
        data = np.concatenate([t._data for t in tensors], axis=dim)
        buffer = Buffer("torch.cat") if on_gpu else None
        if on_gpu:
            cuda.enqueue(current_stream()._stream, "cat", reads=[t._buffer for t in tensors], writes=[buffer])
        return Tensor(data, buffer, tensors[0].device)

    torch.device, torch.Tensor = TorchDevice, Tensor
    torch.from_numpy, torch.from_dlpack, torch.cat = from_numpy, from_dlpack, cat
    torch.inference_mode = contextlib.nullcontext
    torch.autocast = lambda device_type, dtype=None, enabled=True: contextlib.nullcontext()
    torch.get_float32_matmul_precision = lambda: "highest"
    torch.cuda = types.SimpleNamespace(Stream=make_stream, stream=stream, current_stream=current_stream,
                                       is_available=lambda: True, device_count=lambda: cuda.device_count)
    return torch


# ------------------------------------------------------------------------------- PyNvVideoCodec

cudaVideoCodec = enum.Enum("cudaVideoCodec", [("MPEG1", 0), ("MPEG2", 1), ("MPEG4", 2), ("VC1", 3), ("H264", 4),
                                              ("JPEG", 5), ("HEVC", 8), ("VP8", 9), ("VP9", 10), ("AV1", 11)])
cudaVideoChromaFormat = enum.Enum("cudaVideoChromaFormat", [("Monochrome", 0), ("420", 1), ("422", 2), ("444", 3)])
OutputColorType = enum.Enum("OutputColorType", [("NATIVE", 0), ("RGB", 1), ("RGBP", 2)])
DisplayDecodeLatencyType = enum.Enum("DisplayDecodeLatencyType", [("NATIVE", 0), ("LOW", 1), ("ZERO", 2)])
CODECS = {"h264": cudaVideoCodec.H264, "hevc": cudaVideoCodec.HEVC, "mpeg4": cudaVideoCodec.MPEG4,
          "mpeg2video": cudaVideoCodec.MPEG2, "vp9": cudaVideoCodec.VP9, "av1": cudaVideoCodec.AV1}


def hopper_caps(codec, chroma, bit_depth) -> dict:
    """What an H100/H200's NVDEC reports (NVIDIA's decoder support matrix): H.264 4:2:0 8-bit up
    to 4096 x 4096, HEVC and AV1 4:2:0/4:4:4 up to 8192 x 8192; no H.264 4:2:2/4:4:4."""
    limits = {
        (cudaVideoCodec.H264, cudaVideoChromaFormat["420"], 8): (4096, 4096, 65536),
        (cudaVideoCodec.MPEG4, cudaVideoChromaFormat["420"], 8): (2032, 2032, 8192),
    }
    for space in ("420", "444"):
        for depth in (8, 10, 12):
            for big in (cudaVideoCodec.HEVC, cudaVideoCodec.AV1):
                limits[(big, cudaVideoChromaFormat[space], depth)] = (8192, 8192, 262144)
    width, height, macroblocks = limits.get((codec, chroma, bit_depth), (0, 0, 0))
    return {"codec_id": codec.value, "chromaformat_id": chroma.value, "bitdepth": bit_depth,
            "supported": int(width > 0), "num_decoder_engines": 7 if width else 0,
            "width_max": width, "height_max": height, "mb_num_max": macroblocks,
            "width_min": 48 if width else 0, "height_min": 16 if width else 0}



class NvdecEngines:
    """A GPU's NVDEC engines in simulated time, shared by every decoder created on it.

    Each Decode call with a packet is one frame of work: one tick of one engine. Every decoder
    decodes at the same fixed rate, one frame per tick while it holds an engine, and a tick
    serves at most `engines` decoders (those that waited longest first). Time moves only when
    every decoder in use waits in Decode, that is when nothing but the engines could make
    progress. A decoder is in use from its creation while the thread that created it, or last
    called its Decode, lives: a decoder being set up (or reading its way to its first packet)
    holds time still, so no decoder starts late in simulated time. So `ticks` counts engine time
    alone, however slowly (and however loaded) the host runs, and `frames / ticks` is the decode
    rate in frames per tick. If tsf held a decoder back outside Decode while another waited (a
    lock, one thread feeding two decoders, a decoder created and left unused by a thread that
    goes on), time would stop: after `stall_seconds` of real time without a tick, Decode raises
    instead of hanging. `start_after` decoders must exist before time starts: videos set up by
    separate threads then start together (their set-up is host time, which ticks do not count).
    """

    def __init__(self, engines: int, stall_seconds: float = 120.0, start_after: int = 0):
        self.engines = engines
        self.stall_seconds = stall_seconds
        self.start_after = start_after
        self.ticks = 0
        self.frames = 0
        self.busiest_tick = 0  # the most decoders one tick served
        self._waiting: list = []  # decoders in Decode, longest waiting first
        self._callers: dict = {}  # decoder -> the thread that last called its Decode
        self._condition = threading.Condition()

    def created(self, decoder) -> None:
        with self._condition:
            self._callers[decoder] = threading.current_thread()

    def decode_one_frame(self, decoder) -> None:
        with self._condition:
            self._callers[decoder] = threading.current_thread()
            self._waiting.append(decoder)
            last_tick, since = self.ticks, time.monotonic()
            while decoder in self._waiting:
                self._tick_if_all_wait()
                if decoder not in self._waiting:
                    break
                self._condition.wait(timeout=0.02)  # callers' threads end without telling us
                if self.ticks != last_tick:
                    last_tick, since = self.ticks, time.monotonic()
                elif time.monotonic() - since > self.stall_seconds:
                    held = sum(1 for d, t in self._callers.items() if t.is_alive() and d not in self._waiting)
                    self._waiting.remove(decoder)
                    raise RuntimeError(f"NVDEC stand-in: time stopped at tick {self.ticks}: {held} decoder(s) in "
                                       f"use are held outside Decode while {len(self._waiting) + 1} wait; "
                                       f"{len(self._callers)} of the {self.start_after} awaited exist")

    def _tick_if_all_wait(self) -> None:
        in_use = [d for d, thread in self._callers.items() if thread.is_alive() or d in self._waiting]
        if not self._waiting or any(d not in self._waiting for d in in_use) or len(self._callers) < self.start_after:
            return
        served, self._waiting = self._waiting[:self.engines], self._waiting[self.engines:]
        self.ticks += 1
        self.frames += len(served)
        self.busiest_tick = max(self.busiest_tick, len(served))
        self._condition.notify_all()


def fake_pynvvideocodec(cuda: Cuda, caps=hopper_caps, fail_after: int | None = None,
                        engines: NvdecEngines | None = None):
    """PyNvVideoCodec 2.2.4 over PyAV. `caps(codec, chroma, bit_depth) -> dict` plays
    GetDecoderCaps; `fail_after` makes Decode raise after that many calls (a broken stream);
    `engines`, when given, times the decoders' work and is the engine count GetDecoderCaps reports."""
    import av

    log = {"decoders": [], "dlpack_streams": [], "waits": []}

    class PacketData:
        def __init__(self):
            self.bsl, self.pts, self.dts, self.key, self.pos = 0, 0, 0, 0, 0
            self.av_packet = None

    class PyNvDemuxer:
        def __init__(self, filename: str):
            self._container = av.open(filename)
            self._stream = self._container.streams.best("video")
            self._format = self._stream.codec_context.format

        def GetVideoStreamId(self) -> int:
            return self._stream.index

        def GetNvCodecId(self):
            return CODECS[self._stream.codec_context.name]

        def ChromaFormat(self):
            fmt = self._format
            if len(fmt.components) == 1:
                return cudaVideoChromaFormat.Monochrome
            halved = (fmt.chroma_width() < fmt.width, fmt.chroma_height() < fmt.height)
            return cudaVideoChromaFormat[{(True, True): "420", (True, False): "422"}.get(halved, "444")]

        def BitDepth(self) -> int:
            return self._format.components[0].bits

        def Width(self) -> int:
            return self._stream.codec_context.width

        def Height(self) -> int:
            return self._stream.codec_context.height

        def GetTimebaseNum(self) -> int:
            return self._stream.time_base.numerator

        def GetTimebaseDen(self) -> int:
            return self._stream.time_base.denominator

        def __iter__(self):
            for av_packet in self._container.demux(self._stream):
                if av_packet.size:  # PyAV ends with an empty flush packet; NVDEC's demuxer does not
                    packet = PacketData()
                    packet.bsl, packet.pts, packet.av_packet = av_packet.size, av_packet.pts or 0, av_packet
                    packet.dts, packet.pos, packet.key = av_packet.dts or 0, av_packet.pos, int(av_packet.is_keyframe)
                    yield packet

    class DecodedFrame:
        def __init__(self, surface: np.ndarray, buffer: Buffer, pts: int, gpu_id: int, stream: Stream, event):
            self._surface, self._buffer, self._pts, self._gpu_id = surface, buffer, pts, gpu_id
            self._stream, self._event = stream, event

        def getPTS(self) -> int:
            return self._pts

        @property
        def shape(self):
            return list(self._surface.shape)

        def __dlpack__(self, stream):
            # ExternalBuffer::dlpack: 0 is refused, -1 asks for no ordering, and any other stream
            # but the decoder's waits for the event recorded after this frame's copy.
            log["dlpack_streams"].append(stream)
            if stream is None or stream == 0:
                raise RuntimeError("Invalid value for stream parameter. Passed value of 0 which is not allowed")
            if stream != -1 and cuda.stream_for(stream) is not self._stream:
                cuda.stream_for(stream).wait_event(self._event)
            return Capsule(self._surface, self._buffer, self._gpu_id)

        def __dlpack_device__(self):
            return (KDL_CUDA, self._gpu_id)

    class PyNvDecoder:
        def __init__(self, demuxer, gpuid, codec, cudacontext, cudastream, usedevicememory, asyncallocations,
                     output):
            if codec != demuxer.GetNvCodecId():
                raise RuntimeError(f"decoder created for {codec.name}, stream is {demuxer.GetNvCodecId().name}")
            if cudastream and cudastream not in cuda.streams:
                raise RuntimeError("cudastream input argument does not correspond to cudacontext argument")
            if not usedevicememory or output is not OutputColorType.NATIVE:
                raise NotImplementedError("the stand-in models NV12 output in device memory only")
            context = demuxer._stream.codec_context
            self._codec = av.CodecContext.create(context.name, "r")
            self._codec.extradata = context.extradata
            # No stream given: NvDecoder works on the legacy default stream (a null CUstream).
            self._gpu_id, self._stream = gpuid, cuda.stream_for(cudastream) if cudastream else cuda.legacy
            self._async = asyncallocations
            self._last_event = None
            self.calls = 0
            self.outputs: list[tuple[np.ndarray, Buffer]] = []  # NvDecoder's m_vpFrame: reused per Decode call

        def Decode(self, packet):
            self.calls += 1
            if fail_after is not None and self.calls > fail_after:
                raise RuntimeError("HW decode failed\ncuvid detail")
            if engines is not None and packet.bsl:
                engines.decode_one_frame(self)
            out = []
            for number, frame in enumerate(self._codec.decode(packet.av_packet)):
                # NVDEC's NV12 is the decoded planes as they are, U and V interleaved, in surfaces
                # allocated in 16-row macroblocks.
                luma, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                              for p in frame.planes)
                padded = -(-frame.height // 16) * 16
                shape = (padded * 3 // 2, frame.width)
                if number == len(self.outputs):
                    self.outputs.append((np.zeros(shape, np.uint8), Buffer(f"NVDEC output buffer {number}")))
                surface, buffer = self.outputs[number]
                surface[:] = 0
                surface[:frame.height] = luma
                surface[padded:padded + u.shape[0]] = np.stack([u, v], axis=-1).reshape(u.shape[0], -1)
                # HandlePictureDisplay: post-processing and the copy into the output buffer on the
                # decoder's stream, then the frame's event; without a stream, a host wait.
                cuda.enqueue(self._stream, "nvdec", writes=[buffer])
                self._last_event = event = self._stream.record_internal()
                if self._stream is cuda.legacy:
                    cuda.host_wait(self._stream.clock, "NVDEC without a stream", arms=False)
                out.append(DecodedFrame(surface, buffer, frame.pts, self._gpu_id, self._stream, event))
            return out

        def WaitOnCUStream(self, stream: int) -> None:
            target = cuda.stream_for(stream)  # an invalid handle fails in cuStreamWaitEvent
            log["waits"].append(stream)
            if self._async and self._last_event is not None:
                target.wait_event(self._last_event)

    demuxers: list[PyNvDemuxer] = []

    def CreateDemuxer(filename: str):
        demuxers.append(PyNvDemuxer(filename))
        return demuxers[-1]

    def GetDecoderCaps(gpuid: int = 0, codec=cudaVideoCodec.H264, chromaformat=cudaVideoChromaFormat["420"],
                       bitdepth: int = 8) -> dict:
        cuda.check_device(gpuid)
        reported = caps(codec, chromaformat, bitdepth)
        if engines is not None and reported["supported"]:
            reported["num_decoder_engines"] = engines.engines
        return reported

    def CreateDecoder(**kwargs):
        # pybind11 tries the overloads in order: the first has bWaitForSessionWarmUp and creates the
        # decoder without asynchronous allocations (usedevicememory defaults to 0); the second has
        # enableasyncallocations (default 1) and always uses device memory.
        first = ("gpuid", "codec", "cudacontext", "cudastream", "usedevicememory", "maxwidth", "maxheight",
                 "outputColorType", "enableSEIMessage", "bWaitForSessionWarmUp", "latency")
        second = ("gpuid", "codec", "cudacontext", "cudastream", "usedevicememory", "enableasyncallocations",
                  "maxwidth", "maxheight", "outputColorType", "enableSEIMessage", "latency")
        if set(kwargs) <= set(first):
            device_memory, asyncallocations = bool(kwargs.get("usedevicememory", 0)), False
        elif set(kwargs) <= set(second):
            device_memory, asyncallocations = True, bool(kwargs.get("enableasyncallocations", 1))
        else:
            raise TypeError("CreateDecoder(): incompatible function arguments")
        decoder = PyNvDecoder(demuxers[-1], kwargs.get("gpuid", 0), kwargs.get("codec", cudaVideoCodec.H264),
                              kwargs.get("cudacontext", 0), kwargs.get("cudastream", 0), device_memory,
                              asyncallocations, kwargs.get("outputColorType", OutputColorType.NATIVE))
        log["decoders"].append(decoder)
        if engines is not None:
            engines.created(decoder)
        return decoder

    nvc = types.ModuleType("PyNvVideoCodec")
    nvc.__version__ = "2.2.4"
    nvc.CreateDemuxer, nvc.CreateDecoder, nvc.GetDecoderCaps, nvc.PacketData = (
        CreateDemuxer, CreateDecoder, GetDecoderCaps, PacketData)
    nvc.cudaVideoCodec, nvc.cudaVideoChromaFormat = cudaVideoCodec, cudaVideoChromaFormat
    nvc.OutputColorType, nvc.DisplayDecodeLatencyType = OutputColorType, DisplayDecodeLatencyType
    return nvc, log


# ------------------------------------------------------------------------------------- TensorRT

def fake_tensorrt_runtime(cuda: Cuda, max_batch: int, model, outputs: dict, clip: tuple):
    """A tensorrt module whose deserialized engine runs `model(rows) -> {name: array}` on the
    stream `execute_async_v3` is given, when that stream runs its queued work. `outputs` maps
    each output name to its per-row width. Returns (tensorrt module, log)."""
    log = {"input_shapes": []}

    def host_view(ptr, shape):
        buffer = (ctypes.c_float * int(np.prod(shape))).from_address(ptr)
        return np.frombuffer(buffer, np.float32).reshape(shape)

    class IExecutionContext:
        def __init__(self):
            self.addresses, self.batch = {}, None

        def set_input_shape(self, name: str, shape) -> bool:
            self.batch = shape[0]
            log["input_shapes"].append(shape[0])
            return 1 <= shape[0] <= max_batch

        def get_tensor_shape(self, name: str):
            return (self.batch, outputs[name])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            addresses, batch = dict(self.addresses), self.batch

            def work():
                rows = host_view(addresses["video"], (batch, *clip)).copy()
                for name, value in model(rows).items():
                    host_view(addresses[name], value.shape)[...] = value

            cuda.enqueue(cuda.stream_for(stream_handle), "tensorrt", work=work)
            return True

    names = ("video", *outputs)

    class ICudaEngine:
        num_io_tensors = len(names)

        def get_tensor_name(self, index: int) -> str:
            return names[index]

        def get_tensor_mode(self, name: str):
            return "INPUT" if name == "video" else "OUTPUT"

        def get_tensor_dtype(self, name: str):
            return "FLOAT"

        def get_tensor_profile_shape(self, name: str, profile_index: int):
            return [(1, *clip), (2, *clip), (max_batch, *clip)]

        def create_execution_context(self):
            return IExecutionContext()

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.Builder = object
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, min_severity=2: None})
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, serialized_engine: ICudaEngine()})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    return trt, log

