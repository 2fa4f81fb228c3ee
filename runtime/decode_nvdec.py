"""Stage 2 on NVIDIA GPUs: hardware (NVDEC) decoding with frames staying in GPU memory.

Dependencies and why:
- `PyNvVideoCodec` (2.x) demuxes the file (its own FFmpeg, with the H.264/HEVC Annex-B conversion
  NVDEC needs) and decodes on the GPU's video engine, converting each picture to interleaved RGB
  on the GPU (`OutputColorType.RGB`), in display order.
- `cupy` wraps the decoded RGB through DLPack and owns the CUDA stream; the same primary context
  then serves NVDEC, the CuPy preprocessing and TensorRT (docs/design.md, "GPU path").
Both are imported lazily: PyNvVideoCodec's import raises RuntimeError on machines without the
NVIDIA video driver libraries.

Streaming: one packet in, the frames it completes out; memory does not grow with the video.
Timestamps and damage detection go through the same `FrameTimeChecker` as the CPU decoder.

Each frame's RGB is copied once on the GPU (device to device, ~6 MB for 1080p, microseconds)
into a CuPy array the frame owns: NVDEC hands out surfaces from a small pool that later Decode
calls reuse, while the window selector holds a frame until it has seen the next one.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

from .decode import FrameTimeChecker, upright
from .errors import EngineUnavailable, first_line
from .gpu import GPU_IMPORT_ERRORS, Device, cupy_support
from .probe import VideoInfo

# FFmpeg's "no timestamp" value, which NVDEC passes through for frames without one.
AV_NOPTS_VALUE = -(1 << 63)


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
    for needed in ("CreateDemuxer", "CreateDecoder", "OutputColorType"):
        if not hasattr(nvc, needed):
            return f"PyNvVideoCodec {getattr(nvc, '__version__', '?')} lacks {needed} (tsf needs 2.x)"
    return cupy_support(Device("cuda", gpu_id))


@dataclass
class NvdecFrame:
    """The runtime's `DecodedFrame` (runtime/decode.py) for NVDEC frames."""

    pts_time: Fraction
    number: int
    rgb: Any  # cupy.ndarray, H x W x 3 uint8, owned by this frame

    def to_rgb(self):
        return self.rgb


class NvdecDecoder:
    """PyNvVideoCodec demuxer + decoder on GPU `gpu_id`, yielding `NvdecFrame`s in display order."""

    name = "nvdec"

    def __init__(self, info: VideoInfo, gpu_id: int = 0):
        reason = nvdec_support(gpu_id)
        if reason is not None:
            raise EngineUnavailable(reason)
        import cupy

        self._cupy = cupy
        self._nvc = nvc = _import_pynvvideocodec()
        self.info = info
        self._device = cupy.cuda.Device(gpu_id)
        with self._device:
            cupy.empty(1, dtype=cupy.uint8)  # makes the device's primary context current
            context = cupy.cuda.driver.ctxGetCurrent()
            # A blocking stream: work on it is ordered with the legacy default stream that other
            # CuPy code uses; we also synchronise before handing frames out.
            self._stream = cupy.cuda.Stream(non_blocking=False)
        try:
            self._demuxer = nvc.CreateDemuxer(filename=str(info.path))
        except Exception as e:  # PyNvVideoCodec raises its own (PyNvVCException) or RuntimeError
            # The probe (PyAV) read this file, so the CPU decoder can take over.
            raise EngineUnavailable(f"{info.path}: NVDEC's demuxer cannot open it ({first_line(e)})") from None
        stream_id = getattr(self._demuxer, "GetVideoStreamId", None)
        if stream_id is not None and stream_id() != info.stream_index:
            raise EngineUnavailable(f"{info.path}: NVDEC's demuxer picked video stream {stream_id()}, "
                                   f"tsf reads stream {info.stream_index}")
        try:
            self._decoder = nvc.CreateDecoder(
                gpuid=gpu_id, codec=self._demuxer.GetNvCodecId(), cudacontext=context,
                cudastream=self._stream.ptr, usedevicememory=True, outputColorType=nvc.OutputColorType.RGB)
        except Exception as e:
            raise EngineUnavailable(f"NVDEC cannot decode {info.codec} on this GPU ({first_line(e)})") from None
        self._time_base = self._stream_time_base()

    def _stream_time_base(self) -> Fraction:
        # Frame PTS are in the demuxer's stream time base; PyNvVideoCodec >= 2.2 reports it, and it
        # is the same FFmpeg stream the probe read, so the probe's value is the fallback.
        num = getattr(self._demuxer, "GetTimebaseNum", None)
        den = getattr(self._demuxer, "GetTimebaseDen", None)
        if num is not None and den is not None and den() > 0:
            return Fraction(num(), den())
        return self.info.time_base

    def _rgb(self, nv_frame):
        """The frame's RGB as a CuPy H x W x 3 uint8 array of its own (one device copy)."""
        cupy = self._cupy
        view = cupy.from_dlpack(nv_frame)  # zero-copy view of the decoder's surface
        height, width = self.info.height, self.info.width
        if view.ndim == 2:  # some versions expose interleaved RGB as H x (3W)
            view = view.reshape(view.shape[0], -1, 3)
        # Surfaces can be padded to the codec's block size; keep the display area.
        return upright(view[:height, :width, :3].copy(), self.info.rotation)

    def frames(self) -> Iterator[NvdecFrame]:
        checker = FrameTimeChecker(self.info)
        number = 0
        packets = iter(self._demuxer)
        while True:
            try:
                packet = next(packets, None)
                decoded = self._decoder.Decode(packet) if packet is not None else self._flush()
                with self._device, self._stream:
                    ready = []
                    for nv_frame in decoded:
                        ready.append((nv_frame.getPTS(), self._rgb(nv_frame)))
                    self._stream.synchronize()
            except Exception as e:  # PyNvVideoCodec's exception types are not importable without a GPU
                raise checker.broke(first_line(e)) from None
            for pts, rgb in ready:
                has_pts = pts is not None and pts != AV_NOPTS_VALUE
                pts_time = checker.frame_time(pts * self._time_base if has_pts else None)
                if not checker.accept(pts_time):
                    continue
                yield NvdecFrame(pts_time, number, rgb)
                number += 1
            if packet is None:
                break
        checker.finish()

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
