"""The runtime's pure stages against independent references: preprocessing (float64 NumPy
re-implementation of section 4), reference frame indices (section 3), timestamp selection (a
brute-force reading of the rule), the frame buffer, job expansion and atomic writes."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from reference.numpy_preprocess import bilinear_resize, crop_offset, reference_preprocess
from reference.sampling import OFFSETS_AT_25_FPS, reference_rows
from tsf.runtime.batch import BatchStats, window_batches
from tsf.runtime.bundle import Preprocessing, Window
from tsf.runtime.errors import InputError
from tsf.runtime.jobs import Job, JobLoop, Outcome
from tsf.runtime.scale.inputs import JobError, expand_jobs
from tsf.runtime.preprocess import preprocess_frame
from tsf.runtime.probe import VideoInfo
from tsf.runtime.progress import LINE_EVERY_PERCENT, VideoProgress, format_speed, realtime_factor
from tsf.runtime.sample import FrameSelector, plan_windows, reference_indices, unique_targets

REFERENCE = Window.reference()


# ---------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("height,width", [
    (256, 456),   # the reference's training size: 399 x 224, crop x from 88
    (456, 256),   # portrait: crop vertically
    (255, 455),   # odd sizes
    (224, 398),   # short side already 224: resize skipped, crop only
    (224, 224),
    (300, 224),   # portrait, short side 224
    (1080, 1920),
    (720, 1280),
    (100, 150),   # upscaling
    (225, 226),
])
def test_preprocess_matches_float64_reference(height, width):
    rng = np.random.default_rng(height * 10007 + width)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ours = preprocess_frame(rgb, Preprocessing.reference())
    expected = reference_preprocess(rgb)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    assert np.abs(ours.astype(np.float64) - expected).max() < 2e-6


@pytest.mark.parametrize("height,width,pixel_aspect,shown", [
    (576, 720, Fraction(64, 45), (224, 398)),   # PAL 16:9 (1024 x 576 shown): the reference's 456 x 256 shape
    (576, 720, Fraction(16, 15), (224, 298)),   # PAL 4:3 (768 x 576 shown)
    (480, 720, Fraction(32, 27), (224, 398)),   # NTSC 16:9 (853.3 x 480 shown)
    (1080, 1440, Fraction(4, 3), (224, 398)),   # HDV 1440 x 1080 (1920 x 1080 shown)
    (720, 576, Fraction(45, 64), (398, 224)),   # PAL 16:9 turned upright by a 90-degree display rotation
    (224, 300, Fraction(64, 45), (224, 426)),   # short side already 224: only the width is resized
])
def test_non_square_pixels_are_resized_to_the_shown_proportions(height, width, pixel_aspect, shown):
    """One bilinear resize from the stored pixels straight to the shown proportions (each axis with
    its own scale), then the centre crop: the float64 reference's steps at the shown size."""
    rgb = np.random.default_rng(width).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ours = preprocess_frame(rgb, Preprocessing.reference(), pixel_aspect=pixel_aspect)
    resized = bilinear_resize(rgb.astype(np.float64) / 255, *shown)
    top, left = crop_offset(shown[0]), crop_offset(shown[1])
    expected = resized[top:top + 224, left:left + 224].transpose(2, 0, 1)
    assert np.abs(ours.astype(np.float64) - expected).max() < 2e-6


# ---------------------------------------------------------------- sampling

def info_for(duration, fps, frames=None, start=Fraction(0)) -> VideoInfo:
    fps = Fraction(fps)
    duration = Fraction(duration)
    return VideoInfo(path=Path("x.mkv"), size_bytes=1, mtime=0.0, container="matroska", stream_index=0,
                     codec="h264", width=456, height=256, fps=fps, time_base=Fraction(1, 1000),
                     start_time=start, duration=duration,
                     frame_count_estimate=frames if frames is not None else round(duration * fps))


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50), Fraction(5),
                                 Fraction(24000, 1001), Fraction(12)])
@pytest.mark.parametrize("seconds", [6, 7, 11, 60, 2700])
def test_reference_indices_match_section_3(fps, seconds):
    frames = math.floor(seconds * fps)
    ours = reference_indices(seconds, fps, frames, REFERENCE, Fraction(1))
    theirs = reference_rows(seconds, float(fps), frames)
    assert np.array_equal(np.array(ours, dtype=np.int64).reshape(-1, 16), theirs)


