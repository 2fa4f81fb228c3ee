"""Float64 per-frame preprocessing, from docs/reference.md §4.

RGB uint8 [H, W, 3] -> /255 -> bilinear resize of the short side to 224 (half-pixel centres,
align_corners false, source coordinate clamped at 0, neighbour clamped at the edge, no
antialiasing; long side floor(long / short * 224); skipped when the short side is already 224)
-> centre crop 224 x 224 at offset round((W' - 224) / 2) (Python round: half to even)
-> float64 [3, 224, 224]. No mean/std normalisation.

Written with explicit per-axis gathers (no cv2/PIL) so the arithmetic is visible and exact.
"""
from __future__ import annotations

import numpy as np

SIZE = 224


def resized_shape(height: int, width: int, short_side: int = SIZE) -> tuple[int, int]:
    """(H', W') after scaling the short side to `short_side`; long side floor(long/short*size)."""
    if height <= width:
        return short_side, int(np.floor(width / height * short_side))
    return int(np.floor(height / width * short_side)), short_side


def _bilinear_axis(in_size: int, out_size: int):
    """Neighbour indices and weights for one axis (half-pixel, clamped at both ends)."""
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    return lo, hi, frac


def bilinear_resize(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """image [H, W, C] float64 -> [out_height, out_width, C], separable bilinear."""
    in_height, in_width = image.shape[:2]
    lo, hi, frac = _bilinear_axis(in_height, out_height)
    image = image[lo] * (1.0 - frac)[:, None, None] + image[hi] * frac[:, None, None]
    lo, hi, frac = _bilinear_axis(in_width, out_width)
    return image[:, lo] * (1.0 - frac)[None, :, None] + image[:, hi] * frac[None, :, None]


def crop_offset(resized: int, size: int = SIZE) -> int:
    return round((resized - size) / 2)  # Python round: half to even, as the reference


def reference_preprocess(rgb_uint8: np.ndarray, size: int = SIZE) -> np.ndarray:
    """One decoded RGB frame [H, W, 3] uint8 -> float64 [3, size, size] in [0, 1]."""
    rgb = np.asarray(rgb_uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 frame, got {rgb.shape} {rgb.dtype}")
    image = rgb.astype(np.float64) / 255.0
    height, width = image.shape[:2]
    if min(height, width) != size:
        height, width = resized_shape(height, width, size)
        image = bilinear_resize(image, height, width)
    top, left = crop_offset(height, size), crop_offset(width, size)
    return image[top:top + size, left:left + size].transpose(2, 0, 1)
