"""Stage 2 on NVIDIA GPUs: hardware (NVDEC) decoding with frames staying in GPU memory.

Dependencies and why:
- `PyNvVideoCodec` (2.x) demuxes the file (its own FFmpeg, with the H.264/HEVC Annex-B conversion
  NVDEC needs), reports what the GPU's decoder can do (`GetDecoderCaps`) and decodes on the GPU's
  video engine into NV12 in device memory, in display order. Its own RGB output is not used: it
  assumes BT.709 limited range for every stream, where the CPU path converts each stream with its
  own matrix and range; `runtime/colour.py` does that step, on the GPU, for the frames used.
- `cupy` wraps the decoded planes through DLPack and owns the CUDA stream; the same primary context
  then serves NVDEC, the CuPy preprocessing and the engine (docs/toolchain.md, "The GPU stack").
Both are imported lazily: PyNvVideoCodec's import raises RuntimeError on machines without the
NVIDIA video driver libraries.

Whether NVDEC takes a stream is decided before the first packet, from the decoder capabilities
for its codec, chroma format, bit depth and size (`nvdec_refusal`); a refusal raises
EngineUnavailable with the reason, and the pipeline decodes with PyAV instead.

Streaming: one packet in, the frames it completes out; memory does not grow with the video.
Timestamps and damage detection go through the same `FrameTimeChecker` as the CPU decoder.

Segments (decode_segments.py): a decoder given a keyframe reads the demuxer's packets up to it
without decoding them, then decodes from it and drops the pictures shown before it (an open
GOP's leading pictures, which NVDEC would output damaged). It reads rather than seeks because
PyNvVideoCodec's demuxer seeks to an index entry by number, which is a frame only in some
containers. `engines` is the GPU's NVDEC engine count (`GetDecoderCaps`' num_decoder_engines):
the pipeline gives a video that many decoders.

Each frame's planes are copied once on the GPU (device to device, 3 MB for 1080p) into CuPy
arrays the frame owns: NVDEC hands out output buffers that the next Decode call overwrites,
while the window selector holds a frame until it has seen the next one.

Streams (docs/design.md, "GPU streams"): the decoder owns the producer's stream
(`gpu.ProducerStream`, non-blocking) and gives it to NVDEC as `cudastream`. PyNvVideoCodec 2.2
then queues each frame's post-processing and its copy into the output buffer on that stream
(records a per-frame event there, and waits on the host only when given no stream); our copies,
the colour conversion and preprocessing queue on the same stream, and so does the next Decode's
overwrite of the output buffers. Stream order alone orders all of it: no event, no host wait.
`WaitOnCUStream` is not needed (it orders another stream after the decoder, and only for
decoders created with `enableasyncallocations`, which tsf does not use), and DLPack's handshake
is a no-op for the decoder's own stream.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator, Mapping

from .colour import matrix_supported, yuv420_to_rgb
from .decode import FrameTimeChecker, upright
from .decode_segments import Keyframe
from .errors import EngineUnavailable, first_line
from .gpu import GPU_IMPORT_ERRORS, Device, ProducerStream, cupy_support
from .probe import VideoInfo

# FFmpeg's "no timestamp" value, which NVDEC passes through for frames without one.
AV_NOPTS_VALUE = -(1 << 63)
# NVDEC codes its size limits in 16 x 16 macroblocks (cuvidGetDecoderCaps' nMaxMBCount).
MACROBLOCK = 16


@contextmanager
def _quiet_pynvvideocodec_import():
    # On a failed import PyNvVideoCodec logs a multi-line troubleshooting guide at ERROR level
    # before raising; the one-line reason we return says enough.
    logger = logging.getLogger("PyNvVideoCodec")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def _import_pynvvideocodec():
    with _quiet_pynvvideocodec_import():
        import PyNvVideoCodec
    return PyNvVideoCodec


def nvdec_support(gpu_id: int = 0) -> str | None:
    """None when NVDEC decoding can run here (PyNvVideoCodec, CuPy, a CUDA GPU), else why not."""
    try:
        nvc = _import_pynvvideocodec()
    except GPU_IMPORT_ERRORS as e:
        return f"PyNvVideoCodec is unusable ({first_line(e)})"
    for needed in ("CreateDemuxer", "CreateDecoder", "GetDecoderCaps", "OutputColorType"):
        if not hasattr(nvc, needed):
            return f"PyNvVideoCodec {getattr(nvc, '__version__', '?')} lacks {needed} (tsf needs 2.2 or newer)"
    return cupy_support(Device("cuda", gpu_id))


def nvdec_engines(gpu_id: int = 0) -> int | None:
    """The NVDEC engines of GPU `gpu_id` (GetDecoderCaps' num_decoder_engines, asked for H.264
    4:2:0 8-bit, which every NVDEC decodes), or None when NVDEC cannot run there."""
    if nvdec_support(gpu_id) is not None:
        return None
    try:
        engines = _import_pynvvideocodec().GetDecoderCaps(gpuid=gpu_id).get("num_decoder_engines")
    except Exception:  # PyNvVideoCodec raises its own (PyNvVCException) or RuntimeError
        return None
    return int(engines) if engines else None


def nvdec_refusal(info: VideoInfo, chroma_format: str, bit_depth: int, caps: Mapping[str, int]) -> str | None:
    """Why NVDEC should not decode this stream on this GPU, or None when it can.

    `chroma_format` ("420", "422", "444", "Monochrome") and `bit_depth` are what the demuxer reports;
    `caps` is `PyNvVideoCodec.GetDecoderCaps` for that codec, chroma format and bit depth (a dict
    with "supported", "width_min/max", "height_min/max" and "mb_num_max").
    """
    stream = f"{info.codec} {chroma_format} {bit_depth}-bit"
    if chroma_format != "420" or bit_depth != 8:
        return f"tsf converts NVDEC's 8-bit 4:2:0 output only, this stream is {stream}"
    if not caps.get("supported"):
        return f"this GPU's NVDEC cannot decode {stream}"
    width, height = info.width, info.height
    if not (caps.get("width_min", 0) <= width <= caps.get("width_max", 0)
            and caps.get("height_min", 0) <= height <= caps.get("height_max", 0)):
        return (f"{width}x{height} is outside what this GPU's NVDEC decodes for {stream} "
                f"({caps.get('width_min')}x{caps.get('height_min')} to {caps.get('width_max')}x{caps.get('height_max')})")
    macroblocks = -(-width // MACROBLOCK) * -(-height // MACROBLOCK)
    if macroblocks > caps.get("mb_num_max", 0):
        return f"{width}x{height} is {macroblocks} macroblocks, this GPU's NVDEC decodes at most {caps.get('mb_num_max')}"
    if width % 2 or height % 2:
        return f"{width}x{height}: NVDEC's 4:2:0 output needs an even frame size"
    if not matrix_supported(info.colorspace):
        return f"colour matrix {info.colorspace} (FFmpeg's code) has no YUV->RGB conversion in tsf"
    return None


@dataclass
class NvdecFrame:
    """The runtime's `DecodedFrame` (runtime/decode.py) for NVDEC frames: NV12 planes, RGB on demand.

    The planes are written on the decoder's stream (`NvdecDecoder.gpu_stream`): read them, and
    call `to_rgb`, with that stream current (`gpu_stream.work()`), as the pipeline's producer does.
    """

    pts_time: Fraction
    number: int
    luma: Any  # cupy.ndarray, H x W uint8, owned by this frame
    chroma: Any  # cupy.ndarray, H/2 x W uint8: U and V interleaved, owned by this frame
    info: VideoInfo

    def to_rgb(self):
        rgb = yuv420_to_rgb(self.luma, self.chroma[:, 0::2], self.chroma[:, 1::2],
                            self.info.colorspace, self.info.color_range)
        return upright(rgb, self.info.rotation)


class NvdecDecoder:
    """PyNvVideoCodec demuxer + decoder on GPU `gpu_id`, yielding `NvdecFrame`s in display order."""

    name = "nvdec"

    def __init__(self, info: VideoInfo, gpu_id: int = 0, keyframe: Keyframe | None = None):
        reason = nvdec_support(gpu_id)
        if reason is not None:
            raise EngineUnavailable(reason)
        import cupy

        self._cupy = cupy
        self._nvc = nvc = _import_pynvvideocodec()
        self.info = info
        with cupy.cuda.Device(gpu_id):
            cupy.empty(1, dtype=cupy.uint8)  # makes the device's primary context current
            context = cupy.cuda.driver.ctxGetCurrent()
        self.gpu_stream = ProducerStream(Device("cuda", gpu_id))
        try:
            self._demuxer = nvc.CreateDemuxer(filename=str(info.path))
        except Exception as e:  # PyNvVideoCodec raises its own (PyNvVCException) or RuntimeError
            # The probe (PyAV) read this file, so the CPU decoder can take over.
            raise EngineUnavailable(f"{info.path}: NVDEC's demuxer cannot open it ({first_line(e)})") from None
        if self._demuxer.GetVideoStreamId() != info.stream_index:
            raise EngineUnavailable(f"{info.path}: NVDEC's demuxer picked video stream "
                                    f"{self._demuxer.GetVideoStreamId()}, tsf reads stream {info.stream_index}")
        codec = self._demuxer.GetNvCodecId()
        chroma_format, bit_depth = self._demuxer.ChromaFormat(), self._demuxer.BitDepth()
        try:
            caps = nvc.GetDecoderCaps(gpuid=gpu_id, codec=codec, chromaformat=chroma_format, bitdepth=bit_depth)
        except Exception as e:
            raise EngineUnavailable(f"NVDEC's capabilities for {info.codec} cannot be read ({first_line(e)})") from None
        reason = nvdec_refusal(info, chroma_format.name, bit_depth, caps)
        if reason is not None:
            raise EngineUnavailable(reason)
        self.engines = max(1, int(caps.get("num_decoder_engines") or 1))
        self.keyframe = keyframe
        try:
            self._decoder = nvc.CreateDecoder(
                gpuid=gpu_id, codec=codec, cudacontext=context, cudastream=self.gpu_stream.ptr,
                usedevicememory=True, outputColorType=nvc.OutputColorType.NATIVE)
        except Exception as e:
            raise EngineUnavailable(f"NVDEC cannot decode {info.codec} on this GPU ({first_line(e)})") from None
        self._time_base = Fraction(self._demuxer.GetTimebaseNum(), self._demuxer.GetTimebaseDen())

    def _planes(self, nv_frame):
        """The frame's luma and interleaved chroma as CuPy arrays of its own (device copies on our stream)."""
        # A zero-copy view of NVDEC's NV12 output buffer. CuPy hands PyNvVideoCodec the current
        # stream, the decoder's own, so its DLPack export adds no wait.
        view = self._cupy.from_dlpack(nv_frame)
        if view.ndim == 3 and view.shape[2] == 1:
            view = view[..., 0]
        height, width = self.info.height, self.info.width
        # NV12: the luma rows, then half as many rows of interleaved U/V. Surfaces can be padded
        # to the codec's block size (1088 rows for 1080p): the chroma starts after the padding.
        luma_rows = view.shape[0] * 2 // 3 if view.ndim == 2 else 0
        if view.ndim != 2 or view.shape[1] < width or luma_rows < height or view.shape[0] - luma_rows < height // 2:
            raise RuntimeError(f"unexpected NV12 surface of shape {tuple(view.shape)} for {width}x{height}")
        return view[:height, :width].copy(), view[luma_rows:luma_rows + height // 2, :width].copy()

    def frames(self) -> Iterator[NvdecFrame]:
        checker = FrameTimeChecker(self.info)
        number = 0
        packets = iter(self._demuxer)
        start = None
        if self.keyframe is not None:
            start = self.keyframe.pts * self._time_base
            packets = self._from_keyframe(packets)
        while True:
            try:
                packet = next(packets, None)
                decoded = self._decoder.Decode(packet) if packet is not None else self._flush()
                with self.gpu_stream.work():
                    ready = [(nv_frame.getPTS(), self._planes(nv_frame)) for nv_frame in decoded or ()]
            except Exception as e:  # PyNvVideoCodec's exception types are not importable without a GPU
                raise checker.broke(first_line(e)) from None
            for pts, (luma, chroma) in ready:
                has_pts = pts is not None and pts != AV_NOPTS_VALUE
                pts_time = checker.frame_time(pts * self._time_base if has_pts else None)
                if start is not None and pts_time < start:
                    continue  # a leading picture of an open GOP: the previous segment's
                if not checker.accept(pts_time):
                    continue
                yield NvdecFrame(pts_time, number, luma, chroma, self.info)
                number += 1
            if packet is None:
                break
        checker.finish()

    def _from_keyframe(self, packets) -> Iterator:
        """The packets from the segment's keyframe on; those before it are read, not decoded."""
        keyframe = self.keyframe
        assert keyframe is not None  # only a segment that starts at a keyframe reads up to one
        for packet in packets:
            if packet.key and packet.pts == keyframe.pts:
                yield packet
                yield from packets
                return
        raise RuntimeError(f"the demuxer found no keyframe at pts {keyframe.pts}")

    def _flush(self) -> list:
        """After the last packet, an empty packet makes NVDEC hand out the frames it holds back."""
        try:
            return self._decoder.Decode(self._nvc.PacketData())
        except Exception as e:
            # Not fatal: at most the decoder's few frames of latency are lost, and a larger loss
            # is caught as truncation by FrameTimeChecker.finish().
            logging.getLogger(__name__).warning("NVDEC flush failed (%s)", first_line(e))
            return []

    def close(self) -> None:
        # PyNvVideoCodec's own samples release the decoder before the demuxer.
        self.__dict__.pop("_decoder", None)
        self.__dict__.pop("_demuxer", None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
