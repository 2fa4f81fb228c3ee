"""Training augmentation and validation preprocessing of a window's frames, in NumPy.

Training: short side resized to an integer drawn from U[225, 256], a random 224 crop, a
horizontal flip with p = 0.5, the same for all frames of a sample. Validation: short side 224 and
the centre crop, the runtime's preprocessing (docs/reference.md §4): /255, bilinear with
half-pixel centres and no antialiasing, long side floor(long / short * size), crop offset rounded
half-to-even. No mean/std.

Only the output pixels inside the crop are interpolated: bilinear resizing is separable and
each output row/column has its own two source taps, so resize-then-crop equals interpolating the
cropped rows and columns directly, at a fraction of the cost.

Dependencies: NumPy.
"""

from __future__ import annotations

import math

import numpy as np


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after scaling the short side to `short_side`; the long side is floored."""
    if height <= width:
        return short_side, int(math.floor(width / height * short_side))
    return int(math.floor(height / width * short_side)), short_side


def bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centre source taps (lo, hi, weight of hi) for each output index."""
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * size_in / size_out - 0.5
    src = np.clip(src, 0.0, size_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resized_crop(frames: np.ndarray, resized_hw: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T, size, size, 3] in [0, 1]: resize to `resized_hw`, crop."""
    _, height, width, _ = frames.shape
    lo_y, hi_y, wy = (a[top:top + size] for a in bilinear_taps(height, resized_hw[0]))
    lo_x, hi_x, wx = (a[left:left + size] for a in bilinear_taps(width, resized_hw[1]))
    wy = wy[None, :, None, None]
    wx = wx[None, None, :, None]
    rows = frames[:, lo_y].astype(np.float32) / 255 * (1 - wy) + frames[:, hi_y].astype(np.float32) / 255 * wy
    return rows[:, :, lo_x] * (1 - wx) + rows[:, :, hi_x] * wx


def to_model_layout(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] -> C x T x H x W, contiguous float32."""
    return np.ascontiguousarray(frames.transpose(3, 0, 1, 2), dtype=np.float32)


def eval_transform(frames: np.ndarray, size: int = 224) -> np.ndarray:
    """Short side `size`, centre crop at round-half-even offsets -> float32 [3, T, size, size]."""
    h, w = resized_shape(frames.shape[1], frames.shape[2], size)
    top, left = round((h - size) / 2), round((w - size) / 2)  # Python's round: half to even
    return to_model_layout(resized_crop(frames, (h, w), top, left, size))


def train_transform(frames: np.ndarray, rng: np.random.Generator, size: int = 224,
                    short_side_range: tuple[int, int] = (225, 256), flip_probability: float = 0.5) -> np.ndarray:
    """Random short side in the inclusive range, random crop, random flip -> float32 [3, T, size, size]."""
    short = int(rng.integers(short_side_range[0], short_side_range[1] + 1))
    h, w = resized_shape(frames.shape[1], frames.shape[2], short)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    out = resized_crop(frames, (h, w), top, left, size)
    if rng.random() < flip_probability:
        out = out[:, :, ::-1]
    return to_model_layout(out)
