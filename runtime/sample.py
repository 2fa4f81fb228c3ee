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
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable

import numpy as np

from .errors import InputError
from .probe import VideoInfo

WINDOW_SECONDS = Fraction(5)
STRIDE_SECONDS = Fraction(1)
ALIGNMENTS = ("center", "reference")

FRAME_TIME_RULES = {
    "center": "row i is the window centred on i + 0.5 s; its frames are spaced window/(frames-1) apart; "
              "each takes the frame shown at that time (last frame with pts <= t + frame_duration/4); "
              "times before the first or after the last frame take the first or last frame",
    "reference": "rows i = 0 .. int(L - 5) - 1 (L = whole seconds); frame indices "
                 "int(linspace(floor(i*fps), floor((i+5)*fps) [-1 if == frame count], frames)); "
                 "index k is the frame shown at start + k/fps",
}


@dataclass(frozen=True)
class WindowPlan:
    align: str
    frames_per_window: int
    window_seconds: Fraction
    stride_seconds: Fraction
    row_times: list[tuple[Fraction, ...]]  # per row, its frame times (non-decreasing)
    tolerance: Fraction  # a quarter of the nominal frame duration
    frame_time_rule: str
    reference_indices: list[tuple[int, ...]] | None = field(default=None)  # parity mode only

    @property
    def rows(self) -> int:
        return len(self.row_times)


def center_times(info: VideoInfo, frames: int = 16, window: Fraction = WINDOW_SECONDS) -> list[tuple[Fraction, ...]]:
    rows = math.ceil(info.duration)
    spacing = window / (frames - 1)
    return [
        tuple(info.start_time + i + Fraction(1, 2) - window / 2 + k * spacing for k in range(frames))
        for i in range(rows)
    ]


def reference_indices(length_seconds: int, fps: Fraction, frame_count: int, frames: int = 16) -> list[tuple[int, ...]]:
    """Section 3 of the reference facts, exactly: left-aligned windows, truncated inclusive linspace."""
    rows = int(length_seconds - 5)
    out = []
    for i in range(max(rows, 0)):
        start = math.floor(i * fps)
        end = math.floor((i + 5) * fps)
        if end == frame_count:
            end -= 1
        out.append(tuple(int(v) for v in np.linspace(start, end, frames).astype(int)))
    return out


def plan_windows(info: VideoInfo, align: str = "center", frames: int = 16) -> WindowPlan:
    tolerance = info.frame_duration / 4
    if align == "center":
        return WindowPlan("center", frames, WINDOW_SECONDS, STRIDE_SECONDS, center_times(info, frames),
                          tolerance, FRAME_TIME_RULES["center"])
    if align == "reference":
        length = int(info.duration)
        indices = reference_indices(length, info.fps, info.frame_count_estimate, frames)
        if not indices:
            raise InputError(f"{info.path}: {float(info.duration):.1f} s is too short for --align reference "
                             f"(needs at least 6 s: one 5-s window plus the reference's last second)")
        times = [tuple(info.start_time + Fraction(k) / info.fps for k in row) for row in indices]
        return WindowPlan("reference", frames, WINDOW_SECONDS, STRIDE_SECONDS, times, tolerance,
                          FRAME_TIME_RULES["reference"], reference_indices=indices)
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
