"""NVDEC (PyNvVideoCodec) frames against PyAV frames of the same generated videos.

The reference is the CPU decoder (FFmpeg through PyAV). Frame identity is checked through the
barcode every generated frame carries (tests/videos.py) and the timestamps. H.264 decoding is
exact, so NVDEC's NV12 planes must equal FFmpeg's YUV planes bit for bit; the RGB then differs
only by the conversion (runtime/colour.py against swscale's fixed point: at most 2 levels, the
bound of tests/test_colour.py), for untagged, BT.709 and full-range streams alike. NVDEC's frames
are written on the decoder's non-blocking stream, so they are read on it (`gpu_stream.work()`),
as the pipeline's producer reads them.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import videos
from tsf.runtime.decode import DecodeError, PyAVDecoder
from tsf.runtime.decode_nvdec import nvdec_support
from tsf.runtime.probe import probe_video

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(nvdec_support() is not None, reason=str(nvdec_support()))]

CASES: dict[str, dict[str, Any]] = {
    "h264_bframes_25fps.mkv": dict(seconds=4, fps=25, size=(456, 256), bframes=2),
    "h264_bframes_2997fps.mp4": dict(seconds=4, fps=Fraction(30000, 1001), size=(640, 360), bframes=3),
    "h264_1080p_25fps.mkv": dict(seconds=2, fps=25, size=(1920, 1080), bframes=2),  # 1088-row surfaces
    "h264_bt709.mkv": dict(seconds=2, fps=25, size=(640, 360), colorspace=1),
    "h264_full_range.mkv": dict(seconds=2, fps=25, size=(640, 360), color_range=2),
}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nvdec")


def decode_cpu(info):
    decoder = PyAVDecoder(info)
    try:
        return [(f.pts_time, f.to_rgb()) for f in decoder.frames()]
    finally:
        decoder.close()


def yuv_planes_cpu(info) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Y, interleaved UV) of every frame as FFmpeg decodes them: NV12's layout, built from the
    decoded planes themselves (no conversion that could touch the values)."""
    decoder = PyAVDecoder(info)
    planes = []
    try:
        for frame in decoder.frames():
            y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                       for p in frame.frame.planes)
            planes.append((y.copy(), np.stack([u, v], axis=-1).reshape(u.shape[0], -1)))
    finally:
        decoder.close()
    return planes


@pytest.mark.parametrize("name", sorted(CASES))
def test_nvdec_frames_equal_pyav_frames(video_dir, name):
    import cupy

    from tsf.runtime.decode_nvdec import NvdecDecoder

    path = videos.make_video(video_dir / name, **CASES[name])
    info = probe_video(path)
    expected = decode_cpu(info)
    decoder = NvdecDecoder(info)
    assert decoder.gpu_stream.stream.is_non_blocking
    with decoder.gpu_stream.work():
        # Keep every frame before looking at any: frames must stay intact after later Decode calls.
        frames = list(decoder.frames())
        got = [(f.pts_time, f.number, cupy.asnumpy(f.to_rgb())) for f in frames]
    decoder.close()

    assert len(got) == len(expected)
    assert [n for _, n, _ in got] == list(range(len(got)))
    assert [t for t, _, _ in got] == [t for t, _ in expected]
    diffs = []
    for (_, _, host), (_, cpu_rgb) in zip(got, expected):
        assert host.dtype == np.uint8 and host.shape == cpu_rgb.shape == (info.height, info.width, 3)
        assert videos.read_frame_number(host) == videos.read_frame_number(cpu_rgb)
        diffs.append(np.abs(host.astype(np.int16) - cpu_rgb.astype(np.int16)))
    diff = np.stack(diffs)
    print(f"\n{name}: NVDEC vs PyAV RGB over {len(got)} frames: max abs {diff.max()}, "
          f"mean abs {diff.mean():.3f}, 99.9th percentile {np.percentile(diff, 99.9):.0f}")
    assert diff.max() <= 2 and diff.mean() < 1.0  # the conversion's bound (tests/test_colour.py)


