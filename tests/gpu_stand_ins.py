"""Stand-ins for CuPy, PyNvVideoCodec and TensorRT that model the real APIs, for tests on the CPU.

Each models the real library's signature (a keyword the library does not take is a TypeError
here too) and the behaviour tsf relies on, read from the libraries themselves:
- CuPy 13/14: `cuda.Device(device=None)` (per-thread current device, GPU 0 unless set),
  `cuda.Stream(null=False, non_blocking=False, ptds=False)`, `ndarray.get(stream=None, order='C',
  out=None, blocking=True)`, `ndarray.set(arr, stream=None)`, `cupyx.empty_pinned(shape,
  dtype=float, order='C')`, `from_dlpack(array)` handing the current stream to `__dlpack__`.
  Work queued on a stream runs when the stream is synchronised (`Cuda.host_waits` counts the
  waits); a copy between the device and pageable (not pinned) host memory waits for its stream
  first, as CUDA does. NumPy plays device memory; element-wise maths runs at once, as NumPy.
- PyNvVideoCodec 2.2.4, as its extension module reports its own signatures and the keys of
  `GetDecoderCaps`: `CreateDemuxer(filename)`, `GetDecoderCaps(gpuid=0, codec=H264,
  chromaformat=420, bitdepth=8) -> dict`, `CreateDecoder(gpuid=0, codec=H264, cudacontext=0,
  cudastream=0, usedevicememory=..., ...)`, `Decode(packet) -> [DecodedFrame]`,
  `WaitOnCUStream(stream)`, NV12 frames (luma rows, padded to 16, then interleaved U/V rows)
  through DLPack. PyAV decodes the packets; NVDEC's surfaces are reused by the next Decode call.
  Only what tsf asks for is modelled: NATIVE (NV12) output in device memory. The demuxer's
  packets carry `key`, `pts`, `dts`, `pos` and `bsl` as its PacketData does; Decode releases
  the GIL (PyNvDecoder::Decode drops it around the hardware decode), so decoders in several
  threads run at once, sharing the GPU's engines (`NvdecEngines`, in simulated time).
- TensorRT 10 (tensorrt-stubs 10.13): an execution context whose `execute_async_v3(stream_handle)`
  queues the engine's work on that stream.
"""
from __future__ import annotations

import ctypes
import enum
import itertools
import threading
import time
import types

import numpy as np

KDL_CPU, KDL_CUDA = 1, 2  # DLPack device types


# ------------------------------------------------------------------------------------------ CuPy

class Cuda:
    """The state of a stand-in CUDA machine: devices, streams by handle, pinned buffers, waits."""

    def __init__(self, device_count: int = 1):
        self.device_count = device_count
        self.streams: dict[int, Stream] = {}
        self.pinned: list[np.ndarray] = []
        self.host_waits = 0
        self.current = threading.local()
        self._handles = itertools.count(0x1000, 0x10)
        self.null_stream = Stream(self, null=True)

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

    def is_pinned(self, array: np.ndarray) -> bool:
        base = array
        while isinstance(base, np.ndarray) and base.base is not None and not any(base is p for p in self.pinned):
            base = base.base
        return any(base is p for p in self.pinned)


class Stream:
    """cupy.cuda.Stream: queued work runs, in order, when the stream is synchronised."""

    def __init__(self, cuda: Cuda, null=False, non_blocking=False, ptds=False):
        self._cuda = cuda
        self.ptr = 0 if null else cuda.new_handle()
        self.non_blocking = non_blocking
        self.pending: list = []
        cuda.streams[self.ptr] = self

    def enqueue(self, work) -> None:
        self.pending.append(work)

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    def synchronize(self) -> None:
        self._cuda.host_waits += 1
        self.drain()

    def record(self, event=None):
        return Event(self)

    def wait_event(self, event) -> None:
        # The device makes this stream wait for the other's work so far: modelled by running it.
        self.enqueue(event.stream.drain)

    def use(self):
        self._cuda.current.stream = self
        return self

    def __enter__(self):
        self._cuda.stack("streams").append(getattr(self._cuda.current, "stream", None))
        self._cuda.current.stream = self
        return self

    def __exit__(self, *exc):
        self._cuda.current.stream = self._cuda.stack("streams").pop()
        return False


