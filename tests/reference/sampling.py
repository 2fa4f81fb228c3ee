"""The reference's parity-mode windows and frame indices, from docs/reference.md §3:
N = int(L - 5) rows, row i covers [i, i + 5] s, 16 frame indices by an inclusive linspace
truncated to integers."""
from __future__ import annotations

import math

import numpy as np

FRAMES_PER_WINDOW = 16
WINDOW_SECONDS = 5

# Section 3's worked example: at 25 fps row i uses 25 i + these offsets.
OFFSETS_AT_25_FPS = (0, 8, 16, 25, 33, 41, 50, 58, 66, 75, 83, 91, 100, 108, 116, 125)


def reference_row_count(length_seconds) -> int:
    whole_seconds = int(length_seconds)  # the reference's L is in whole seconds
    return max(int(whole_seconds - WINDOW_SECONDS), 0)


def reference_frame_indices(row: int, fps: float, frame_count: int) -> np.ndarray:
    start = math.floor(row * fps)
    end = math.floor((row + WINDOW_SECONDS) * fps)
    if end == frame_count:  # the reference's guard against indexing one past the last frame
        end -= 1
    return np.linspace(start, end, FRAMES_PER_WINDOW).astype(np.int64)


def reference_rows(length_seconds, fps: float, frame_count: int) -> np.ndarray:
    """[N, 16] int64 frame indices, one row per second (left-aligned 5-s windows)."""
    rows = [reference_frame_indices(i, fps, frame_count)
            for i in range(reference_row_count(length_seconds))]
    return np.array(rows, dtype=np.int64).reshape(len(rows), FRAMES_PER_WINDOW)
