"""The runtime's pure stages against independent references: preprocessing (float64 NumPy
re-implementation of section 4), reference frame indices (section 3), timestamp selection (a
brute-force reading of the rule), the frame buffer, job expansion and atomic writes."""

from __future__ import annotations

import hashlib
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from reference.numpy_preprocess import bilinear_resize, crop_offset, reference_preprocess
from reference.sampling import OFFSETS_AT_25_FPS, reference_rows
from tsf.runtime import outputs as write
from tsf.runtime.batch import BatchStats, window_batches
from tsf.runtime.bundle import Preprocessing, Window
from tsf.runtime.errors import InputError, OutputError
from tsf.runtime.jobs import Job, run_jobs
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


def test_run_jobs_goes_on_after_a_failure_and_skips_finished(tmp_path):
    jobs = [Job(Path(f"{name}.mkv"), tmp_path / f"{name}.npy") for name in ("a", "bad", "done", "c")]
    lines, ran = [], []

    def process(job):
        if job.video.stem == "bad":
            raise InputError(f"{job.video}: not a video")
        ran.append(job.video.stem)

    summary = run_jobs(jobs, process, is_done=lambda j: j.video.stem == "done", report=lines.append)
    assert ran == ["a", "c"] and lines == ["error: bad.mkv: not a video"]
    assert summary.line() == "2 done, 1 skipped (already extracted), 1 failed" and not summary.ok


# ---------------------------------------------------------------- writes

def arrays(n=3, width=8, classes=5):
    rng = np.random.default_rng(0)
    return dict(features=rng.standard_normal((n, width)).astype(np.float32),
                logits=rng.standard_normal((n, classes)).astype(np.float32),
                event_times=rng.random((n, classes)).astype(np.float32))


def test_write_plain_heads_and_reference_format(tmp_path):
    a = arrays()
    paths = write.write_outputs(tmp_path / "f.npy", metadata={"rows": 3}, heads=True, **a)
    assert np.array_equal(np.load(paths["features"]), a["features"])
    heads = np.load(paths["heads"])
    assert np.array_equal(heads["logits"], a["logits"]) and np.array_equal(heads["event_times"], a["event_times"])
    manifest = json.loads(paths["metadata"].read_text())
    assert manifest.pop("outputs") == {
        kind: {"file": paths[kind].name, "bytes": paths[kind].stat().st_size,
               "sha256": hashlib.sha256(paths[kind].read_bytes()).hexdigest()} for kind in ("features", "heads")}
    assert manifest == {"rows": 3}
    paths = write.write_outputs(tmp_path / "r.npy", metadata={}, fmt="reference", **a)
    with pytest.raises(ValueError):
        np.load(paths["features"])  # the reference's format is a pickle: refused without allow_pickle
    d = np.load(paths["features"], allow_pickle=True).item()
    assert d["features"].shape == (3, 1, 8) and d["cls_score_all"].shape == (3, 1, 5)
    assert np.array_equal(d["event_times"][:, 0], a["event_times"])
    # named for what it is: r.pkl, not r.npy; the metadata describes that file
    assert sorted(os.listdir(tmp_path)) == ["f.heads.npz", "f.json", "f.npy", "r.json", "r.pkl"]
    finished = write.inspect_outputs(tmp_path / "r.npy")
    assert finished.state == write.FINISHED and finished.paths["features"] == tmp_path / "r.pkl"
    described = write.feature_file_description("reference", a["features"], a["logits"], a["event_times"])
    assert described["shape"] == [3, 1, 8] and described["load"] == "np.load(path, allow_pickle=True).item()"
    assert described["arrays"] == {"features": [3, 1, 8], "cls_score_all": [3, 1, 5], "event_times": [3, 1, 5]}
    assert write.feature_file_description("npy", a["features"], a["logits"], a["event_times"])["shape"] == [3, 8]


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


