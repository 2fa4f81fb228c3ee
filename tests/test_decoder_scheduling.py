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


def decode_with(monkeypatch, path, engines: int, decoders: int | None, **model_options):
    """(result, engine model) of the pipeline on `path` with NVDEC's stand-in of `engines` engines."""
    model = NvdecEngines(engines, **model_options)
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
    print(f"\nK={decoders}, E={engines}: {model.ticks} ticks, {model.frames} frames decoded for {frames}, "
          f"{rate / single_rate:.2f}x one decoder = {rate / single_rate / min(decoders, engines):.1%} of min(K, E)")
    assert rate >= 0.9 * min(decoders, engines) * single_rate, (rate, model.ticks, model.frames)


def test_the_gpus_engine_count_chooses_k(clip, monkeypatch):
    result, model = decode_with(monkeypatch, clip, 5, None)
    assert result.decoders == 5 and model.busiest_tick == 5


def test_decoders_taking_turns_would_show(clip, monkeypatch):
    """The control: if tsf decoded one segment at a time (a lock around a decoder's frames), time
    would stop with three decoders held back while one waits, and the model says so (after a few
    seconds of real time: without a tick it never ends)."""
    from tsf.runtime import decode_nvdec
    from tsf.runtime.decode import DecodeError

    one_at_a_time = threading.Lock()
    frames = decode_nvdec.NvdecDecoder.frames

    def serialised(self):
        with one_at_a_time:
            yield from frames(self)

    monkeypatch.setattr(decode_nvdec.NvdecDecoder, "frames", serialised)
    with pytest.raises(DecodeError, match="time stopped at tick 0: 3 decoder.s. in use are held outside Decode"):
        decode_with(monkeypatch, clip, 7, 4, stall_seconds=3)


# ------------------------------------------------------------------ several videos, one GPU

@pytest.fixture(scope="module")
def half_clip(tmp_path_factory) -> Path:
    return videos.make_video(tmp_path_factory.mktemp("scheduling") / "half.mkv", seconds=SECONDS // 2, fps=FPS,
                             size=(256, 144), gop=FPS, bframes=2)


def several_videos(monkeypatch, tmp_path, clip, engines: int, settings: dict, videos: int = 3, together=True):
    """`videos` copies of `clip` through tsf-extract's own loop (Extractor.share_among, JobLoop.run)
    with NVDEC's stand-in; returns (summary, engine model, times the engine was loaded). With
    `together`, engine time starts once the videos running at once have all their decoders."""
    from tsf.runtime import extractor as extractor_module
    from tsf.runtime.extractor import ExtractSettings, Extractor
    from tsf.runtime.jobs import Job, JobLoop

    bundle = replace(window_bundle(), window=WINDOW)
    loads = []
    def load(*args):
        loads.append(args)
        engine = gpu_backend()  # a GPU engine's stand-in, with what the Extractor also reads
        engine.precision_reason, engine.describe = "asked for", lambda: {"library": "stand-in"}
        return engine

    monkeypatch.setattr(extractor_module, "select_backend", load)
    jobs = []
    for i in range(videos):
        copy = tmp_path / f"game{i}.mkv"
        copy.hardlink_to(clip)
        jobs.append(Job(copy, tmp_path / f"game{i}.npy"))
    extractor = Extractor(bundle, ExtractSettings(decoder="nvdec", **settings))
    model = NvdecEngines(engines)
    gpu_stand_ins(monkeypatch, engines=model)
    at_once = extractor.share_among(len(jobs))
    if together:
        model.start_after = at_once * (settings.get("decoders") or engines // at_once)
    summary = JobLoop(report=print).run(jobs, extractor.process, at_once=at_once)
    return summary, model, loads


@pytest.mark.parametrize("settings, decoders", [({}, 6), ({"decoders": 1}, 3), ({"videos_at_once": 2}, 6)])
def test_several_videos_at_once_keep_the_engines_busy(half_clip, monkeypatch, tmp_path, settings, decoders):
    """3 videos on a 7-engine GPU: 3 at once with 2 decoders each, or 1 each, or 2 at once with 3
    each (then the third video follows): one engine loaded, every video written."""
    summary, model, loads = several_videos(monkeypatch, tmp_path, half_clip, 7, settings)
    assert len(summary.done) == 3 and not summary.failed and len(loads) == 1
    assert all((tmp_path / f"game{i}.npy").exists() for i in range(3))
    assert model.busiest_tick == decoders
    rate = 3 * FPS * SECONDS // 2 / model.ticks
    print(f"\n3 videos, {settings or 'defaults'}: {model.ticks} ticks, {model.frames} frames decoded, "
          f"{rate:.2f}x one decoder = {rate / decoders:.1%} of {decoders} decoders")
    if "videos_at_once" not in settings:  # all at once: the engines' rate for the whole run
        assert rate >= 0.9 * decoders, (rate, model.ticks)


def test_one_videos_failure_stays_its_own(half_clip, monkeypatch, tmp_path):
    (tmp_path / "game1.npy").mkdir()  # an output that cannot be written
    summary, _, _ = several_videos(monkeypatch, tmp_path, half_clip, 7, {}, together=False)
    assert len(summary.done) == 2 and [job.video.name for job, _ in summary.failed] == ["game1.mkv"]


def test_ray_shares_each_gpu_through_fractional_gpus():
    from tsf.runtime.scale.ray_pool import worker_plan

    assert worker_plan({"GPU": 2, "CPU": 32}, "auto", 4) == (2, {"num_gpus": 1, "num_cpus": 1})
    assert worker_plan({"GPU": 2, "CPU": 32}, "auto", 4, per_gpu=4) == (8, {"num_gpus": 0.25, "num_cpus": 1})
    assert worker_plan({"CPU": 32}, "auto", 4, per_gpu=4) == (8, {"num_cpus": 4})  # CPU slots: unchanged


def test_k_producers_hand_over_their_batches_without_races(monkeypatch, tmp_path):
    """K segments on the stand-in GPU (tests/gpu_stand_ins.py's ordering model): each producer on
    its own decoder's stream, none waiting for inference, every read ordered after its write."""
    import sys

    from gpu_stand_ins import fake_torch
    from test_gpu_logic import toy_bundle, torch_engine_on_stand_ins

    path = videos.make_video(tmp_path / "segments.mkv", seconds=12, size=(256, 90), bframes=2, gop=25)
    cuda, _ = gpu_stand_ins(monkeypatch, hold_producer="tsf-decode")
    torch = fake_torch(cuda)
    monkeypatch.setitem(sys.modules, "torch", torch)
    info = probe_video(path)
    result = extract(info, plan_windows(info, toy_bundle().window), toy_bundle(), torch_engine_on_stand_ins(cuda, torch),
                     decoder="nvdec", decoders=3, batch_size=1)
    assert result.decoders == 3 and result.rows == 12 and result.stats.partial is None
    producers = [op for op in cuda.ops if op.thread == "tsf-decode"]
    assert len({op.stream for op in producers}) == 3 and all(op.stream.is_non_blocking for op in producers)
    assert cuda.producer_waits_on("inference") == []
    assert [wait for wait in cuda.waits if wait[0] == "tsf-decode"] == []
    assert cuda.races == []