def test_reference_indices_worked_example_at_25_fps():
    rows = reference_indices(60, Fraction(25), 1500, REFERENCE, Fraction(1))
    assert len(rows) == 55
    for i, row in enumerate(rows):
        assert row == tuple(25 * i + o for o in OFFSETS_AT_25_FPS)


def last_frame_at(pts: list[Fraction], t: Fraction, tolerance: Fraction) -> int:
    """Brute force: the last frame with pts <= t + tolerance, or the first frame."""
    shown = [k for k, p in enumerate(pts) if p <= t + tolerance]
    return shown[-1] if shown else 0


class FakeFrame:
    def __init__(self, number, pts_time):
        self.number, self.pts_time = number, pts_time

    def to_rgb(self):
        return np.full((224, 224, 3), self.number % 256, np.uint8)


def select(pts, targets, tolerance):
    selector = FrameSelector(targets, tolerance)
    picked = {}
    for k, p in enumerate(pts):
        picked.update({j: f.number for j, f in selector.feed(FakeFrame(k, p))})
    picked.update({j: f.number for j, f in selector.finish()})
    return [picked[j] for j in range(len(targets))]


@pytest.mark.parametrize("fps,rounding", [(Fraction(25), None), (Fraction(30000, 1001), Fraction(1, 1000)),
                                          (Fraction(30000, 1001), None), (Fraction(50), Fraction(1, 1000))])
def test_reference_times_select_reference_indices(fps, rounding):
    """CFR: time start + k/fps selects frame k, also with millisecond-rounded MKV timestamps."""
    seconds = 20
    count = math.floor(seconds * fps)
    pts = [Fraction(k) / fps for k in range(count)]
    if rounding:
        pts = [Fraction(round(p / rounding)) * rounding for p in pts]
    plan = plan_windows(info_for(Fraction(count) / fps, fps, count), REFERENCE, "reference")
    targets, row_targets = unique_targets(plan.row_times)
    picked = select(pts, targets, plan.tolerance)
    selected = [[picked[j] for j in row] for row in row_targets]
    assert selected == [list(r) for r in reference_rows(int(Fraction(count) / fps), float(fps), count)]


@pytest.mark.parametrize("duration,fps", [(10, 25), (Fraction(1001, 100), Fraction(30000, 1001)),
                                          (Fraction(996, 100), 25), (3, 5), (Fraction(1, 2), 25)])
def test_center_rows_and_frame_times(duration, fps):
    info = info_for(duration, fps)
    plan = plan_windows(info, REFERENCE, "center")
    assert plan.rows == math.ceil(Fraction(duration))
    for i, times in enumerate(plan.row_times):
        assert len(times) == 16
        assert times[0] + Fraction(5, 2) == i + Fraction(1, 2)  # centred on i + 0.5 s
        assert all(b - a == Fraction(1, 3) for a, b in zip(times, times[1:]))  # 5 s / 15
    # Selection follows the rule, including clamping at both ends.
    fps = Fraction(fps)
    pts = [Fraction(k) / fps for k in range(info.frame_count_estimate)]
    targets, _ = unique_targets(plan.row_times)
    assert select(pts, targets, plan.tolerance) == [last_frame_at(pts, t, plan.tolerance) for t in targets]


def test_selection_follows_timestamps_for_variable_frame_rate():
    rng = np.random.default_rng(3)
    pts, t = [], Fraction(0)
    while t < 30:
        pts.append(t)
        t += Fraction(int(rng.choice([10, 20, 40, 120, 500])), 1000)
    info = info_for(pts[-1] + Fraction(1, 25), 25, len(pts))
    plan = plan_windows(info, REFERENCE, "center")
    targets, _ = unique_targets(plan.row_times)
    assert select(pts, targets, plan.tolerance) == [last_frame_at(pts, t, plan.tolerance) for t in targets]


def test_reference_alignment_refuses_short_video():
    with pytest.raises(InputError, match="too short"):
        plan_windows(info_for(Fraction(59, 10), 25), REFERENCE, "reference")
    assert plan_windows(info_for(6, 25), REFERENCE, "reference").rows == 1


# ---------------------------------------------------------------- frame buffer