class Event:
    def __init__(self, stream: Stream):
        self.stream = stream


class Device:
    """cupy.cuda.Device: the current device is per thread; `with` sets it for the block."""

    def __init__(self, cuda: Cuda, device=None):
        self._cuda = cuda
        self.id = cuda.current_device() if device is None else int(device)

    def use(self) -> None:
        self._cuda.check_device(self.id)
        self._cuda.current.device = self.id

    def synchronize(self) -> None:
        self._cuda.host_waits += 1
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


def fake_cupy(cuda: Cuda):
    """(cupy, cupyx) stand-in modules over `cuda`."""

    def current_stream() -> Stream:
        return getattr(cuda.current, "stream", None) or cuda.null_stream

    def copy_between(stream, host: np.ndarray, copy) -> None:
        stream = stream or current_stream()
        if cuda.is_pinned(host):
            stream.enqueue(copy)
        else:  # pageable memory: CUDA stages the copy and the call returns when it is done
            stream.synchronize()
            copy()

    class ndarray(np.ndarray):
        @property
        def data(self):
            return types.SimpleNamespace(ptr=self.ctypes.data)

        @property
        def device(self):
            return types.SimpleNamespace(id=getattr(self, "_device_id", 0))

        def set(self, arr, stream=None):
            if not isinstance(arr, np.ndarray) or arr.shape != self.shape or arr.dtype != self.dtype:
                raise ValueError("set() needs a numpy.ndarray of the same shape and dtype")
            target = self.view(np.ndarray)
            copy_between(stream, arr, lambda: target.__setitem__(Ellipsis, arr))

        def get(self, stream=None, order="C", out=None, blocking=True):
            source = self.view(np.ndarray)
            if out is None:
                out = np.empty(self.shape, self.dtype, order=order)
            elif out.shape != self.shape or out.dtype != self.dtype:
                raise ValueError("get(out=...) needs an array of the same shape and dtype")
            copy_between(stream, out, lambda: out.__setitem__(Ellipsis, source))
            if blocking:
                (stream or current_stream()).synchronize()
            return out

    def on_device(array) -> ndarray:
        result = np.ascontiguousarray(array).view(ndarray)
        result._device_id = cuda.current_device()
        return result

    def empty(shape, dtype=float, order="C"):
        return on_device(np.empty(shape, dtype, order=order))

    def asarray(a, dtype=None, order=None, *, blocking=False):
        return on_device(np.asarray(a, dtype=dtype, order=order))

    def ascontiguousarray(a, dtype=None):
        return on_device(np.ascontiguousarray(a, dtype=dtype))

    def from_dlpack(array):
        device_type, _ = array.__dlpack_device__()
        if device_type != KDL_CUDA:
            raise BufferError("from_dlpack: CuPy reads CUDA device memory only")
        stream = current_stream().ptr or 1  # the array API's code for CUDA's legacy default stream
        capsule = array.__dlpack__(stream=stream)
        holder = types.SimpleNamespace(__dlpack__=lambda **kw: capsule, __dlpack_device__=lambda: (KDL_CPU, 0))
        return np.from_dlpack(holder).view(ndarray)

    def empty_pinned(shape, dtype=float, order="C"):
        buffer = np.empty(shape, dtype, order=order)
        cuda.pinned.append(buffer)
        return buffer

    contexts = {}
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "13.6.0"
    cupy.ndarray, cupy.float32, cupy.uint8 = ndarray, np.float32, np.uint8
    cupy.empty, cupy.asarray, cupy.ascontiguousarray, cupy.from_dlpack = empty, asarray, ascontiguousarray, from_dlpack
    cupy.cuda = types.SimpleNamespace(
        Device=lambda device=None: Device(cuda, device),
        Stream=lambda null=False, non_blocking=False, ptds=False: Stream(cuda, null, non_blocking, ptds),
        get_current_stream=current_stream,
        driver=types.SimpleNamespace(
            ctxGetCurrent=lambda: contexts.setdefault(cuda.current_device(), 0xC0DE00 + cuda.current_device())),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: cuda.device_count))
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = empty_pinned
    return cupy, cupyx


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
        def __init__(self, surface: np.ndarray, pts: int, gpu_id: int):
            self._surface, self._pts, self._gpu_id = surface, pts, gpu_id

        def getPTS(self) -> int:
            return self._pts

        @property
        def shape(self):
            return list(self._surface.shape)

        def __dlpack__(self, stream: object = 0):
            log["dlpack_streams"].append(stream)
            return self._surface.__dlpack__()

        def __dlpack_device__(self):
            return (KDL_CUDA, self._gpu_id)

    class PyNvDecoder:
        def __init__(self, demuxer, gpuid, codec, cudacontext, cudastream, usedevicememory, output):
            if codec != demuxer.GetNvCodecId():
                raise RuntimeError(f"decoder created for {codec.name}, stream is {demuxer.GetNvCodecId().name}")
            if cudastream and cudastream not in cuda.streams:
                raise RuntimeError("cudastream input argument does not correspond to cudacontext argument")
            if not usedevicememory or output is not OutputColorType.NATIVE:
                raise NotImplementedError("the stand-in models NV12 output in device memory only")
            context = demuxer._stream.codec_context
            self._codec = av.CodecContext.create(context.name, "r")
            self._codec.extradata = context.extradata
            self._gpu_id, self._stream = gpuid, cudastream
            self.calls = 0
            self.surfaces: list[np.ndarray] = []

        def Decode(self, packet):
            self.calls += 1
            if fail_after is not None and self.calls > fail_after:
                raise RuntimeError("HW decode failed\ncuvid detail")
            if engines is not None and packet.bsl:
                engines.decode_one_frame(self)
            frames = self._codec.decode(packet.av_packet)
            for surface in self.surfaces:  # NVDEC reuses its surfaces on the next Decode call
                surface[:] = 0
            self.surfaces, out = [], []
            for frame in frames:
                # NVDEC's NV12 is the decoded planes as they are, U and V interleaved.
                luma, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                              for p in frame.planes)
                padded = -(-frame.height // 16) * 16  # surfaces are allocated in 16-row macroblocks
                surface = np.zeros((padded * 3 // 2, frame.width), np.uint8)
                surface[:frame.height] = luma
                surface[padded:padded + u.shape[0]] = np.stack([u, v], axis=-1).reshape(u.shape[0], -1)
                self.surfaces.append(surface)
                out.append(DecodedFrame(surface, frame.pts, self._gpu_id))
            return out

        def WaitOnCUStream(self, stream: int) -> None:
            if stream not in cuda.streams:
                raise RuntimeError(f"unknown CUDA stream {stream:#x}")
            log["waits"].append(stream)

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

    def CreateDecoder(*, gpuid: int = 0, codec=cudaVideoCodec.H264, cudacontext: int = 0, cudastream: int = 0,
                      usedevicememory: bool = False, enableasyncallocations: bool | None = None, maxwidth: int = 0,
                      maxheight: int = 0, outputColorType=OutputColorType.NATIVE, enableSEIMessage: bool = False,
                      bWaitForSessionWarmUp: bool | None = None, latency=DisplayDecodeLatencyType.NATIVE,
                      enableDecodeStats: bool = False):
        # Two pybind11 overloads: bWaitForSessionWarmUp belongs to the first only,
        # enableasyncallocations to the second only.
        if bWaitForSessionWarmUp is not None and enableasyncallocations is not None:
            raise TypeError("CreateDecoder(): incompatible function arguments")
        decoder = PyNvDecoder(demuxers[-1], gpuid, codec, cudacontext, cudastream, usedevicememory, outputColorType)
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

            cuda.streams[stream_handle].enqueue(work)
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

