"""Stage 1: what a video file is, read from the container itself (never from the user).

PyAV (FFmpeg's demuxers) is the one dependency: it opens every container the decoders can read,
so the probe and the CPU decoder agree on streams, time bases and timestamps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import InputError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    size_bytes: int
    mtime: float
    container: str
    stream_index: int
    codec: str
    width: int
    height: int
    fps: Fraction  # nominal (average) rate; VFR files are sampled by timestamp, not by this
    time_base: Fraction
    start_time: Fraction  # seconds on the stream clock where the video starts
    duration: Fraction  # seconds of video from start_time
    frame_count_estimate: int  # the container's count, else round(duration * fps)
    # FFmpeg's AVColorSpace and AVColorRange codes: how the CPU path's YUV->RGB (swscale) converts
    # this stream, which a GPU decoder must reproduce (runtime/colour.py). 2 and 0: untagged.
    colorspace: int = 2
    color_range: int = 0

    @property
    def end_time(self) -> Fraction:
        return self.start_time + self.duration

    @property
    def frame_duration(self) -> Fraction:
        return 1 / self.fps


def open_container(path: Path):
    """av.open with every FFmpeg failure turned into a one-line InputError."""
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable video ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__


def pick_video_stream(container):
    """The video stream to extract from: the first real video stream.

    Broadcast files also carry audio, teletext/subtitle and data streams, and some containers
    store cover art as a one-frame "video" stream flagged attached_pic: those are skipped.
    """
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")
    stat = path.stat()
    if stat.st_size == 0:
        raise InputError(f"{path}: empty file")
    with open_container(path) as container:
        stream = pick_video_stream(container)
        if stream is None:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise InputError(f"{path}: no video stream (contains {kinds})")
        ctx = stream.codec_context
        if ctx is None or not ctx.name:
            raise InputError(f"{path}: video stream {stream.index} has an unsupported codec")
        try:
            av.codec.Codec(ctx.name, "r")
        except (av.error.FFmpegError, ValueError):
            raise InputError(f"{path}: no decoder for codec {ctx.name!r}") from None
        if not ctx.width or not ctx.height:
            raise InputError(f"{path}: video stream {stream.index} has no frame size")

        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps or fps <= 0:
            raise InputError(f"{path}: cannot determine the frame rate")
        fps = Fraction(fps)
        time_base = Fraction(stream.time_base)

        if stream.start_time is not None:
            start = stream.start_time * time_base
        elif container.start_time is not None:
            start = Fraction(container.start_time, av.time_base)
        else:
            start = Fraction(0)
        # MKV has no per-stream duration field (and frames == 0), but its muxers write a per-track
        # DURATION tag; the container's duration is the longest stream's, which may be the audio.
        if stream.duration:
            duration = stream.duration * time_base
        elif _tag_duration(stream.metadata):
            duration = _tag_duration(stream.metadata)
        elif container.duration:
            duration = Fraction(container.duration, av.time_base) - (start - _container_start(container))
        else:
            raise InputError(f"{path}: the container states no duration")
        if duration <= 0:
            raise InputError(f"{path}: video has no duration")
        frames = stream.frames or round(duration * fps)
        return VideoInfo(
            path=path.resolve(),
            size_bytes=stat.st_size,
            mtime=stat.st_mtime,
            container=container.format.name,
            stream_index=stream.index,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=fps,
            time_base=time_base,
            start_time=start,
            duration=duration,
            frame_count_estimate=int(frames),
            colorspace=int(ctx.colorspace),
            color_range=int(ctx.color_range),
        )


def _tag_duration(metadata) -> Fraction | None:
    """Matroska's per-track DURATION tag, "HH:MM:SS.fffffffff", as exact seconds."""
    text = next((v for k, v in (metadata or {}).items() if k.upper() == "DURATION"), None)
    try:
        hours, minutes, seconds = str(text).strip().split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
    except (ValueError, TypeError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _container_start(container) -> Fraction:
    return Fraction(container.start_time, av.time_base) if container.start_time is not None else Fraction(0)
