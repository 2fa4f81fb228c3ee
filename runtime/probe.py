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

from .errors import InputError, file_kind

# A timestamp that goes back more than this in a container whose timestamps may restart (MPEG-TS
# and MPEG-PS recordings joined end to end, a broadcast whose encoder restarted) starts a new run
# of the video; FFmpeg's own command line takes the same 0.1 s as a discontinuity. Smaller steps
# back are a muxer's repeated or jittered timestamps, and the frame is dropped (decode.py).
RESTART_SECONDS = Fraction(1, 10)


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
    rotation: int = 0  # degrees (0, 90, 180, 270) players turn the picture counter-clockwise
    # FFmpeg's AVColorSpace and AVColorRange codes: how the CPU path's YUV->RGB (swscale) converts
    # this stream, which a GPU decoder must reproduce (runtime/colour.py). 2 and 0: untagged.
    colorspace: int = 2
    color_range: int = 0
    # The stored pixels' width over their height as displayed (PAL 16:9: 64/45); preprocessing
    # resizes the picture to the proportions players show (docs/reference.md, section 4).
    sample_aspect_ratio: Fraction = Fraction(1)
    # Times the timestamps restart (MPEG-TS/PS recordings joined end to end): the runs of frames are
    # joined one after another, and `duration` is their sum (decode.FrameTimeChecker).
    timestamp_restarts: int = 0
    timestamps_may_restart: bool = False  # the container's timestamps may jump (MPEG-TS/PS, Ogg)

    @property
    def end_time(self) -> Fraction:
        return self.start_time + self.duration

    @property
    def frame_duration(self) -> Fraction:
        return 1 / self.fps

    @property
    def pixel_aspect(self) -> Fraction:
        """Width over height of one pixel of the upright picture (after the display rotation)."""
        return self.sample_aspect_ratio if self.rotation % 180 == 0 else 1 / self.sample_aspect_ratio


def open_container(path: Path):
    """av.open with every FFmpeg failure turned into a one-line InputError.

    The file is opened by its absolute path: FFmpeg reads a name's text before a colon as a
    protocol (`2024-01-01T20:00.mp4`, `pipe:x.mp4`, `file:y.mp4`), and an absolute path starts with
    a slash, which no protocol name holds."""
    try:
        return av.open(os.path.abspath(path), metadata_errors="ignore")
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
    store cover art as a one-frame "video" stream, flagged attached_pic or not (a PNG or JPEG
    track muxed ahead of the video): those are skipped. A file of stills only gives its first
    still, which the probe then refuses as one.
    """
    candidates = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    moving = [s for s in candidates if not _one_frame(container, s)]
    return (moving or candidates or [None])[0]


def _one_frame(container, stream) -> bool:
    """The stream holds a single picture: flagged as a still, counted as one frame, or stated to
    last no longer than one frame."""
    if stream.frames == 1 or stream.disposition & av.stream.Disposition.still_image:
        return True
    if _metadata_value(stream.metadata, "NUMBER_OF_FRAMES") == "1":  # mkvmerge's statistics
        return True
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    start, end = stream_span(container, stream)
    return bool(rate) and end is not None and (end - start) * Fraction(rate) <= 1


def probe_video(path: str | os.PathLike, scan_restarts: bool = False) -> VideoInfo:
    """What `path` is. In a container whose timestamps may restart (MPEG-TS/PS), the whole file is
    scanned for restarts when its size says it holds more video than the container states
    (`_holds_more_than_stated`), or when `scan_restarts` says a decoder met one
    (`TimestampsRestart`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")
    stat = path.stat()
    kind = file_kind(stat.st_mode)
    if kind is not None:
        raise InputError(f"{path}: {kind}, not a video file (tsf reads files it can seek in; save a stream to "
                         "a file first)")
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
        if _is_still_image(container, stream):
            raise InputError(f"{path}: a still image ({ctx.name}), not a video")

        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps or fps <= 0:
            raise InputError(f"{path}: cannot determine the frame rate")
        fps = Fraction(fps)
        start, end = stream_span(container, stream)
        if end is None:
            raise InputError(f"{path}: the container states no duration")
        duration = end - start
        restarts = 0
        may_restart = bool(container.format.flags & TIMESTAMPS_MAY_RESTART)
        if may_restart and (scan_restarts or _holds_more_than_stated(path, stream.index, stat.st_size, duration)):
            runs = _timestamp_runs(path, stream.index)
            restarts = max(len(runs) - 1, 0)
            if restarts:  # the container's duration spans one run at most
                duration = sum(last - first + 1 / fps for first, last in runs)
        if duration <= 0:
            raise InputError(f"{path}: video has no duration")
        frames = stream.frames or round(duration * fps)
        rotation = _display_rotation(container, stream)
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
            time_base=Fraction(stream.time_base),
            start_time=start,
            duration=duration,
            frame_count_estimate=int(frames),
            rotation=rotation,
            colorspace=int(ctx.colorspace),
            color_range=int(ctx.color_range),
            sample_aspect_ratio=_sample_aspect_ratio(stream),
            timestamp_restarts=restarts,
            timestamps_may_restart=may_restart,
        )


