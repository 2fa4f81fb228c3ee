"""Stage 2 split K ways: one video decoded by K decoders at once, each starting at its own keyframe.

Why: H.264 and HEVC must decode every frame, so on a GPU decoding, not the model, bounds a
video's time; an H100 has seven NVDEC engines and one decoder keeps one busy. On the CPU,
FFmpeg's frame threading already spreads one decoder over the cores, so K is 1 there unless
cores are left over after inference.

How the split stays exact (docs/design.md, "Many decoders"):
- `keyframe_starts` seeks PyAV's demuxer to k/K of the video and takes the first keyframe
  packet it reaches; segment k starts at that keyframe's presentation time. A segment's decoder
  seeks the same way (NVDEC's demuxer reads up to the same packet) and drops whatever it outputs
  before its start: the leading pictures of an open GOP, which reference the previous GOP
  (FFmpeg drops them itself, NVDEC would output them damaged). From a keyframe on, a decoder
  gives the pictures one that came from the start of the file gives (a closed GOP's IDR resets
  the decoder; an open GOP's keyframe is a recovery point that later pictures do not reach
  past); tests/test_decode_segments.py checks it bit for bit.
- Rows, not frames, are split (`split_rows`): segment k computes the rows whose first frame is
  shown at or after its start, and decodes past the next segment's start until the frames of
  its last row are settled, so a window that straddles a boundary gets the frames one decoder
  would give it. Segments never wait for one another: the buffers grow with K, not with the
  video.
- Each decoder checks its own frame times (`FrameTimeChecker`). Segment k reads from its
  keyframe to at least the next segment's first frame, so every jump in frame times and every
  damaged byte is seen by a decoder that read the data around it; the pipeline reports the
  earliest break, as one decoder would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av

from .probe import VideoInfo, open_container, probe_video
from .sample import WindowPlan

log = logging.getLogger("tsf")

# On the CPU each decoder brings FFmpeg threads of its own; past this many the Python work per
# frame (selection, timestamps) of the segments' threads contends for the interpreter.
MAX_CPU_DECODERS = 8


@dataclass(frozen=True)
class Keyframe:
    """Where a segment's decoder starts: seek to `seek_pts`, then the first keyframe packet of
    the video stream is the one with presentation time `pts` (both in the stream's time base)."""

    seek_pts: int
    pts: int


@dataclass(frozen=True)
class Segment:
    """One decoder's share of a video: the rows it computes and where its decoding starts."""

    index: int
    rows: range  # rows of the WindowPlan, contiguous
    keyframe: Keyframe | None  # None: the start of the file
    start: Fraction | None  # the keyframe's time in seconds on the stream clock (None: the file's start)
    end: Fraction | None  # the next segment's start (None: the last segment, decoded to the end)


def choose_decoders(requested: int | None, decoder_name: str, engines: int | None, cpus_left: int,
                    sharing: int = 1) -> tuple[int, str]:
    """How many decoders one video gets, and why (the one place K is chosen).

    `decoder_name` is the first decoder opened ("nvdec" or "cpu"), `engines` the NVDEC engines
    of its GPU (GetDecoderCaps' num_decoder_engines), `cpus_left` the CPUs not taken by CPU
    inference, `sharing` how many videos run at once on this machine.
    """
    shared = f", shared by {sharing} videos at once" if sharing > 1 else ""
    if requested:
        return requested, f"--decoders {requested}"
    if decoder_name == "nvdec":
        engines = max(1, engines or 1)
        return max(1, engines // sharing), f"this GPU has {engines} NVDEC engine{'s' * (engines > 1)}{shared}"
    reason = f"{max(cpus_left, 0)} CPU{'s' * (cpus_left != 1)} left after inference"
    if cpus_left > MAX_CPU_DECODERS:
        reason += f", at most {MAX_CPU_DECODERS}"
    return max(1, min(cpus_left, MAX_CPU_DECODERS) // sharing), reason + shared


def choose_videos_at_once(requested: int | None, videos: int, engines: int | None) -> tuple[int, str]:
    """How many videos one process runs at once, sharing its engine, and why: with NVDEC, one per
    engine (each then gets engines // videos decoders, `choose_decoders`); else one, since CPU
    inference takes every core."""
    if requested:
        return min(requested, max(videos, 1)), f"--videos-at-once {requested}"
    if videos <= 1:
        return 1, "one video"
    if not engines:
        return 1, "decoding on the CPU, where inference takes the cores"
    return min(videos, engines), f"this GPU has {engines} NVDEC engine{'s' * (engines > 1)}"


def keyframe_starts(info: VideoInfo, count: int) -> list[Keyframe]:
    """Up to `count - 1` keyframes near k/count of the video (k = 1 .. count-1), strictly after
    its first frame and in increasing order; fewer when keyframes are scarce (duplicates are
    dropped), none when the container cannot seek or its timestamps restart (the video is then
    decoded in one piece: after a restart only the frames before it tell where a frame belongs)."""
    if count < 2 or info.duration <= 0 or info.timestamp_restarts:
        return []
    if info.timestamps_may_restart and probe_video(info.path, scan_restarts=True).timestamp_restarts:
        # A restart the probe did not look for is met by one decoder reading the file in order
        # (the video is then probed again, Extractor.extract); a decoder that seeks by time could
        # land past it, in the other recording. So the file's timestamps are read through first.
        return []
    found: list[Keyframe] = []
    try:
        with open_container(info.path) as container:
            stream = container.streams[info.stream_index]
            time_base = Fraction(stream.time_base)
            for k in range(1, count):
                target = info.start_time + info.duration * k / count
                seek_pts = int(target / time_base)
                packet = first_keyframe_after_seek(container, stream, seek_pts)
                if packet is None or packet.pts * time_base <= info.start_time or (found and packet.pts <= found[-1].pts):
                    continue
                found.append(Keyframe(seek_pts, packet.pts))
    except (av.error.FFmpegError, ValueError, OSError) as e:
        log.info("%s: cannot seek in it (%s); decoding it in one piece", info.path.name,
                 getattr(e, "strerror", None) or e)
        return []
    return found


def first_keyframe_after_seek(container, stream, seek_pts: int):
    """Seek `container` to the keyframe at or before `seek_pts` (FFmpeg's backward seek; some
    demuxers land later) and return the first keyframe packet of `stream` read after it (every
    stream is read, as the decoder reads them), leaving the demuxer just past it; None at the end."""
    container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
    for packet in container.demux():
        if packet.stream.index == stream.index and packet.is_keyframe and packet.pts is not None:
            return packet
    return None


def split_rows(plan: WindowPlan, info: VideoInfo, keyframes: list[Keyframe]) -> list[Segment]:
    """The rows of `plan` shared among one segment per start (the file's start, then `keyframes`):
    a row belongs to the last segment starting at or before the frame shown at its first time.
    Segments left without rows are dropped (the previous one decodes through them)."""
    time_base = info.time_base
    starts: list[tuple[Keyframe | None, Fraction | None]] = [(None, None)]
    starts += [(key, key.pts * time_base) for key in keyframes]
    first_rows = []
    row = 0
    for _, start in starts:
        # The frame shown at t is the last one with pts <= t + tolerance (sample.FrameSelector).
        while start is not None and row < plan.rows and plan.row_times[row][0] + plan.tolerance < start:
            row += 1
        first_rows.append(row)
    first_rows.append(plan.rows)
    kept = [(key, start, range(first_rows[i], first_rows[i + 1])) for i, (key, start) in enumerate(starts)
            if first_rows[i] < first_rows[i + 1]]
    return [Segment(i, rows, key, start, kept[i + 1][1] if i + 1 < len(kept) else None)
            for i, (key, start, rows) in enumerate(kept)]