@pytest.mark.parametrize("name", sorted(CASES))
def test_nvdec_planes_equal_ffmpegs(video_dir, name):
    """NV12 out of NVDEC, copied out of its padded surfaces, is FFmpeg's decode bit for bit."""
    import cupy

    from tsf.runtime.decode_nvdec import NvdecDecoder

    info = probe_video(videos.make_video(video_dir / name, **CASES[name]))
    expected = yuv_planes_cpu(info)
    decoder = NvdecDecoder(info)
    with decoder.gpu_stream.work():
        got = [(cupy.asnumpy(f.luma), cupy.asnumpy(f.chroma)) for f in decoder.frames()]
    decoder.close()
    assert len(got) == len(expected)
    for (luma, chroma), (cpu_luma, cpu_chroma) in zip(got, expected):
        np.testing.assert_array_equal(luma, cpu_luma)
        np.testing.assert_array_equal(chroma, cpu_chroma)


def test_nvdec_preprocessed_frames_match_cpu(video_dir):
    """The model's inputs from NVDEC frames (CuPy preprocessing) against PyAV + NumPy."""
    import cupy

    from tsf.runtime.decode_nvdec import NvdecDecoder
    from tsf.runtime.bundle import Preprocessing
    from tsf.runtime.preprocess import preprocess_frame

    name = "h264_bframes_25fps.mkv"
    info = probe_video(videos.make_video(video_dir / name, **CASES[name]))
    expected = [preprocess_frame(rgb, Preprocessing.reference()) for _, rgb in decode_cpu(info)[:20]]
    decoder = NvdecDecoder(info)
    got = []
    with decoder.gpu_stream.work():
        for frame in decoder.frames():
            got.append(cupy.asnumpy(preprocess_frame(frame.to_rgb(), Preprocessing.reference())))
            if len(got) == len(expected):
                break
    decoder.close()
    diff = np.abs(np.stack(got) - np.stack(expected))
    print(f"\npreprocessed NVDEC+CuPy vs PyAV+NumPy: max abs {diff.max():.4f}, mean abs {diff.mean():.5f}")
    assert diff.max() <= 2.0 / 255 + 1e-6 and diff.mean() < 1.0 / 255


def test_nvdec_reports_a_truncated_file(video_dir):
    from tsf.runtime.decode_nvdec import NvdecDecoder

    name = "h264_bframes_25fps.mkv"
    source = videos.make_video(video_dir / name, **CASES[name])
    truncated = videos.make_truncated(source, video_dir / "truncated.mkv", keep=0.5)
    decoder = NvdecDecoder(probe_video(truncated))
    with pytest.raises(DecodeError, match="truncated|decoding broke"):
        for _ in decoder.frames():
            pass
    decoder.close()


@pytest.mark.parametrize("degrees", [90, 180])
def test_nvdec_frames_are_turned_upright_like_pyav_frames(video_dir, degrees):
    """A phone video's display rotation is applied by both decoders (docs/design.md, stage 4)."""
    import cupy

    from tsf.runtime.decode_nvdec import NvdecDecoder

    info = probe_video(videos.make_video(video_dir / f"phone_{degrees}.mp4", seconds=2, fps=25, size=(456, 256),
                                         rotation=degrees))
    assert info.rotation == degrees
    expected = decode_cpu(info)
    decoder = NvdecDecoder(info)
    with decoder.gpu_stream.work():
        got = [cupy.asnumpy(f.to_rgb()) for f in decoder.frames()]
    decoder.close()
    assert len(got) == len(expected)
    for host, (_, cpu_rgb) in zip(got, expected):
        assert host.shape == cpu_rgb.shape == ((456, 256, 3) if degrees == 90 else (256, 456, 3))
        assert np.abs(host.astype(np.int16) - cpu_rgb.astype(np.int16)).mean() < 3.0