def _sample_aspect_ratio(stream) -> Fraction:
    """The container's pixel shape if it states one, else the codec's, else square (FFmpeg's
    av_guess_sample_aspect_ratio does the same)."""
    for value in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if value is not None and value > 0:
            return Fraction(value)
    return Fraction(1)


# AVFMT_TS_DISCONT: formats whose timestamps may jump (MPEG-TS, MPEG-PS, Ogg, HLS, ...).
TIMESTAMPS_MAY_RESTART = av.format.Flags.ts_discont.value


# How much of the file's start `_holds_more_than_stated` reads, and by how much the video its size
# implies must exceed the stated duration before the whole file is scanned: far above how much a
# broadcast's bitrate varies over a half, far below the doubling of two recordings joined.
RATE_SAMPLE_BYTES = 8 << 20
MORE_THAN_STATED = Fraction(3, 2)


def _holds_more_than_stated(path: Path, stream_index: int, size: int, stated: Fraction) -> bool:
    """True when the file may hold more video than its container states, as one whose timestamps
    restart does (FFmpeg states a TS's duration from its first and last timestamps): the video
    seconds per byte of the first 8 MiB, times the file's size, against the stated duration; or a
    restart within those 8 MiB. Reading the whole file instead costs seconds per gigabyte."""
    first = last = previous = None
    read_to = 0
    with open_container(path) as container:
        stream = container.streams[stream_index]
        time_base = Fraction(stream.time_base)
        try:
            for packet in container.demux():
                if packet.pos is not None and packet.pos >= 0:
                    read_to = max(read_to, packet.pos + packet.size)
                if packet.stream.index == stream_index and packet.pts is not None:
                    pts = packet.pts * time_base
                    order = packet.dts * time_base if packet.dts is not None else pts
                    if previous is not None and order < previous - RESTART_SECONDS:
                        return True
                    previous = order
                    first = pts if first is None else min(first, pts)
                    last = pts if last is None else max(last, pts)
                if read_to >= RATE_SAMPLE_BYTES:
                    break
        except (av.error.FFmpegError, ValueError, OSError):
            return False  # damage is the decoder's to report, with its time
    if first is None or last <= first or read_to <= 0:
        return False
    return (last - first) * size / read_to > stated * MORE_THAN_STATED


