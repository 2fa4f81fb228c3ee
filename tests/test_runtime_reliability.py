"""Ways a real run failed or resumed wrongly, each on an input the test builds: remuxes with
timestamp offsets (MKV, MP4, MPEG-TS, WebM, an mkvmerge-style MKV), an output set interrupted
between its renames, resume under other settings, held frames and 0.5 fps streams, `-o dir/`,
display rotation, a batch size beyond memory, a full report disk, names near 255 bytes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import videos
from runtime_helpers import (cosine_rows, decode_all, extract, independent_features, record_selection, run_cli,
                             small_bundle, video)
from tsf.runtime.decode import DecodeError, FrameTimeChecker, PyAVDecoder
from tsf.runtime.probe import VideoInfo, probe_video
from tsf.runtime.scale.inputs import expand_jobs


@functools.cache
def features_of(path) -> np.ndarray:
    return extract(path, small_bundle(4), device="cpu").features


@functools.cache
def vp8_source(folder) -> os.PathLike:
    return videos.make_video(folder / "vp8.webm", seconds=8, fps=25, codec="libvpx")


# ---------------------------------------------------------------- start, end and duration

@pytest.mark.parametrize("source, suffix, offset", [
    ("h264_25fps.mkv", ".mkv", "5"),     # ffmpeg -output_ts_offset 5: DURATION tag = end time 13 s
    ("h264_25fps.mkv", ".mkv", "0.48"),  # under a second: used to add a row
    ("h264_25fps.mp4", ".mp4", "5"),
    ("h264_25fps.mkv", ".ts", "1.48"),   # ffmpeg -copyts into MPEG-TS
    ("h264_25fps.mp4", ".ts", "0.48"),
    ("vp8", ".webm", "5"),
])
def test_a_remux_with_a_timestamp_offset_gives_the_originals_rows(tmp_path_factory, source, suffix, offset):
    folder = tmp_path_factory.mktemp("offsets")
    original = vp8_source(tmp_path_factory.getbasetemp()) if source == "vp8" else video(source)
    shifted = videos.remux(original, folder / f"shifted{suffix}", Fraction(offset))
    info = probe_video(shifted)
    assert info.start_time == Fraction(offset) and info.duration == probe_video(original).duration == 8
    result = extract(shifted, small_bundle(4), device="cpu")
    assert result.rows == 8 and result.stats.partial is None
    np.testing.assert_allclose(result.features, features_of(original), rtol=0, atol=1e-5)


def test_an_mkvmerge_duration_tag_is_a_length(tmp_path):
    """mkvmerge writes DURATION as a statistics tag holding the track's length (FFmpeg: its end)."""
    shifted = videos.remux(video("h264_25fps.mkv"), tmp_path / "merged.mkv", Fraction(5),
                           stream_metadata={"_STATISTICS_TAGS": "BPS DURATION NUMBER_OF_FRAMES"})
    data = shifted.read_bytes()
    assert data.count(b"00:00:13.000000000") == 1  # FFmpeg's end time, rewritten as mkvmerge's length
    shifted.write_bytes(data.replace(b"00:00:13.000000000", b"00:00:08.000000000"))
    info = probe_video(shifted)
    assert (info.start_time, info.end_time, info.duration) == (5, 13, 8)


def test_truncation_is_still_found_with_an_offset(tmp_path):
    # (MPEG-TS states no duration: FFmpeg estimates it from the last timestamps, so a cut TS
    # reads as a shorter one.)
    shifted = videos.remux(video("long_20s.mkv"), tmp_path / "shifted.mkv", Fraction(5))
    cut = videos.make_truncated(shifted, tmp_path / "cut.mkv", keep=0.5)
    with pytest.raises(DecodeError, match=r"truncated: decoding ended at (9|10)\.\d s of 20\.0 s"):
        for _ in PyAVDecoder(probe_video(cut)).frames():
            pass


# ---------------------------------------------------------------- corrupt or held

