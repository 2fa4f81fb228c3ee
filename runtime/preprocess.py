"""Stage 4: one RGB frame -> the model's float32 [3, S, S] input. The one definition of the math.

What runs is the bundle's `Preprocessing` (runtime/bundle.py), which for the reference is section 4
of the reference facts: /255, resize so the short side is 224 (bilinear, half-pixel centres, no
antialiasing; the long side becomes floor(long / short * 224); skipped when the short side is
already 224), centre crop 224 at offset round((long' - 224) / 2) with Python's round-half-to-even,
channels first. Bundles may ask for another short side and crop, a mean and std, or BGR. Pixels
that are not square (anamorphic PAL/NTSC, 1440x1080 HDV) are resized to the picture's displayed
proportions in the same single resize, each axis with its own scale.

Written against the array API subset that NumPy and CuPy share (`xp` is either module), so the
CPU and GPU paths run the same lines. The resize is separable and computed as two gathers of the
two neighbouring source rows/columns plus a weighted sum (not a dense interpolation matrix), and
only for the output pixels that survive the crop. The gathers read the uint8 frame directly and
the /255 is applied once at the end: the maths is linear, so this equals /255-then-resize up to
float32 rounding (~1e-7) while touching each source pixel once in float. The scale is applied as a
division by 1 / value_scale when that is a whole number (255 for the reference), which is what the
reference computes.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from .bundle import Preprocessing


def array_module(array):
    """numpy for NumPy arrays, cupy for CuPy arrays (imported only when a CuPy array is seen)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def resized_long_side(long, short, size: int) -> int:
    # floor(long / short * size) in integers (or exact fractions): in floats, a ratio whose exact
    # result is an integer can land just below it and floor to one pixel less.
    return int((long * size) // short)


def resized_shape(height: int, width: int, short_side: int, pixel_aspect: Fraction = Fraction(1)) -> tuple[int, int]:
    """(H', W'): the picture as shown (stored width times the pixel aspect) with its short side
    scaled to `short_side`, the long side floored. Square pixels whose short side is already
    `short_side` keep their size."""
    shown_width = width * pixel_aspect
    if height <= shown_width:
        return short_side, resized_long_side(shown_width, height, short_side)
    return resized_long_side(height, shown_width, short_side), short_side


def crop_offset(resized: int, size: int) -> int:
    return round((resized - size) / 2)  # Python's round: half to even, as the reference


def axis_taps(in_size: int, out_size: int, first: int, count: int):
    """Source indices and weights for output pixels first .. first+count-1 of a half-pixel resize.

    Output pixel x samples source coordinate (x + 0.5) * in/out - 0.5, clamped below at 0 (the
    align_corners=False convention); the right neighbour is clamped to the last pixel.
    """
    scale = in_size / out_size
    x = np.arange(first, first + count, dtype=np.float64)
    src = np.maximum((x + 0.5) * scale - 0.5, 0.0)
    left = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    weight = (src - left).astype(np.float32)
    return left, right, weight


# Every frame of a video has the same size: the taps are computed once, not per frame.
@functools.lru_cache(maxsize=16)
def resize_plan(height: int, width: int, short_side: int, crop: int, pixel_aspect: Fraction = Fraction(1)):
    """Per axis (rows, columns): None when the picture is only cropped, else the gather taps of
    each axis, plus the crop offset."""
    out_h, out_w = resized_shape(height, width, short_side, pixel_aspect)
    top, left = crop_offset(out_h, crop), crop_offset(out_w, crop)
    if (out_h, out_w) == (height, width):
        return None, None, top, left
    return axis_taps(height, out_h, top, crop), axis_taps(width, out_w, left, crop), top, left


def preprocess_frame(rgb, spec: Preprocessing, xp=None, pixel_aspect: Fraction = Fraction(1)):
    """H x W x 3 uint8 RGB -> float32 [3, crop, crop], as the bundle's `spec` says. `pixel_aspect`
    (a pixel's width over its height as displayed: 64/45 for 16:9 PAL) is undone by the resize, so
    the model sees the picture in the proportions players show."""
    if xp is None:
        xp = array_module(rgb)
    height, width = rgb.shape[0], rgb.shape[1]
    if min(height, width) < 1:
        raise ValueError("empty frame")
    size = spec.crop_size
    rows, cols, top, left = resize_plan(height, width, spec.short_side, size, pixel_aspect)
    if rows is None:
        result = rgb[top:top + size, left:left + size].astype(xp.float32)
    else:
        # Reduce the longer axis first: its first pass then works on the short side's rows only.
        if width >= height:
            tmp = _gather_axis(xp, rgb, cols, axis=1)  # H x size x 3
            result = _gather_axis(xp, tmp, rows, axis=0)  # size x size x 3
        else:
            tmp = _gather_axis(xp, rgb, rows, axis=0)
            result = _gather_axis(xp, tmp, cols, axis=1)
    if spec.channel_order == "BGR":
        result = result[..., ::-1]
    result = _scaled(xp, xp.transpose(result, (2, 0, 1)), spec.value_scale)
    if spec.normalises:
        result = (result - xp.asarray(spec.mean, dtype=xp.float32)[:, None, None]) / \
            xp.asarray(spec.std, dtype=xp.float32)[:, None, None]
    return xp.ascontiguousarray(result, dtype=xp.float32)


def _scaled(xp, values, scale: float):
    divisor = 1 / scale
    if divisor == round(divisor):
        return values / xp.float32(divisor)  # the reference's /255, exactly
    return values * xp.float32(scale)


def _gather_axis(xp, image, taps, axis: int):
    lo, hi, weight = (xp.asarray(a) for a in taps)
    a = xp.take(image, lo, axis=axis).astype(xp.float32)
    b = xp.take(image, hi, axis=axis).astype(xp.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    weight = xp.reshape(weight, tuple(shape))
    return a + (b - a) * weight

