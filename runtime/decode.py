"""Stage 2: decoded frames in presentation order, converted to RGB only when asked.

Two decoders behind one interface (`Decoder`): PyAV on the CPU (here) and PyNvVideoCodec on the
GPU (`decode_nvdec.py`, imported only when the pipeline chooses it, since it needs a GPU and its
wheel raises RuntimeError at import without one). PyAV is used for the CPU because it exposes FFmpeg's
demuxers, decoders and threading directly and yields one frame at a time, so memory does not
grow with the video.

Damage detection is shared by both decoders (`FrameTimeChecker`): FFmpeg itself raises on some
corrupt packets, but a truncated MKV simply ends early and a damaged MKV cluster is silently
skipped by the demuxer, so the timestamps are checked too (an early end, a jump of more than
`MAX_GAP_SECONDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Protocol

import av

from .errors import InputError
from .gpu import CPU, Device
from .probe import VideoInfo, open_container

# A video whose decoded frames stop this far short of the probed duration is truncated. Generous
# because containers round durations and audio may outlast the video by a few frames.
TRUNCATION_TOLERANCE_SECONDS = Fraction(1)
# A jump in presentation times larger than this means lost data (a demuxer that resynchronised
# past a damaged region) rather than variable frame rate.
MAX_GAP_SECONDS = Fraction(1)


class DecodeError(InputError):
    """Decoding broke (or the file ended early); `at_time` is the last good time in seconds from the start."""

    def __init__(self, message: str, at_time: Fraction):
        super().__init__(message)
        self.at_time = at_time


class DecodedFrame(Protocol):
    pts_time: Fraction  # seconds on the stream clock
    number: int  # position in presentation order, from 0

    def to_rgb(self):
        """H x W x 3 uint8 (NumPy on the CPU, CuPy on the GPU)."""


class Decoder(Protocol):
    name: str  # "cpu" or "nvdec"
    device: Device  # where its frames live: the thread that preprocesses them works there

    def frames(self) -> Iterator[DecodedFrame]:
        """Frames in presentation order; raises DecodeError at a break or early end."""

    def close(self) -> None: ...


@dataclass
class PyAVFrame:
    pts_time: Fraction
    number: int
    frame: av.VideoFrame

    def to_rgb(self):
        return self.frame.to_ndarray(format="rgb24")


class FrameTimeChecker:
    """Turns a stream of frame times into DecodeErrors for gaps and early ends (both decoders)."""

    def __init__(self, info: VideoInfo):
        self.info = info
        self.last: Fraction | None = None
        self._next_nominal: Fraction | None = None

    def frame_time(self, pts_time: Fraction | None) -> Fraction:
        """A frame's time: its timestamp, or for a frame without one the nominal rate after the previous."""
        if pts_time is None:
            pts_time = self._next_nominal if self._next_nominal is not None else self.info.start_time
        self._next_nominal = pts_time + self.info.frame_duration
        return pts_time

    def accept(self, pts_time: Fraction) -> bool:
        """False for a frame to drop (a repeated or backwards timestamp); raises at a gap."""
        if self.last is not None:
            if pts_time <= self.last:
                return False  # broken muxers repeat timestamps; the first frame shown wins
            if pts_time - self.last > MAX_GAP_SECONDS:
                raise DecodeError(
                    f"{self.info.path}: decoding broke at {float(self._rel(self.last)):.1f} s: "
                    f"{float(pts_time - self.last):.1f} s of video missing (corrupt data)", self._rel(self.last))
        self.last = pts_time
        return True

    def broke(self, reason: str) -> DecodeError:
        at = self._rel(self.last) if self.last is not None else Fraction(0)
        return DecodeError(f"{self.info.path}: decoding broke at {float(at):.1f} s ({reason})", at)

    def finish(self) -> None:
        info = self.info
        if self.last is None:
            raise DecodeError(f"{info.path}: no frame could be decoded", Fraction(0))
        decoded_end = self.last + info.frame_duration
        if info.end_time - decoded_end > TRUNCATION_TOLERANCE_SECONDS:
            raise DecodeError(
                f"{info.path}: truncated: decoding ended at {float(self._rel(self.last)):.1f} s "
                f"of {float(info.duration):.1f} s", self._rel(self.last))

    def _rel(self, t: Fraction) -> Fraction:
        return t - self.info.start_time


class PyAVDecoder:
    """FFmpeg via PyAV, frame and slice threading on; only the few frames in flight are in memory."""

    name = "cpu"
    device = CPU

    def __init__(self, info: VideoInfo, threads: int = 0):
        self.info = info
        self.container = open_container(info.path)
        self.stream = self.container.streams[info.stream_index]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads  # 0 = FFmpeg picks (one per core)

    def frames(self) -> Iterator[PyAVFrame]:
        checker = FrameTimeChecker(self.info)
        time_base = Fraction(self.stream.time_base)
        number = 0
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    pts_time = checker.frame_time(frame.pts * time_base if frame.pts is not None else None)
                    if not checker.accept(pts_time):
                        continue
                    yield PyAVFrame(pts_time, number, frame)
                    number += 1
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise checker.broke(getattr(e, "strerror", None) or str(e) or type(e).__name__) from None
        checker.finish()

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
