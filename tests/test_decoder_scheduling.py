"""The scheduling of many decoders, proven without a GPU: PyNvVideoCodec's stand-in
(tests/gpu_stand_ins.py) decodes at a fixed rate per decoder, one frame per tick, on E engines
shared by every decoder, in simulated time (`NvdecEngines`). Ticks pass only when every decoder in
use waits for an engine, so the figures below count engine time alone, whatever the load on this
machine, and nothing here depends on wall-clock time."""

from __future__ import annotations

import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

import videos
from gpu_stand_ins import NvdecEngines
from test_decode_segments import bundle as window_bundle
from test_gpu_logic import gpu_backend, gpu_stand_ins
from tsf.runtime.bundle import Window
from tsf.runtime.pipeline import extract
from tsf.runtime.probe import probe_video
from tsf.runtime.sample import plan_windows

pytestmark = pytest.mark.slow

# 5 fps, a keyframe every second and a 1-s window keep the decoding past each segment's end (its
# last windows, up to the next keyframe) to ~2 s: 4 minutes split 7 ways leave ~94 % of the ideal.
FPS, SECONDS = 5, 240
WINDOW = Window(4, Fraction(1), Fraction(1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return videos.make_video(tmp_path_factory.mktemp("scheduling") / "long.mkv", seconds=SECONDS, fps=FPS,
                             size=(256, 144), gop=FPS, bframes=2)


def decode_with(monkeypatch, path, engines: int, decoders: int | None):
    """(result, engine model) of the pipeline on `path` with NVDEC's stand-in of `engines` engines."""
    model = NvdecEngines(engines)
    gpu_stand_ins(monkeypatch, engines=model)
    info = probe_video(path)
    bundle = replace(window_bundle(), window=WINDOW)
    result = extract(info, plan_windows(info, WINDOW), bundle, gpu_backend(), decoder="nvdec", decoders=decoders)
    return result, model


@pytest.mark.parametrize("decoders, engines", [(4, 7), (7, 7), (10, 7), (3, 2)])
def test_k_segments_keep_min_k_e_engines_busy(clip, monkeypatch, decoders, engines):
    frames = FPS * SECONDS
    one, single = decode_with(monkeypatch, clip, engines, 1)
    single_rate = frames / single.ticks  # frames of the video per tick with one decoder
    assert one.decoders == 1 and single.busiest_tick == 1 and single_rate > 0.99
    many, model = decode_with(monkeypatch, clip, engines, decoders)
    assert many.decoders == decoders and model.busiest_tick == min(decoders, engines)
    assert many.rows == one.rows and many.stats.partial is None
    rate = frames / model.ticks
    assert rate >= 0.9 * min(decoders, engines) * single_rate, (rate, model.ticks, model.frames)


def test_the_gpus_engine_count_chooses_k(clip, monkeypatch):
    result, model = decode_with(monkeypatch, clip, 5, None)
    assert result.decoders == 5 and model.busiest_tick == 5


def test_decoders_taking_turns_would_show(clip, monkeypatch):
    """The control: if tsf decoded one segment at a time (a lock around a decoder's frames), the
    engine model would see one decoder at work, not K."""
    from tsf.runtime import decode_nvdec

    one_at_a_time = threading.Lock()
    frames = decode_nvdec.NvdecDecoder.frames

    def serialised(self):
        with one_at_a_time:
            yield from frames(self)

    monkeypatch.setattr(decode_nvdec.NvdecDecoder, "frames", serialised)
    _, model = decode_with(monkeypatch, clip, 7, 4)
    assert model.busiest_tick == 1 and FPS * SECONDS / model.ticks < 1.1
