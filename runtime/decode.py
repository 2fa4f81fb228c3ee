"""Stage 2: decoded frames in presentation order, converted to RGB only when asked.

Two decoders behind one interface (`Decoder`): PyAV on the CPU (here) and PyNvVideoCodec on the
GPU (`decode_nvdec.py`, imported only when the pipeline chooses it, since it needs a GPU and its
wheel raises RuntimeError at import without one). PyAV is used for the CPU because it exposes FFmpeg's
demuxers, decoders and threading directly and yields one frame at a time, so memory does not
grow with the video.

Damage detection is shared by both decoders (`FrameTimeChecker`, docs/design.md "Corrupt"): a
decoder reports what it sees of lost data (FFmpeg raises on some corrupt packets, flags others,
and a demuxer that resynchronises past a damaged region skips bytes of the file), and the checker
decides whether a jump in frame times is lost video or simply a frame held on screen (variable
frame rate, slide-like 0.5 fps streams). An early end is truncation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Protocol

import av

from .errors import InputError
from .preprocess import array_module
from .decode_segments import Keyframe, first_keyframe_after_seek
from .gpu import ProducerStream
from .probe import RESTART_SECONDS, VideoInfo, open_container

log = logging.getLogger("tsf")

# A video whose decoded frames stop this far short of the probed end is truncated. Generous
# because containers round durations and audio may outlast the video by a few frames.
TRUNCATION_TOLERANCE_SECONDS = Fraction(1)
# A jump in frame times up to the longer of these is within the stream's own timing whatever the
# decoder saw (a lost frame or two is filled by the one before; 0.5 fps streams jump 2 s). A longer
# jump is lost data when the decoder reported damage around it, or when the decoder cannot see
# damage (NVDEC, containers whose packets do not tile the file); otherwise it is a held frame.
MAX_GAP_SECONDS = Fraction(1)
HELD_FRAME_INTERVALS = 2
# Containers whose packets tile the file (each starts where the previous one, of any stream,
# ended, give or take a few header bytes): a demuxer that skips more than SKIPPED_BYTES_TOLERANCE
# resynchronised past damaged data. Smaller losses go unseen; their gap is a held frame.
TILING_CONTAINERS = ("matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "avi", "flv")
SKIPPED_BYTES_TOLERANCE = 64 * 1024
# MPEG-TS does not tile (PES packets span interleaved 188-byte TS packets), but its demuxer flags
# the packet after a continuity-counter break as corrupt.
FLAGGING_CONTAINERS = ("mpegts",)
# Damage is reported at the next video packet's time; frames are decoded a little later and may be
# reordered (B-frames), so a report stays on hand this long past its time.
DAMAGE_REPORT_SECONDS = Fraction(2)


def damage_visible(container: str) -> bool:
    """True when PyAV can see lost data in this container (skipped bytes or corrupt flags)."""
    return container in TILING_CONTAINERS or container in FLAGGING_CONTAINERS


def upright(rgb, rotation: int):
    """The picture as players show it: turned counter-clockwise by the display rotation (a view)."""
    return array_module(rgb).rot90(rgb, rotation // 90) if rotation else rgb


class DecodeError(InputError):
    """Decoding broke (or the file ended early); `at_time` is the last good time in seconds from the start."""

    def __init__(self, message: str, at_time: Fraction):
        super().__init__(message)
        self.at_time = at_time


class TimestampsRestart(InputError):
    """The timestamps of a container whose timestamps may restart went back further than a muxer's
    jitter, where the probe found no restart: the video is probed again with a scan of the whole
    file (`Extractor.extract`), never cut at the restart."""


class DecodedFrame(Protocol):
    pts_time: Fraction  # seconds on the stream clock
    number: int  # position in presentation order, from 0

    def to_rgb(self):
        """H x W x 3 uint8 (NumPy on the CPU, CuPy on the GPU)."""


class Decoder(Protocol):
    name: str  # "cpu" or "nvdec"
    # The CUDA stream its frames are written on (gpu.ProducerStream), None for frames in host
    # memory: whoever works on the frames works on that stream (pipeline.py's producer does).
    gpu_stream: ProducerStream | None

    def frames(self) -> Iterator[DecodedFrame]:
        """Frames in presentation order; raises DecodeError at a break or early end."""

    def close(self) -> None: ...


@dataclass
class PyAVFrame:
    pts_time: Fraction
    number: int
    frame: av.VideoFrame
    rotation: int = 0

    def to_rgb(self):
        return upright(self.frame.to_ndarray(format="rgb24"), self.rotation)


class FrameTimeChecker:
    """Turns a stream of frame times into DecodeErrors for lost data and early ends (both decoders).

    The rule (docs/design.md, "Corrupt"): a jump in frame times beyond the stream's own timing is
    lost video when the decoder reported damage around it (`damaged`), or when the decoder cannot
    see damage (`damage_visible=False`). Otherwise the frame before the jump was held on screen,
    and a held frame is a frame.

    In a video whose timestamps restart (`info.timestamp_restarts`, found by the probe), each run
    of frames after a restart is moved to follow the run before it one frame interval later, so
    the frame times cover the whole video, as the probe's duration does.
    """

    def __init__(self, info: VideoInfo, damage_visible: bool = False):
        self.info = info
        self.damage_visible = damage_visible
        self.last: Fraction | None = None
        self._next_nominal: Fraction | None = None
        self._restart_offset = Fraction(0)  # added to every timestamp since the last restart
        self._reports: list[tuple[Fraction, str]] = []  # (stream time, what the decoder saw)
        self._unplaced: str | None = None  # damage seen before the next video packet's time is known
        self._read_end: int | None = None

    def frame_time(self, pts_time: Fraction | None) -> Fraction:
        """A frame's time: its timestamp (after the restarts so far), or for a frame without one the
        nominal rate after the previous."""
        if pts_time is None:
            pts_time = self._next_nominal if self._next_nominal is not None else self.info.start_time
        else:
            pts_time += self._restart_offset
            restarted = self.last is not None and pts_time < self.last - RESTART_SECONDS
            if restarted and self.info.timestamps_may_restart and not self.info.timestamp_restarts:
                raise TimestampsRestart(f"{self.info.path}: the timestamps restart at "
                                        f"{float(self._rel(self.last)):.1f} s, which the probe did not foresee")
            if restarted and self.info.timestamp_restarts:
                joined_at = self.last + self.info.frame_duration
                log.info("%s: the timestamps restart at %.1f s; the frames after it follow on from there",
                         self.info.path, float(self._rel(joined_at)))
                self._restart_offset += joined_at - pts_time
                pts_time = joined_at
        self._next_nominal = pts_time + self.info.frame_duration
        return pts_time

    def damaged(self, what: str) -> None:
        """The decoder saw lost or corrupt data; it is placed at the next video packet's time."""
        self._unplaced = self._unplaced or what

    def packet(self, position: int | None, size: int, video_time: Fraction | None) -> None:
        """A packet read from a container whose packets tile the file (`position` None if not);
        `video_time` is set for the video stream's packets."""
        if position is not None and position >= 0 and size > 0:
            if self._read_end is not None and position - self._read_end > SKIPPED_BYTES_TOLERANCE:
                self.damaged(f"the demuxer skipped {position - self._read_end} bytes of damaged data")
            self._read_end = max(self._read_end or 0, position + size)
        if video_time is not None and self._unplaced is not None:
            self._reports.append((video_time, self._unplaced))
            self._unplaced = None

    def accept(self, pts_time: Fraction) -> bool:
        """False for a frame to drop (a repeated or backwards timestamp); raises at lost data."""
        if self.last is not None:
            if pts_time <= self.last:
                return False  # broken muxers repeat timestamps; the first frame shown wins
            cause = self._lost_data(pts_time - self.last)
            if cause is not None:
                raise DecodeError(
                    f"{self.info.path}: decoding broke at {float(self._rel(self.last)):.1f} s: "
                    f"{float(pts_time - self.last):.1f} s of video missing ({cause})", self._rel(self.last))
        self.last = pts_time
        self._reports = [(t, what) for t, what in self._reports if t + DAMAGE_REPORT_SECONDS >= pts_time]
        return True

    def _lost_data(self, gap: Fraction) -> str | None:
        """Why a jump of `gap` seconds after the last frame is lost data, or None for a held frame."""
        if gap <= max(MAX_GAP_SECONDS, HELD_FRAME_INTERVALS * self.info.frame_duration):
            return None
        if self._reports:
            return self._reports[0][1]
        return None if self.damage_visible else "corrupt data"

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
        if decoded_end - info.end_time > TRUNCATION_TOLERANCE_SECONDS:
            log.warning("%s: frames run to %.1f s, past the %.1f s its container states; the rows cover "
                        "the stated duration", info.path, float(self._rel(decoded_end)), float(info.duration))

    def _rel(self, t: Fraction) -> Fraction:
        return t - self.info.start_time