def held_frame_times() -> list[Fraction]:
    """25 fps, then frame 49 (at 1.96 s) held on screen until 4 s, then 25 fps to 8 s."""
    return [Fraction(k, 25) for k in range(50)] + [4 + Fraction(k, 25) for k in range(100)]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".ts"])
def test_a_held_frame_is_a_frame(tmp_path, monkeypatch, suffix):
    path = videos.make_video(tmp_path / f"held{suffix}", pts_seconds=held_frame_times(), fps=25)
    picks = record_selection(monkeypatch)
    result = extract(path, small_bundle(4), device="cpu")
    assert result.rows == 8 and result.stats.partial is None
    start = probe_video(path).start_time
    held = [number for t, number in picks if start + Fraction(2) <= t < start + Fraction(39, 10)]
    assert held and set(held) == {49}  # the frame on screen during the hold


def test_a_half_frame_per_second_stream_is_not_corrupt(tmp_path):
    path = videos.make_video(tmp_path / "slides.mkv", seconds=12, fps=Fraction(1, 2))
    result = extract(path, small_bundle(4), device="cpu")
    assert result.rows == 12 and result.stats.partial is None


@pytest.mark.parametrize("damage, message", [
    ("lost-cluster.mkv", r"decoding broke at 6\.0 s: 2\.0 s of video missing \(the demuxer skipped \d+ bytes"),
    ("cut.ts", r"decoding broke at \d+\.\d s: \d\.\d s of video missing \(the demuxer marked a packet corrupt\)"),
])
def test_lost_data_is_still_corrupt(tmp_path, damage, message):
    if damage == "lost-cluster.mkv":  # the demuxer resynchronises at the next cluster, 2 s later
        path = videos.make_corrupt_middle(video("long_20s.mkv"), tmp_path / damage, at=0.3)
    else:  # 10% of the transport stream's 188-byte packets cut out
        data = video_bytes = videos.make_video(tmp_path / "src.ts", seconds=20, fps=25, bframes=0).read_bytes()
        packets = len(video_bytes) // 188
        data = video_bytes[:188 * (packets * 3 // 10)] + video_bytes[188 * (packets * 4 // 10):]
        path = tmp_path / damage
        path.write_bytes(data)
    with pytest.raises(DecodeError, match=message):
        for _ in PyAVDecoder(probe_video(path)).frames():
            pass


def info_at(fps) -> VideoInfo:
    from pathlib import Path

    return VideoInfo(path=Path("x.mkv"), size_bytes=1, mtime=0.0, container="matroska,webm", stream_index=0,
                     codec="h264", width=456, height=256, fps=Fraction(fps), time_base=Fraction(1, 1000),
                     start_time=Fraction(0), duration=Fraction(20), frame_count_estimate=500)


def test_the_frame_time_rule():
    # A decoder that reports damage: a long jump is lost data only with a report around it.
    checker = FrameTimeChecker(info_at(25), damage_visible=True)
    checker.packet(0, 1000, Fraction(0))
    assert checker.accept(Fraction(0)) and checker.accept(Fraction(5))  # held for 5 s: a frame
    checker.packet(1000 + 70_000, 1000, Fraction(7))  # 70 kB skipped before the packet at 7 s
    with pytest.raises(DecodeError, match=r"broke at 5\.0 s: 2\.0 s of video missing \(the demuxer skipped 70000"):
        checker.accept(Fraction(7))
    checker = FrameTimeChecker(info_at(25), damage_visible=True)
    checker.damaged("the demuxer marked a packet corrupt")
    checker.packet(None, 0, Fraction(1))
    assert checker.accept(Fraction(0)) and checker.accept(Fraction(1))  # a short jump: within the timing
    for k in range(26, 100):  # damage without a long jump (concealed by the decoder) is forgotten
        assert checker.accept(Fraction(k, 25))
    assert checker.accept(Fraction(10))
    # A decoder that cannot see damage: any jump beyond the stream's own timing.
    checker = FrameTimeChecker(info_at(Fraction(1, 2)))
    assert checker.accept(Fraction(0)) and checker.accept(Fraction(2)) and checker.accept(Fraction(6))
    with pytest.raises(DecodeError, match="4.0 s of video missing"):
        checker.accept(Fraction(10) + Fraction(1, 1000))


# ---------------------------------------------------------------- output sets

def cli(capsys, *args):
    return run_cli(capsys, [*args, "--device", "cpu", "-q"])


def set_files(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_set_interrupted_between_its_renames_is_redone(tmp_path, capsys):
    out = tmp_path / "f.npy"
    args = [video("h264_25fps.mkv"), "-o", out, "--model", small_bundle(4), "--heads"]
    assert cli(capsys, *args)[0] == 0
    finished = set_files(tmp_path)
    # SIGKILL (or Slurm's SIGTERM) after the manifest and the heads were renamed, before the
    # features: the features are still a temporary.
    os.rename(out, tmp_path / ".f.npy.k1ll3d00.part")
    code, err = cli(capsys, *args)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["f.heads.npz", "f.json", "f.npy"]  # the .part is gone too
    assert set_files(tmp_path) == finished | {"f.json": set_files(tmp_path)["f.json"]}  # created, timings differ
    # Features edited after tsf wrote them are not debris: named, kept, replaced only with --overwrite.
    (tmp_path / "f.npy").write_bytes(finished["f.npy"][:-4] + b"\0\0\0\0")
    code, err = cli(capsys, *args)
    assert code == 2 and err == (f"error: {out} was changed after tsf wrote it (it differs from what f.json "
                                 "records); use --overwrite to replace it\n")
    assert set_files(tmp_path)["f.npy"] == finished["f.npy"][:-4] + b"\0\0\0\0"
    code, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert set_files(tmp_path)["f.npy"] == finished["f.npy"]


def test_a_process_terminated_between_its_renames_leaves_debris_the_next_run_redoes(tmp_path, capsys):
    """A real SIGTERM (how Slurm pre-empts) right after the manifest's rename, before the data files'."""
    out = tmp_path / "f.npy"
    child = textwrap.dedent(f"""
        import os, signal, sys
        real_replace = os.replace
        def replace_then_terminate(src, dst):
            real_replace(src, dst)
            if str(dst) == {str(tmp_path / "f.json")!r}:
                os.kill(os.getpid(), signal.SIGTERM)
        os.replace = replace_then_terminate
        from tsf.runtime.cli import main
        main(sys.argv[1:])
    """)
    args = [str(video("h264_25fps.mkv")), "-o", str(out), "--model", str(small_bundle(4)), "--device", "cpu",
            "--heads", "-q"]
    killed = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    left = sorted(os.listdir(tmp_path))
    assert "f.json" in left and "f.npy" not in left and any(n.endswith(".part") for n in left), left
    code, err = run_cli(capsys, args)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["f.heads.npz", "f.json", "f.npy"]
    assert np.load(out).shape == (8, 128)
    # The same during an --overwrite with other settings: the new manifest in place, the old set's
    # files beside it, which it records as the ones it replaces, so the next run can prove them tsf's.
    other = args + ["--align", "reference"]
    killed = subprocess.run([sys.executable, "-c", child, *other, "--overwrite"], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    assert json.loads((tmp_path / "f.json").read_text())["alignment"] == "reference" and np.load(out).shape == (8, 128)
    code, err = run_cli(capsys, other)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["f.heads.npz", "f.json", "f.npy"] and np.load(out).shape == (3, 128)


def another_model(folder):
    """small_bundle(4) with other weights (a few bytes of a weight changed), bundle.json updated."""
    bundle = folder / "other-model"
    shutil.copytree(small_bundle(4), bundle)
    model = bytearray((bundle / "model.onnx").read_bytes())
    model[len(model) // 2] ^= 1
    (bundle / "model.onnx").write_bytes(bytes(model))
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["onnx"]["sha256"] = hashlib.sha256(model).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(meta))
    from tsf.runtime.bundle import load_bundle

    return bundle, load_bundle(bundle).bundle_id


def test_resume_keeps_only_a_set_with_the_same_settings(tmp_path, capsys):
    out = tmp_path / "out" / "f.npy"
    base = [video("h264_25fps.mkv"), "-o", out, "--model", small_bundle(4)]
    assert cli(capsys, *base, "--heads")[0] == 0
    first = set_files(out.parent)
    made_at = json.loads(first["f.json"])["fingerprint"]["precision"]  # what auto chose on this CPU
    other_precision = "fp16" if made_at != "fp16" else "fp32"
    for same in ([], ["--precision", made_at], ["--batch-size", "3"]):  # skipped (its heads are more than asked)
        assert cli(capsys, *base, *same)[0] == 0
        assert set_files(out.parent) == first

    other, other_id = another_model(tmp_path)
    mine = json.loads(first["f.json"])["fingerprint"]["bundle_id"]
    for extra, difference in [(["--align", "reference"], "alignment 'center' there, 'reference' here"),
                              (["--format", "reference"], "format 'npy' there, 'reference' here"),
                              (["--precision", other_precision],
                               f"precision '{made_at}' there, '{other_precision}' here"),
                              (["--model", other], f"bundle_id '{mine}' there, '{other_id}' here")]:
        code, err = cli(capsys, *base, *extra)
        assert code == 2 and err == (f"error: {out} was extracted with other settings ({difference}); "
                                     "use --overwrite to replace it\n")
        assert set_files(out.parent) == first

    # --overwrite replaces the whole set: the old model's heads do not stay beside new features.
    code, err = cli(capsys, *base, "--model", other, "--overwrite")
    assert code == 0, err
    assert sorted(os.listdir(out.parent)) == ["f.json", "f.npy"]
    assert json.loads((out.parent / "f.json").read_text())["fingerprint"]["bundle_id"] == other_id
    # Adding heads to a finished set adds them.
    code, err = cli(capsys, *base, "--model", other, "--heads")
    assert code == 0, err
    assert sorted(os.listdir(out.parent)) == ["f.heads.npz", "f.json", "f.npy"]
    assert np.load(out.parent / "f.heads.npz")["logits"].shape == (8, 18)


def test_o_with_a_trailing_slash_is_a_directory(tmp_path, capsys):
    source = video("h264_25fps.mkv")
    assert expand_jobs([source], f"{tmp_path / 'new'}{os.sep}")[0].output == tmp_path / "new" / "h264_25fps.npy"
    code, err = cli(capsys, source, "-o", f"{tmp_path / 'new'}/", "--model", small_bundle(4))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "new")) == ["h264_25fps.json", "h264_25fps.npy"]


def test_a_name_too_long_fails_before_the_work_and_one_that_fits_works(tmp_path, capsys):
    fits = tmp_path / ("x" * 245 + ".npy")  # 249 bytes: its temporaries would be 264
    code, err = cli(capsys, video("h264_25fps.mkv"), "-o", fits, "--model", small_bundle(4))
    assert code == 0, err
    assert np.load(fits).shape == (8, 128)
    code, err = cli(capsys, video("long_20s.mkv"), "-o", tmp_path / ("y" * 246 + ".npy"), "--model",
                    small_bundle(4), "--heads")
    assert code == 2 and err.count("\n") == 1 and "is 256 bytes, more than the 255 this file system allows" in err
    assert "random weights" not in err  # refused before the model was even loaded


def test_a_full_report_disk_names_the_report(tmp_path, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    code, err = cli(capsys, video("h264_25fps.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4),
                    "--report", "/dev/full")
    assert code == 2 and err.endswith("\nerror: cannot write the report /dev/full: no space left on device\n"), err
    assert err.count("\n") == 2 and "random weights" in err


# ---------------------------------------------------------------- what the frames look like, how many fit

@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_display_rotation_is_applied_as_players_do(tmp_path, monkeypatch, degrees):
    """A phone video: the display matrix turns the stored picture; rows are computed on what is shown."""
    path = videos.make_video(tmp_path / "phone.mp4", seconds=6, fps=25, bframes=0, rotation=degrees)
    assert probe_video(path).rotation == degrees % 360
    picks = record_selection(monkeypatch)
    result = extract(path, small_bundle(4), device="cpu")
    _, images, _ = decode_all(path)  # as stored
    shown = {t: np.rot90(images[number], degrees // 90) for t, number in picks}
    times = [[Fraction(i) + Fraction(1, 2) - Fraction(5, 2) + k * Fraction(5, 3) for k in range(4)] for i in range(6)]
    expected = independent_features(small_bundle(4), [[shown[t] for t in row] for row in times])
    assert cosine_rows(result.features, expected).min() >= 0.9999


def test_a_batch_beyond_memory_is_refused_with_the_size_that_fits(tmp_path, capsys, monkeypatch):
    from tsf.runtime import pipeline

    monkeypatch.setattr(pipeline, "available_memory", lambda: 100 * 2**20)
    args = [video("h264_25fps.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4)]
    code, err = cli(capsys, *args, "--batch-size", "100000")
    errors = [line for line in err.splitlines() if "random weights" not in line]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith("error: --batch-size 100000: a batch of 8 windows needs about")
    fitting = int(errors[0].rsplit("--batch-size ", 1)[1].split()[0])
    assert 1 <= fitting < 8 and list(tmp_path.iterdir()) == []
    assert cli(capsys, *args, "--batch-size", str(fitting))[0] == 0


def test_available_memory_is_read_from_the_system():
    from tsf.runtime.pipeline import available_memory

    available = available_memory()
    assert available is None or 0 < available < 2**50


def test_ctrl_c_during_paddle_work_is_held_until_a_safe_point():
    """DeferredInterrupt: the first SIGINT is raised at `check()`, a second at once, and a block that
    fails after Ctrl-C ends in KeyboardInterrupt; the previous handler is back afterwards."""
    from tsf.runtime.console import DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupt() as interrupt:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next bytecode
            steps.append("noted, not raised")
            interrupt.check()
            steps.append("check() did not raise")
    assert steps == ["noted, not raised"]
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupt():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("a second Ctrl-C did not raise at once")
    assert steps == ["noted, not raised"]
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupt():
            os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("a child process died of the same signal")
    with DeferredInterrupt() as interrupt:
        pass
    assert not interrupt.pressed
    assert signal.getsignal(signal.SIGINT) is before


MALLOC_CHECKER = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"


@pytest.mark.skipif(not os.path.exists(MALLOC_CHECKER), reason="glibc's malloc checker is not installed here")
def test_a_command_that_ran_openvino_exits_cleanly(tmp_path):
    """OpenVINO's static destructors corrupt the heap at exit (docs/toolchain.md); under glibc's
    checker that aborted 3 of 8 runs before tsf-extract left without them. Four runs: all exit 0."""
    pytest.importorskip("openvino")
    env = dict(os.environ, LD_PRELOAD=MALLOC_CHECKER, GLIBC_TUNABLES="glibc.malloc.check=3")
    command = [str(Path(sys.executable).parent / "tsf-extract"), str(video("h264_25fps.mkv")),
               "-o", str(tmp_path / "f.npy"), "--model", str(small_bundle(4)), "--backend", "openvino",
               "--overwrite", "-q"]
    for _ in range(4):
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr


def test_two_openvino_engines_dropped_in_the_order_made_leave_signals_working():
    """Each OpenVINO Core's CPU plugin gives the compiling thread an alternate signal stack and puts
    back the previous one when torn down: with a Core per engine, dropping A then B left the thread
    on A's freed stack and the next Python-handled signal (Ctrl-C) killed the process with SIGSEGV
    (docs/toolchain.md). In a child process, so that a crash fails this test and not the suite."""
    pytest.importorskip("openvino")
    child = textwrap.dedent("""
        import gc, os, signal, sys
        from tsf.runtime.backends.openvino import load
        from tsf.runtime.bundle import load_bundle
        from tsf.runtime.gpu import CPU
        bundle = load_bundle(sys.argv[1])
        first = load(bundle, CPU, "fp32", 1)
        second = load(bundle, CPU, "fp32", 1)
        del first
        del second
        gc.collect()
        signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("survived", flush=True)
    """)
    run = subprocess.run([sys.executable, "-c", child, str(small_bundle(4))], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout == "handled\nsurvived\n", (run.returncode, run.stdout, run.stderr)


# ---------------------------------------------------------------- streams, timestamps, pixels

def joined_ts(source: Path, path: Path, restart: bool, copies: int = 2, seconds: Fraction = Fraction(8)) -> Path:
    """`source` (an MPEG-TS) `copies` times end to end: with `restart`, its bytes repeated (what
    `cat a.ts b.ts` gives: every copy's timestamps start again); without, remuxed into one
    recording whose timestamps run on (copy k shifted by k * `seconds`)."""
    if restart:
        path.write_bytes(source.read_bytes() * copies)
        return path
    import av

    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        packets = [p for p in inp.demux(inp.streams.video[0]) if p.dts is not None]
        for k in range(copies):
            shift = int(k * seconds / inp.streams.video[0].time_base)
            for packet in packets:
                packet.pts, packet.dts, packet.stream = packet.pts + shift, packet.dts + shift, stream
                out.mux(packet)
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
    return path


def test_a_transport_stream_whose_timestamps_restart_is_extracted_whole(tmp_path, caplog):
    """An 8-s TS joined to itself: 16 s, 400 frames, timestamps starting again half way. Its rows are
    those of the same frames recorded as one stream (the second copy's times follow the first's)."""
    source = videos.make_video(tmp_path / "half.ts", seconds=8, fps=25)
    joined = joined_ts(source, tmp_path / "joined.ts", restart=True)
    continuous = joined_ts(source, tmp_path / "continuous.ts", restart=False)
    info = probe_video(joined)
    assert (info.duration, info.timestamp_restarts) == (16, 1)
    assert (probe_video(continuous).duration, probe_video(continuous).timestamp_restarts) == (16, 0)
    times = [frame.pts_time for frame in PyAVDecoder(info).frames()]
    assert len(times) == 400 and times == [info.start_time + Fraction(k, 25) for k in range(400)]
    with caplog.at_level("INFO", logger="tsf"):
        result = extract(joined, small_bundle(4), device="cpu")
    assert result.rows == 16 and result.stats.partial is None
    assert "the timestamps restart at 8.0 s" in caplog.text
    np.testing.assert_allclose(result.features, extract(continuous, small_bundle(4), device="cpu").features,
                               rtol=0, atol=1e-5)


def test_a_restart_is_scanned_for_only_when_the_file_holds_more_than_stated_or_a_decoder_meets_one(
        tmp_path, monkeypatch, caplog):
    """Scanning a whole TS costs seconds per gigabyte: a file whose size fits its stated duration is
    not scanned; one the cheap check misses is scanned when decoding meets the restart, and its rows
    are the whole video's, never cut at the restart."""
    from tsf.runtime import probe

    source = videos.make_video(tmp_path / "half.ts", seconds=8, fps=25)
    joined = joined_ts(source, tmp_path / "joined.ts", restart=True)
    continuous = joined_ts(source, tmp_path / "continuous.ts", restart=False)
    real_scan = probe._timestamp_runs
    scanned = []
    monkeypatch.setattr(probe, "_timestamp_runs", lambda *a: scanned.append(a[0].name) or real_scan(*a))
    assert probe_video(continuous).duration == 16 and scanned == []
    monkeypatch.setattr(probe, "_holds_more_than_stated", lambda *a: False)  # as if the check missed it
    assert probe_video(joined).timestamp_restarts == 0 and scanned == []
    with caplog.at_level("INFO", logger="tsf"):
        result = extract(joined, small_bundle(4), device="cpu")
    assert result.rows == 16 and scanned == ["joined.ts"]
    assert "which the probe did not foresee; scanning the whole file" in caplog.text


@pytest.mark.parametrize("name, cover", [("cover.mkv", "mjpeg"), ("cover.mov", "png")])
def test_a_cover_picture_ahead_of_the_video_is_not_the_video(tmp_path, name, cover):
    """A one-frame picture track before the video, without the attached-picture flag: the MKV was
    extracted from the picture (1 row), the MOV refused as a still image."""
    path = videos.make_video(tmp_path / name, seconds=8, fps=25, cover=cover)
    # The same coded video without the picture (lossy x264 is not reproducible here: no re-encoding).
    plain = videos.remux(path, tmp_path / f"plain-{name}", only={1})
    info = probe_video(path)
    assert (info.stream_index, info.codec, info.duration) == (1, "h264", 8)
    result = extract(path, small_bundle(4), device="cpu")
    assert result.rows == 8
    np.testing.assert_allclose(result.features, extract(plain, small_bundle(4), device="cpu").features,
                               rtol=0, atol=1e-5)


def shown_proportions_preprocess(pixel_aspect: Fraction):
    """The reference's preprocessing at the picture's shown proportions (float64, tests/reference)."""
    from reference.numpy_preprocess import bilinear_resize, crop_offset

    def preprocess(rgb):
        height, width = rgb.shape[:2]
        shown_width = width * pixel_aspect
        if height <= shown_width:
            size = (224, int(shown_width * 224 // height))
        else:
            size = (int(height * 224 // shown_width), 224)
        image = bilinear_resize(rgb.astype(np.float64) / 255, *size)
        top, left = crop_offset(size[0]), crop_offset(size[1])
        return image[top:top + 224, left:left + 224].transpose(2, 0, 1)
    return preprocess


@pytest.mark.parametrize("sample_aspect_ratio", [Fraction(64, 45), Fraction(16, 15)])
def test_anamorphic_pal_is_seen_in_its_shown_proportions(tmp_path, monkeypatch, sample_aspect_ratio):
    """720 x 576 with 16:9 (64:45) or 4:3 (16:15) pixels: the picture is resized to what players
    show (1024 x 576, 768 x 576) before the short side goes to 224, as the reference's ffmpeg
    re-encode to 456 x 256 did for 16:9 broadcasts (docs/reference.md, section 4)."""
    path = videos.make_video(tmp_path / "pal.mkv", seconds=6, fps=25, size=(720, 576), bframes=0,
                             sample_aspect_ratio=sample_aspect_ratio)
    assert probe_video(path).sample_aspect_ratio == sample_aspect_ratio
    picks = record_selection(monkeypatch)
    result = extract(path, small_bundle(4), device="cpu")
    _, images, _ = decode_all(path)
    picked = dict(picks)
    times = [[Fraction(i) + Fraction(1, 2) - Fraction(5, 2) + k * Fraction(5, 3) for k in range(4)] for i in range(6)]
    rows = [[images[picked[t]] for t in row] for row in times]
    expected = independent_features(small_bundle(4), rows, shown_proportions_preprocess(sample_aspect_ratio))
    as_stored = independent_features(small_bundle(4), rows)
    distance = 1 - cosine_rows(result.features, expected).min()
    assert distance <= 1e-4
    # The stored proportions give other rows (a negative control for the comparison).
    assert 1 - cosine_rows(result.features, as_stored).min() > 10 * distance


def test_interlaced_video_is_used_as_stored(tmp_path, monkeypatch):
    """Top-field-first interlaced H.264: each decoded frame, both fields woven, is a frame (as the
    reference's re-encode had them); nothing is deinterlaced (docs/reference.md, section 4)."""
    import av

    path = videos.make_video(tmp_path / "interlaced.mkv", seconds=6, fps=25, size=(720, 576), bframes=0,
                             interlaced=True)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).interlaced_frame
    picks = record_selection(monkeypatch)
    result = extract(path, small_bundle(4), device="cpu")
    _, images, _ = decode_all(path)
    picked = dict(picks)
    times = [[Fraction(i) + Fraction(1, 2) - Fraction(5, 2) + k * Fraction(5, 3) for k in range(4)] for i in range(6)]
    expected = independent_features(small_bundle(4), [[images[picked[t]] for t in row] for row in times])
    assert cosine_rows(result.features, expected).min() >= 0.9999
