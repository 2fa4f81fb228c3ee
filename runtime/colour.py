"""YUV 4:2:0 -> RGB the way the CPU path converts it, for frames the CPU path did not decode.

The CPU decoder hands frames to FFmpeg's swscale (PyAV's `to_ndarray(format="rgb24")`), which
converts with the stream's own colour matrix and range, and an untagged stream as BT.601 limited
range. NVDEC's built-in RGB output instead assumes BT.709 limited range, several levels away on
every pixel (docs/toolchain.md, "The GPU stack"), so the NVDEC decoder asks for NV12 and converts
here. The maths is swscale's unscaled YUV -> RGB path: each chroma sample covers its 2 x 2 block of
luma pixels (no chroma interpolation), and results are truncated to integers, not rounded.
swscale does this in fixed point, so the two agree to within 2 levels, not bit for bit
(tests/test_colour.py measures it).

Written, like preprocess.py, against the array API subset NumPy and CuPy share (`xp` is either):
the tests check the NumPy run against PyAV; the GPU runs the same lines on CuPy arrays.
"""

from __future__ import annotations

from .preprocess import array_module

# FFmpeg's AVColorSpace codes -> (Kr, Kb), the luma weights of red and blue that define a matrix.
# swscale treats every code it has no coefficients for (unspecified 2, reserved 3, and BT.470BG 5
# and SMPTE 170M 6, which are BT.601) as BT.601; codes it refuses altogether (YCgCo 8, BT.2020
# constant luminance 10, ...) are not listed, so a caller can decline such a stream.
BT601 = (0.299, 0.114)
MATRICES = {
    0: BT601, 2: BT601, 3: BT601, 5: BT601, 6: BT601,
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
FULL_RANGE = 2  # AVColorRange's JPEG ("pc", 0-255) range; unspecified and MPEG mean limited (16-235)


def matrix_supported(colorspace: int) -> bool:
    return colorspace in MATRICES


def yuv420_to_rgb(y, u, v, colorspace: int, color_range: int, xp=None):
    """H x W luma and ceil(H/2) x ceil(W/2) chroma planes (uint8) -> H x W x 3 uint8 RGB.

    `colorspace` and `color_range` are the stream's FFmpeg codes (`VideoInfo.colorspace`,
    `VideoInfo.color_range`).
    """
    if xp is None:
        xp = array_module(y)
    kr, kb = MATRICES[colorspace]
    kg = 1.0 - kr - kb
    if color_range == FULL_RANGE:
        luma_offset, luma_scale, chroma_scale = 0.0, 1.0, 1.0
    else:
        luma_offset, luma_scale, chroma_scale = 16.0, 255.0 / 219.0, 255.0 / 224.0
    height, width = y.shape
    f32 = xp.float32
    luma = (y.astype(f32) - f32(luma_offset)) * f32(luma_scale)
    cb = (u.astype(f32) - f32(128)) * f32(chroma_scale)
    cr = (v.astype(f32) - f32(128)) * f32(chroma_scale)
    # The chroma terms at chroma resolution, then each repeated over its 2 x 2 luma block.
    red = cr * f32(2 * (1 - kr))
    blue = cb * f32(2 * (1 - kb))
    green = -(cr * f32(2 * kr * (1 - kr) / kg) + cb * f32(2 * kb * (1 - kb) / kg))
    channels = [luma + _upsample(xp, term, height, width) for term in (red, green, blue)]
    rgb = xp.stack([xp.clip(xp.floor(c), 0, 255) for c in channels], axis=-1)
    return rgb.astype(xp.uint8)


def _upsample(xp, plane, height: int, width: int):
    return xp.repeat(xp.repeat(plane, 2, axis=0), 2, axis=1)[:height, :width]