def test_buffer_converts_each_frame_once_and_stays_bounded(monkeypatch):
    from runtime_helpers import record_selection

    fps, seconds = Fraction(25), 120
    frames = [FakeFrame(k, Fraction(k) / fps) for k in range(seconds * 25)]
    plan = plan_windows(info_for(seconds, fps), REFERENCE, "reference")
    stats = BatchStats()
    picks = record_selection(monkeypatch)
    batches = list(window_batches(iter(frames), plan, 4, Preprocessing.reference(), stats=stats))
    rows = [r for b in batches for r in b.rows]
    assert rows == list(range(plan.rows))
    distinct = {number for _, number in picks}
    assert stats.frames_preprocessed == len(distinct)  # never twice
    # About one window (5 s at 3 frames/s) plus one batch of rows: independent of the length.
    assert stats.peak_buffered_frames <= 3 * (5 + 4) + 4
    # Each batch holds the right frames: FakeFrame's pixels carry its number.
    indices = reference_indices(seconds, fps, seconds * 25, REFERENCE, Fraction(1))
    for batch in batches:
        for b, row in enumerate(batch.rows):
            got = np.round(batch.video[b, 0, :, 0, 0] * 255).astype(int)
            assert list(got) == [k % 256 for k in indices[row]]


# ---------------------------------------------------------------- jobs

def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_jobs_mirror_relative_paths_so_halves_do_not_collide(tmp_path):
    data = tmp_path / "SoccerNet"
    for game in ("england/2015/a", "england/2015/b"):
        touch(data / game / "1_224p.mkv")
        touch(data / game / "2_224p.mkv")
    touch(data / "notes.txt")
    jobs = expand_jobs([data], tmp_path / "features")
    assert {(j.video.relative_to(data).as_posix(), j.output.relative_to(tmp_path / "features").as_posix())
            for j in jobs} == {(f"england/2015/{g}/{h}_224p.mkv", f"england/2015/{g}/{h}_224p.npy")
                               for g in "ab" for h in "12"}


def test_jobs_single_file_list_and_collisions(tmp_path):
    video = touch(tmp_path / "v" / "match.mkv")
    assert expand_jobs([video], tmp_path / "out.npy") == [Job(video, tmp_path / "out.npy")]
    assert expand_jobs([video]) == [Job(video, tmp_path / "v" / "match.npy")]
    (tmp_path / "outdir").mkdir()
    assert expand_jobs([video], tmp_path / "outdir")[0].output == tmp_path / "outdir" / "match.npy"
    other = touch(tmp_path / "w" / "x" / "1.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# halves\n{video}\n\n{other}\n")
    jobs = expand_jobs([], tmp_path / "o", list_file=listing)
    assert [j.output for j in jobs] == [tmp_path / "o" / "v" / "match.npy", tmp_path / "o" / "w" / "x" / "1.npy"]
    twin = touch(tmp_path / "v" / "match.mp4")
    with pytest.raises(JobError, match="both write"):
        expand_jobs([video, twin], tmp_path / "o")
    with pytest.raises(JobError, match="no input"):
        expand_jobs([])


def test_a_folder_walk_takes_every_video_container_and_names_what_it_skips(tmp_path, caplog):
    data = tmp_path / "data"
    wanted = [touch(data / "a" / name) for name in ("1.mxf", "2.m2t", "3.3gp", "4.MKV", "5.ts", "6.vob")]
    for name in ("Labels-v2.json", "video.ini", "1_224p.npy", "2_224p.npy", ".1_224p.npy.x7k2m9q1.part"):
        touch(data / "a" / name)
    linked = touch(tmp_path / "elsewhere" / "game" / "1.mkv")
    (data / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "game" / "loop").symlink_to(data)  # a link back up: walked once
    with caplog.at_level("INFO", logger="tsf"):
        jobs = expand_jobs([data], tmp_path / "out")
    assert sorted(j.video for j in jobs) == sorted(wanted + [data / "linked" / "game" / "1.mkv"])
    assert linked.exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"{data}: 7 videos; skipped 4 other files (1 .ini, 1 .json, 2 .npy), 1 hidden, "
        "1 links to folders already walked"]


