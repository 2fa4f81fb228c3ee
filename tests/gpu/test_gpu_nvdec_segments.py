"""Real NVDEC decoders started at keyframes (runtime/decode_segments.py) give, put together, the
frames one NVDEC decoder gives, bit for bit, and the same windows; the GPU reports its engines.
The CPU twin of these tests, with PyAV, is tests/test_decode_segments.py."""
from __future__ import annotations

import numpy as np
import pytest

import videos
from tsf.runtime.decode_nvdec import nvdec_engines, nvdec_support
from tsf.runtime.decode_segments import keyframe_starts
from tsf.runtime.probe import probe_video

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(nvdec_support() is not None, reason=str(nvdec_support()))]

CASES: dict[str, dict] = {
    "open_gop.mkv": dict(seconds=12, size=(640, 360), bframes=3, open_gop=True),
    "open_gop.mp4": dict(seconds=12, size=(640, 360), bframes=3, open_gop=True),
    "closed_gop_1080p.mkv": dict(seconds=8, size=(1920, 1080), bframes=2, gop=25),
}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nvdec-segments")


def planes(info, keyframe=None):
    import cupy

    from tsf.runtime.decode_nvdec import NvdecDecoder

    decoder = NvdecDecoder(info, keyframe=keyframe)
    try:
        return [(f.pts_time, cupy.asnumpy(f.luma), cupy.asnumpy(f.chroma)) for f in decoder.frames()]
    finally:
        decoder.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_nvdec_segments_put_together_are_one_decoders_frames(video_dir, name):
    info = probe_video(videos.make_video(video_dir / name, **CASES[name]))
    keyframes = keyframe_starts(info, 4)
    starts = [k.pts * info.time_base for k in keyframes]
    assert keyframes
    merged = []
    for i, keyframe in enumerate([None, *keyframes]):
        frames = planes(info, keyframe)
        assert keyframe is None or frames[0][0] == starts[i - 1]
        merged += [f for f in frames if i == len(keyframes) or f[0] < starts[i]]
    expected = planes(info)
    assert [t for t, _, _ in merged] == [t for t, _, _ in expected]
    for (_, luma, chroma), (_, one_luma, one_chroma) in zip(merged, expected):
        np.testing.assert_array_equal(luma, one_luma)
        np.testing.assert_array_equal(chroma, one_chroma)


def test_the_gpu_reports_its_engines_and_k_follows(tmp_path):
    import types

    from tsf.runtime.bundle import Window
    from tsf.runtime.gpu import Device
    from tsf.runtime.pipeline import open_decoders
    from tsf.runtime.sample import plan_windows

    engines = nvdec_engines()
    print(f"\nNVDEC engines: {engines}")
    assert engines and engines >= 1
    info = probe_video(videos.make_video(tmp_path / "long.mkv", seconds=60, size=(640, 360), gop=25))
    engine = types.SimpleNamespace(device=Device("cuda", 0), wants_gpu_input=True)
    opened = open_decoders(info, plan_windows(info, Window.reference(4)), "nvdec", engine, None, 0, 1)
    try:
        assert len(opened) == engines and all(decoder.name == "nvdec" for _, decoder in opened)
    finally:
        for _, decoder in opened:
            decoder.close()