class PyAVDecoder:
    """FFmpeg via PyAV, frame and slice threading on; only the few frames in flight are in memory.

    With a `keyframe` (decode_segments.py), decoding starts there instead of at the start of the
    file, and frames shown before that keyframe are not yielded."""

    name = "cpu"
    gpu_stream = None

    def __init__(self, info: VideoInfo, threads: int = 0, keyframe: Keyframe | None = None):
        self.info = info
        self.keyframe = keyframe
        self.container = open_container(info.path)
        self.stream = self.container.streams[info.stream_index]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads  # 0 = FFmpeg picks (one per core)

    def frames(self) -> Iterator[PyAVFrame]:
        info = self.info
        checker = FrameTimeChecker(info, damage_visible=damage_visible(info.container))
        tiles = info.container in TILING_CONTAINERS
        time_base = Fraction(self.stream.time_base)
        keyframe = self.keyframe
        start = keyframe.pts * time_base if keyframe is not None else None
        number = 0
        try:
            # Every stream's packets: in a container that tiles the file, bytes skipped between
            # any two packets are lost data.
            for packet in self._packets():
                video = packet.stream.index == self.stream.index  # (flush packets carry no stream_index)
                if video and packet.is_corrupt:
                    checker.damaged("the demuxer marked a packet corrupt")
                checker.packet(packet.pos if tiles else None, packet.size,
                               packet.pts * time_base if video and packet.pts is not None else None)
                if not video:
                    continue
                for frame in packet.decode():
                    pts_time = checker.frame_time(frame.pts * time_base if frame.pts is not None else None)
                    if start is not None and pts_time < start:
                        continue  # a leading picture of an open GOP: the previous segment's
                    if not checker.accept(pts_time):
                        continue
                    yield PyAVFrame(pts_time, number, frame, info.rotation)
                    number += 1
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise checker.broke(getattr(e, "strerror", None) or str(e) or type(e).__name__) from None
        checker.finish()

    def _packets(self):
        """The file's packets from the start, or from the segment's keyframe: sought as the plan
        sought it, so what the demuxer read (or skipped) before it is the previous segment's."""
        if self.keyframe is not None:
            packet = first_keyframe_after_seek(self.container, self.stream, self.keyframe.seek_pts)
            if packet is None or packet.pts != self.keyframe.pts:
                start = self.keyframe.pts * Fraction(self.stream.time_base)
                raise DecodeError(f"{self.info.path}: seeking to the keyframe at {float(start):.1f} s reached "
                                  f"{'the end' if packet is None else f'pts {packet.pts}'} instead",
                                  start - self.info.start_time)
            yield packet
        yield from self.container.demux()

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