def test_a_folder_that_cannot_be_listed_stops_the_run_before_any_work(tmp_path, monkeypatch):
    """A subfolder without read permission (os.scandir raises PermissionError, as the real one does
    for a folder of another user; the stand-in because root reads every folder)."""
    data = tmp_path / "data"
    touch(data / "readable" / "1.mkv")
    touch(data / "locked" / "1.mkv")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(JobError, match=f"cannot list {data / 'locked'}: permission denied \\(nothing was extracted"):
        expand_jobs([data], tmp_path / "out")


def test_a_list_with_a_byte_order_mark_and_relative_entries(tmp_path, monkeypatch):
    """Windows Notepad and PowerShell 5 write UTF-8 with a byte-order mark and CRLF line ends; a
    relative entry is relative to the list's folder, wherever the command runs."""
    first = touch(tmp_path / "season" / "game 1" / "1.mkv")
    second = touch(tmp_path / "season" / "game 2" / "1.mkv")
    listing = tmp_path / "season" / "list.txt"
    listing.write_bytes("\ufeff".encode() + f"{first}\r\ngame 2/1.mkv\r\n".encode())
    monkeypatch.chdir(touch(tmp_path / "elsewhere" / "x").parent)
    jobs = expand_jobs([], tmp_path / "out", list_file=listing)
    assert jobs == [Job(first, tmp_path / "out" / "game 1" / "1.npy"),
                    Job(tmp_path / "season" / "game 2" / "1.mkv", tmp_path / "out" / "game 2" / "1.npy")]
    assert jobs[1].video.resolve() == second


def test_the_job_loop_goes_on_after_a_failure_and_counts_skips(tmp_path):
    jobs = [Job(Path(f"{name}.mkv"), tmp_path / f"{name}.npy") for name in ("a", "bad", "done", "bug", "c")]
    lines, recorded = [], []

    def process(job):
        if job.video.stem == "bad":
            raise InputError(f"{job.video}: not a video")
        if job.video.stem == "bug":
            raise ZeroDivisionError("oops")
        return Outcome("skipped" if job.video.stem == "done" else "done", rows=3)

    loop = JobLoop(report=lines.append, record=lambda job, outcome: recorded.append((job.video.stem, outcome.status)))
    summary = loop.run(jobs, process)
    assert lines == ["error: bad.mkv: not a video", "error: bug.mkv: internal error: ZeroDivisionError: oops"]
    assert recorded == [("a", "done"), ("bad", "failed"), ("done", "skipped"), ("bug", "failed"), ("c", "done")]
    assert summary.line() == "2 done, 1 skipped (already extracted), 2 failed" and not summary.ok
    with pytest.raises(ZeroDivisionError):  # a bug is raised where the caller wants to see it (TSF_DEBUG, one video)
        JobLoop(report=lines.append).run(jobs[3:4], process, keep_going_on_bugs=False)


# ---------------------------------------------------------------- progress and the speed figure

def test_progress_off_a_terminal_is_a_line_every_few_percent(capsys):
    """Under a log file (not a terminal) no bar is redrawn: one plain line per 5 %, the last at 100 %."""
    bar = VideoProgress(40, 2.0, "match.mkv", enabled=True)
    for _ in range(40):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 100 // LINE_EVERY_PERCENT
    assert lines[0].startswith("match.mkv:   5% (2/40 windows), x") and " real time, " in lines[0]
    assert lines[-1].startswith("match.mkv: 100% (40/40 windows), x")

    bar = VideoProgress(3, 1.0, "short.mkv", enabled=True)  # each row is a third: one line per row
    bar.update(2)
    bar.update(1)
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == ["short.mkv:  67%", "short.mkv: 100%"]
    VideoProgress(3, 1.0, "quiet.mkv", enabled=False).update(3)
    assert capsys.readouterr().err == ""


def test_one_speed_figure():
    assert realtime_factor(10.0, 50.0) == 0.2 and realtime_factor(10.0, 0.0) is None
    assert [format_speed(x) for x in (0.198, 1.15, 9.6, 84.4, None)] == [
        "x0.2 real time", "x1.1 real time", "x9.6 real time", "x84 real time", "x? real time"]


# ---------------------------------------------------------------- damage detection from timestamps