def _timestamp_runs(path: Path, stream_index: int) -> list[tuple[Fraction, Fraction]]:
    """(first, last) presentation time of each run of the video stream's packets between restarts
    (a decode timestamp more than RESTART_SECONDS behind the one before), in file order.

    Reads every packet of the file (no decoding): a restart can be anywhere."""
    runs: list[list[Fraction]] = []
    previous = None
    with open_container(path) as container:
        stream = container.streams[stream_index]
        time_base = Fraction(stream.time_base)
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                pts = packet.pts * time_base
                order = packet.dts * time_base if packet.dts is not None else pts
                if previous is None or order < previous - RESTART_SECONDS:
                    runs.append([pts, pts])
                runs[-1] = [min(runs[-1][0], pts), max(runs[-1][1], pts)]
                previous = order
        except (av.error.FFmpegError, ValueError, OSError):
            pass  # damage is the decoder's to report, with its time
    return [(first, last) for first, last in runs]


# Image files open as one-frame "videos" through FFmpeg's image demuxers: image2 (chosen by the
# file name) and the *_pipe family (chosen by the content); GIF and MP4 can hold a single frame.
# A still image has no time to sample, whatever its format.
IMAGE_DEMUXERS = ("image2",)


def _is_still_image(container, stream) -> bool:
    name = container.format.name
    return name in IMAGE_DEMUXERS or name.endswith("_pipe") or _one_frame(container, stream)


def stream_span(container, stream) -> tuple[Fraction, Fraction | None]:
    """(start, end) of a video stream in seconds on its own clock; its duration is end - start.

    `start` is the time of its first frame, `end` the end of its last frame, as the container
    states them (the decoders check the claim: docs/design.md, "Duration"). Containers state
    different things, and only a length or an end time is taken as such:
    - MP4/MOV (the track's duration) and MPEG-TS (FFmpeg's estimate from the first and last
      timestamps) give `stream.duration`, a length from `start`;
    - Matroska/WebM have no per-stream duration. FFmpeg's muxer writes a per-track DURATION tag
      holding the track's END time; mkvmerge writes DURATION as a statistics tag (one listed in
      `_STATISTICS_TAGS`) holding the track's LENGTH. Without either (other muxers), the segment's
      duration (`container.duration`) is a length from the container's start.
    The end is None when nothing is stated.
    """
    time_base = Fraction(stream.time_base)
    container_start = Fraction(container.start_time, av.time_base) if container.start_time is not None else None
    if stream.start_time is not None:
        start = stream.start_time * time_base
    else:
        start = container_start if container_start is not None else Fraction(0)
    if stream.duration:
        return start, start + stream.duration * time_base
    tagged = _tag_duration(stream.metadata)
    if tagged is not None:
        return start, start + tagged if _is_statistics_tag(stream.metadata, "DURATION") else tagged
    if container.duration:
        return start, (container_start if container_start is not None else start) + Fraction(
            container.duration, av.time_base)
    return start, None


def _metadata_value(metadata, key: str) -> str | None:
    return next((str(v) for k, v in (metadata or {}).items() if k.upper() == key), None)


def _tag_duration(metadata) -> Fraction | None:
    """Matroska's per-track DURATION tag, "HH:MM:SS.fffffffff", as exact seconds."""
    try:
        hours, minutes, seconds = str(_metadata_value(metadata, "DURATION")).strip().split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
    except (ValueError, TypeError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _is_statistics_tag(metadata, key: str) -> bool:
    """mkvtoolnix lists the tags it computed (the track statistics) in _STATISTICS_TAGS."""
    return key in (_metadata_value(metadata, "_STATISTICS_TAGS") or "").split()


# Packets read looking for the first frame: enough for any decoder's start-up delay.
FIRST_FRAME_PACKETS = 64


def _display_rotation(container, stream) -> int:
    """The display matrix's rotation (phone videos), as players apply it: counter-clockwise degrees,
    a multiple of 90. FFmpeg hands it to each decoded frame, so the first frame is decoded."""
    try:
        for count, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return round((frame.rotation or 0) / 90) % 4 * 90
            if count >= FIRST_FRAME_PACKETS:
                break
    except (av.error.FFmpegError, ValueError, OSError):
        pass  # damage is the decoder's to report, with its time
    return 0
