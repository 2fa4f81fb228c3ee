"""Stage 3: which windows (rows) to compute and which frame times each one needs.

All times are exact `Fraction`s in seconds on the stream clock, so frame rates like 30000/1001
and millisecond-rounded MKV timestamps never accumulate float error. Frames are chosen by
presentation time (`FrameSelector`), which works for variable frame rate too; for a constant
frame rate, selecting time `start + k / fps` gives frame k.

NumPy is used for one thing: the reference's `linspace(...).astype(int)`, reproduced with the
same float arithmetic so that parity mode picks exactly the reference's frame indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Iterable

import numpy as np

from .errors import InputError
from .bundle import Window
from .probe import VideoInfo

ALIGNMENTS = ("center", "reference")


@dataclass(frozen=True)
class WindowPlan:
    align: str
    frames_per_window: int
    window_seconds: Fraction
    stride_seconds: Fraction  # 1 / rows per second
    row_times: list[tuple[Fraction, ...]]  # per row, its frame times on the stream clock (non-decreasing)
    row_centres: list[Fraction]  # per row, its window's centre in seconds from the start of the video
    tolerance: Fraction  # a quarter of the nominal frame duration
    frame_time_rule: str
    reference_indices: list[tuple[int, ...]] | None = field(default=None)  # parity mode only
    # The upright picture's pixel width over height as displayed (VideoInfo.pixel_aspect): how the
    # frames these times pick are to be read.
    pixel_aspect: Fraction = Fraction(1)

    @property
    def rows(self) -> int:
        return len(self.row_times)

    @property
    def rate(self) -> Fraction:
        """Rows per second."""
        return 1 / self.stride_seconds

    def subset(self, rows: range) -> "WindowPlan":
        """The plan of `rows` alone: its row i is row rows[i] of this one (a decoder's share, decode_segments.py)."""
        part = slice(rows.start, rows.stop)
        return replace(self, row_times=self.row_times[part], row_centres=self.row_centres[part],
                       reference_indices=None if self.reference_indices is None else self.reference_indices[part])


def row_centres(align: str, rows: int, stride, window_seconds) -> list[Fraction]:
    """Where each row sits: its window's centre in seconds from the start of the video. `center`:
    row i is the slot [i, i + 1) x stride, its window centred on the slot's middle; `reference`:
    row i's window starts at i x stride."""
    stride, window_seconds = Fraction(stride), Fraction(window_seconds)
    if align == "center":
        return [(i + Fraction(1, 2)) * stride for i in range(rows)]
    if align == "reference":
        return [i * stride + window_seconds / 2 for i in range(rows)]
    raise InputError(f"unknown alignment {align!r} (center or reference)")


def center_times(info: VideoInfo, window: Window, stride: Fraction) -> list[tuple[Fraction, ...]]:
    """Each row's frame times: `window.frames` evenly spread over the window around its centre."""
    spacing = window.seconds / (window.frames - 1)
    return [tuple(info.start_time + c - window.seconds / 2 + k * spacing for k in range(window.frames))
            for c in row_centres("center", math.ceil(info.duration / stride), stride, window.seconds)]


def reference_indices(length_seconds: int, fps: Fraction, frame_count: int, window: Window,
                      stride: Fraction) -> list[tuple[int, ...]]:
    """Section 3 of the reference facts, exactly at its stride of 1 s, and the same rule at others:
    window i covers [i * stride, i * stride + seconds]; the windows end at least a second before the
    whole seconds L (one 5-s window needs 6 s); frame indices are the truncated inclusive linspace."""
    rows = math.floor((length_seconds - 1 - window.seconds) / stride) + 1 if length_seconds - 1 >= window.seconds else 0
    out = []
    for i in range(rows):
        start = math.floor(i * stride * fps)
        end = math.floor((i * stride + window.seconds) * fps)
        if end == frame_count:
            end -= 1
        out.append(tuple(int(v) for v in np.linspace(start, end, window.frames).astype(int)))
    return out


def frame_time_rule(align: str, window: Window, stride: Fraction) -> str:
    """How the plan picks each row's frames, in words (the metadata records it)."""
    seconds, step = f"{float(window.seconds):g}", f"{float(stride):g}"
    if align == "center":
        return (f"row i is the window of {seconds} s centred on (i + 0.5) x {step} s; its {window.frames} frames are "
                "spaced window/(frames-1) apart; each takes the frame shown at that time (last frame with "
                "pts <= t + frame_duration/4); times before the first or after the last frame take the first "
                "or last frame")
    return (f"row i covers [i x {step}, i x {step} + {seconds}] s, rows while the window ends a second before the "
            f"whole seconds L; frame indices int(linspace(floor(start*fps), floor(end*fps) [-1 if == frame "
            f"count], {window.frames})); index k is the frame shown at start + k/fps")


def stride_for(window: Window, rate: int | None) -> Fraction:
    """Seconds between rows: 1 / `rate` rows per second, or the window's own stride (1 s for the reference)."""
    return Fraction(1, rate) if rate else window.stride_seconds


def plan_windows(info: VideoInfo, window: Window, align: str = "center", rate: int | None = None) -> WindowPlan:
    """The rows of `info` for a model looking through `window`, `rate` rows per second (`stride_for`)."""
    stride = stride_for(window, rate)
    tolerance = info.frame_duration / 4
    rule = frame_time_rule(align, window, stride)
    if align == "center":
        times = center_times(info, window, stride)
        return WindowPlan("center", window.frames, window.seconds, stride, times,
                          row_centres(align, len(times), stride, window.seconds), tolerance, rule,
                          pixel_aspect=info.pixel_aspect)
    if align == "reference":
        indices = reference_indices(int(info.duration), info.fps, info.frame_count_estimate, window, stride)
        if not indices:
            raise InputError(f"{info.path}: {float(info.duration):.1f} s is too short for --align reference "
                             f"(needs at least {float(window.seconds) + 1:g} s: one {float(window.seconds):g}-s "
                             "window plus the reference's last second)")
        times = [tuple(info.start_time + Fraction(k) / info.fps for k in row) for row in indices]
        return WindowPlan("reference", window.frames, window.seconds, stride, times,
                          row_centres(align, len(times), stride, window.seconds), tolerance, rule,
                          reference_indices=indices, pixel_aspect=info.pixel_aspect)
    raise InputError(f"unknown alignment {align!r} (center or reference)")


class FrameSelector:
    """Matches a stream of frames to sorted target times: the frame shown at t is the last frame
    with pts <= t + tolerance; targets before the first frame take the first frame, targets after
    the last frame take the last one (at end of stream).

    `feed(frame)` returns the (target index, frame) pairs that frame's arrival settles: a target is
    settled by the previous frame as soon as a frame later than the target arrives.
    """

    def __init__(self, targets: list[Fraction], tolerance: Fraction):
        self.targets = targets
        self.tolerance = tolerance
        self.next_target = 0
        self.previous = None

    def feed(self, frame) -> list[tuple[int, object]]:
        settled: list[tuple[int, object]] = []
        while self.next_target < len(self.targets) and frame.pts_time > self.targets[self.next_target] + self.tolerance:
            # The frame before this one was on screen at the target time (or, before the first
            # frame, this first frame stands in for it).
            settled.append((self.next_target, self.previous if self.previous is not None else frame))
            self.next_target += 1
        self.previous = frame
        return settled

    def finish(self, until: Fraction | None = None) -> list[tuple[int, object]]:
        """Settle the remaining targets with the last frame (all of them, or those <= `until`)."""
        settled: list[tuple[int, object]] = []
        while self.next_target < len(self.targets) and self.previous is not None:
            if until is not None and self.targets[self.next_target] > until:
                break
            settled.append((self.next_target, self.previous))
            self.next_target += 1
        return settled

    @property
    def done(self) -> bool:
        return self.next_target >= len(self.targets)


def unique_targets(row_times: Iterable[tuple[Fraction, ...]]) -> tuple[list[Fraction], list[tuple[int, ...]]]:
    """The sorted distinct frame times of all rows, and each row's times as indices into them."""
    targets = sorted({t for row in row_times for t in row})
    position = {t: j for j, t in enumerate(targets)}
    return targets, [tuple(position[t] for t in row) for row in row_times]
