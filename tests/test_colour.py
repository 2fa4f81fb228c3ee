"""The GPU path's YUV -> RGB (runtime/colour.py) against the CPU path's (PyAV / FFmpeg swscale).

The NVDEC decoder converts NV12 with `yuv420_to_rgb`; here the same function runs on NumPy, on
the Y, U and V planes PyAV decodes from the tests' own videos, and must give the RGB PyAV's
`to_ndarray(format="rgb24")` gives for the same frames. swscale converts in fixed point, so the
bound is not zero: at most 2 levels on any pixel and under 1 level on average (measured: mean
about 0.6 for limited range, 0.15 for full range). Converting with the wrong matrix or range is
4-10 levels off on average, which the negative control shows the test would catch.
"""
from __future__ import annotations

import numpy as np
import pytest
import videos
from tsf.runtime.colour import matrix_supported, yuv420_to_rgb
from tsf.runtime.probe import probe_video

MAX_LEVELS = 2
MEAN_LEVELS = 1.0

# name -> (AVColorSpace, AVColorRange) to encode with; None leaves the stream untagged.
STREAMS = {
    "untagged": (None, None),
    "bt709": (1, None),
    "full_range": (None, 2),
    "bt709_full_range": (1, 2),
    "bt2020": (9, None),
}


def planes(frame) -> list[np.ndarray]:
    """A decoded 4:2:0 frame's Y, U and V planes, without the line padding."""
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def decoded(path):
    import av

    with av.open(str(path)) as container:
        return [(planes(f), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour")
    return {name: videos.make_video(folder / f"{name}.mkv", frames=6, size=(320, 180), colorspace=space,
                                    color_range=levels)
            for name, (space, levels) in STREAMS.items()}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_numpy_conversion_matches_pyav(encoded, name):
    info = probe_video(encoded[name])
    space, levels = STREAMS[name]
    assert info.colorspace == (2 if space is None else space)
    assert (info.color_range == 2) == (levels == 2)
    diffs = []
    for (y, u, v), expected in decoded(encoded[name]):
        ours = yuv420_to_rgb(y, u, v, info.colorspace, info.color_range)
        assert ours.dtype == np.uint8 and ours.shape == expected.shape == (180, 320, 3)
        diffs.append(np.abs(ours.astype(np.int16) - expected.astype(np.int16)))
    diff = np.stack(diffs)
    print(f"\n{name}: ours vs PyAV rgb24: max {diff.max()}, mean {diff.mean():.3f}")
    assert diff.max() <= MAX_LEVELS and diff.mean() < MEAN_LEVELS


def test_the_wrong_matrix_or_range_is_caught(encoded):
    """What NVDEC's own RGB did (BT.709, limited range, whatever the tags) fails the bound."""
    for name, wrong in (("untagged", (1, 1)), ("full_range", (1, 1)), ("bt709", (2, 1))):
        (y, u, v), expected = decoded(encoded[name])[0]
        diff = np.abs(yuv420_to_rgb(y, u, v, *wrong).astype(np.int16) - expected.astype(np.int16))
        assert diff.mean() > 3 * MEAN_LEVELS and diff.max() > 5 * MAX_LEVELS


def test_odd_sizes_and_chroma_blocks():
    """Each chroma sample covers its 2 x 2 luma block; odd sizes take the last block's first row/column."""
    y = np.full((3, 5), 126, np.uint8)
    u = np.array([[128, 128, 128], [128, 128, 200]], np.uint8)
    v = np.full((2, 3), 128, np.uint8)
    rgb = yuv420_to_rgb(y, u, v, 2, 0)
    assert rgb.shape == (3, 5, 3)
    grey = int(np.floor((126 - 16) * 255 / 219))
    assert (rgb[:2, :, :] == grey).all() and (rgb[2, :4] == grey).all()
    assert rgb[2, 4, 2] > grey and rgb[2, 4, 0] == grey  # blue rises where U does, red stays


def test_unsupported_matrices_are_declined():
    assert all(matrix_supported(code) for code in (0, 1, 2, 5, 6, 9))
    assert not any(matrix_supported(code) for code in (8, 10, 11, 14))