def test_frame_time_checker_finds_gaps_and_early_ends():
    from tsf.runtime.decode import DecodeError, FrameTimeChecker

    info = info_for(20, 25)
    checker = FrameTimeChecker(info)
    assert checker.accept(Fraction(0)) and checker.accept(Fraction(1, 25))
    assert not checker.accept(Fraction(1, 25))  # a repeated timestamp is dropped, not an error
    with pytest.raises(DecodeError, match=r"decoding broke at 0\.0 s: 2\.0 s of video missing") as broke:
        checker.accept(Fraction(1, 25) + 2)
    assert broke.value.at_time == Fraction(1, 25)

    checker = FrameTimeChecker(info)
    for k in range(25 * 19):  # 19 s of 20: within the tolerance of 1 s
        checker.accept(Fraction(k, 25))
    checker.finish()
    checker = FrameTimeChecker(info)
    for k in range(25 * 15):
        checker.accept(Fraction(k, 25))
    with pytest.raises(DecodeError, match=r"truncated: decoding ended at 15\.0 s of 20\.0 s"):
        checker.finish()


def test_preprocess_other_sizes_match_reference():
    rgb = np.random.default_rng(5).integers(0, 256, size=(180, 320, 3), dtype=np.uint8)
    assert np.abs(preprocess_frame(rgb, Preprocessing.reference(112)) - reference_preprocess(rgb, size=112)).max() < 2e-6


# ---------------------------------------------------------------- backend choice

def test_mismatching_tensorrt_engine_falls_back_to_onnxruntime_with_a_warning(monkeypatch, caplog):
    """A bundle engine built for another GPU/TensorRT: warn, then run ONNX Runtime (here: the CPU)."""
    import dataclasses
    import logging

    from runtime_helpers import small_bundle
    from tsf.runtime import gpu
    from tsf.runtime.backends import AUTO_ORDER, select_backend, tensorrt
    from tsf.runtime.bundle import load_bundle

    # A GPU machine where the bundle's only engine was built for another GPU, and ONNX Runtime
    # has no CUDA provider: auto warns with every reason and runs the CPU's first engine.
    monkeypatch.setattr(gpu, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(tensorrt, "tensorrt_support", lambda gpu_id=0: None)
    monkeypatch.setattr(tensorrt, "find_engine", lambda bundle, precision=None, gpu_id=0: (
        None, ["engines/fp16.engine: built for compute capability 9.0, this GPU is 8.6"]))
    bundle = dataclasses.replace(load_bundle(small_bundle(4)), engines=[{"file": "engines/fp16.engine"}])
    monkeypatch.setattr(logging.getLogger("tsf"), "propagate", True)  # the CLI, if run before, turned it off
    with caplog.at_level("WARNING", logger="tsf"):
        backend = select_backend(bundle, "auto", "auto")
    assert backend.name == AUTO_ORDER["cpu"][0] and str(backend.device) == "cpu"
    assert any("compute capability 9.0, this GPU is 8.6" in r.getMessage() and "running on the CPU"
               in r.getMessage() for r in caplog.records)


def test_allow_partial_with_nothing_before_the_break_is_still_an_error(tmp_path):
    import videos
    from runtime_helpers import extract, small_bundle, video
    from tsf.runtime.decode import DecodeError

    cut = videos.make_truncated(video("long_20s.mkv"), tmp_path / "cut.mkv", keep=0.1)
    with pytest.raises(DecodeError, match="truncated"):
        extract(cut, small_bundle(4), align="reference", device="cpu", allow_partial=True)


def test_an_engine_is_one_module_of_the_backends_package(monkeypatch):
    """Adding a CPU engine is adding its module: discovery puts it in --backend's choices and, by its
    AUTO_PRIORITY, in the order `auto` tries engines on the device kinds it names."""
    import pkgutil
    import types

    from tsf.runtime.backends import registry

    real_iter, real_module = pkgutil.iter_modules, registry.engine_module
    new = types.SimpleNamespace(AUTO_PRIORITY={"cpu": 15}, PRECISIONS={"cpu": ("fp32",)})
    monkeypatch.setattr(registry.pkgutil, "iter_modules",
                        lambda path: [*real_iter(path), pkgutil.ModuleInfo(None, "newcpu", False)])
    monkeypatch.setattr(registry, "engine_module", lambda name: new if name == "newcpu" else real_module(name))
    engines, auto = registry._discover()
    assert "newcpu" in engines and auto["cpu"] == ("openvino", "newcpu", "onnxruntime")
    assert auto["cuda"] == ("tensorrt", "torch", "onnxruntime")
    assert not set(engines) & registry.NOT_ENGINES