def test_write_never_clobbers_and_cleans_up_on_interrupt(tmp_path, monkeypatch):
    a = arrays()
    write.write_outputs(tmp_path / "f.npy", metadata={"v": 1}, heads=True, **a)
    with pytest.raises(OutputError, match="exists"):
        write.write_outputs(tmp_path / "f.npy", metadata={"v": 2}, **a)
    assert json.loads((tmp_path / "f.json").read_text())["v"] == 1
    # Replacing removes the files the new set does not have (no stale heads beside new features).
    write.write_outputs(tmp_path / "f.npy", metadata={"v": 3}, replace=True, **a)
    assert json.loads((tmp_path / "f.json").read_text())["v"] == 3
    assert sorted(os.listdir(tmp_path)) == ["f.json", "f.npy"]

    calls = []
    real_replace = os.replace

    def interrupted_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # after the metadata, before the features
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(write.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        write.write_outputs(tmp_path / "g" / "g.npy", metadata={}, **a)
    assert sorted(os.listdir(tmp_path)) == ["f.json", "f.npy"]  # nor the directory made for it


def test_output_set_states(tmp_path):
    a = arrays()
    out = tmp_path / "f.npy"
    assert write.inspect_outputs(out).state == write.ABSENT
    write.write_outputs(out, metadata={"v": 1}, heads=True, **a)
    finished = write.inspect_outputs(out)
    assert finished.state == write.FINISHED and finished.kinds == {"features", "metadata", "heads"}

    # What a kill between the renames leaves: the manifest without (or with other) files.
    (tmp_path / "f.heads.npz").unlink()
    assert write.inspect_outputs(out).state == write.DEBRIS
    (tmp_path / "f.npy").write_bytes(b"old features")
    debris = write.inspect_outputs(out)
    assert debris.state == write.DEBRIS and debris.problem == f"{tmp_path / 'f.npy'} does not match f.json"
    stale = [tmp_path / ".f.npy.abcd1234.part", tmp_path / ".f.json.zz_99_zz.part"]
    kept = [tmp_path / ".f.npy.abcd1234.part.mine", tmp_path / ".other.npy.abcd1234.part"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert write.clear_unfinished(out).state == write.ABSENT
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in kept)

    # Files no manifest vouches for are someone else's.
    (tmp_path / "f.npy").write_bytes(b"precious")
    foreign = write.clear_unfinished(out)
    assert foreign.state == write.FOREIGN and "f.npy exists without the f.json" in foreign.problem
    (tmp_path / "f.json").write_text("{}")
    assert "f.json exists and is not a tsf output manifest" in write.inspect_outputs(out).problem
    (tmp_path / "f.json").write_text(json.dumps({"outputs": {"features": str(out)}}))  # before manifests
    assert "f.json lists no checksums to check its set against" in write.inspect_outputs(out).problem
    assert (tmp_path / "f.npy").read_bytes() == b"precious"


def test_names_too_long_for_the_file_system_fail_before_any_work(tmp_path):
    stem = "x" * (255 - len(".heads.npz"))
    paths = write.check_outputs(tmp_path / "sub" / f"{stem}.npy", heads=True)  # 255 bytes: fits
    assert not (tmp_path / "sub").exists()  # checking creates nothing
    write.write_outputs(paths["features"], metadata={}, heads=True, **arrays())  # temporaries are cut to fit
    with pytest.raises(OutputError, match=r"the name is 256 bytes, more than the 255 this file system allows"):
        write.check_outputs(tmp_path / f"{stem}x.npy", heads=True)
    with pytest.raises(OutputError, match="is 300 bytes"):
        write.check_outputs(tmp_path / ("d" * 300) / "f.npy")


def test_unwritable_output_directory(tmp_path):
    blocker = touch(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write"):
        write.check_outputs(blocker / "sub" / "out.npy")


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


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC while the features are flushed (the metadata fitted): the error names the features file."""
    import errno

    real_fsync = os.fsync

    def no_space_for_features(fd):
        if ".f.npy." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(write.os, "fsync", no_space_for_features)
    with pytest.raises(OutputError) as caught:
        write.write_outputs(tmp_path / "f.npy", metadata={}, heads=True, **arrays())
    assert str(caught.value) == f"cannot write {tmp_path / 'f.npy'}: no space left on device"
    assert os.listdir(tmp_path) == []


def test_allow_partial_with_nothing_before_the_break_is_still_an_error(tmp_path):
    import videos
    from runtime_helpers import extract, small_bundle, video
    from tsf.runtime.decode import DecodeError

    cut = videos.make_truncated(video("long_20s.mkv"), tmp_path / "cut.mkv", keep=0.1)
    with pytest.raises(DecodeError, match="truncated"):
        extract(cut, small_bundle(4), align="reference", device="cpu", allow_partial=True)
