"""Every bad input is one `error: ...` line, exit code 2, and no output file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import videos
from runtime_helpers import run_cli, small_bundle, video


def make_input(kind, tmp_path):
    path = tmp_path / "in"
    path.mkdir()
    if kind == "missing":
        return path / "nope.mkv", "no such file"
    if kind == "empty":
        (path / "empty.mkv").write_bytes(b"")
        return path / "empty.mkv", "empty file"
    if kind == "text":
        (path / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
        return path / "notes.mp4", "not a readable video"
    if kind == "random":
        (path / "noise.mkv").write_bytes(bytes(range(256)) * 400)
        return path / "noise.mkv", "not a readable video"
    if kind == "directory-of-nothing":
        return tmp_path / "in", "no video files"
    if kind == "audio-only":
        return videos.make_audio_only(path / "sound.mka"), "no video stream (contains audio)"
    if kind == "truncated-mkv":
        return videos.make_truncated(video("long_20s.mkv"), path / "cut.mkv", 0.5), "truncated: decoding ended at 10.0 s of 20.0 s"
    if kind == "truncated-mp4":  # the index (moov) sits at the end: nothing to read at all
        return videos.make_truncated(video("long_20s.mp4"), path / "cut.mp4", 0.5), "not a readable video"
    if kind == "corrupt-mkv":
        return videos.make_corrupt_middle(video("long_20s.mkv"), path / "bad.mkv"), "decoding broke at 10.0 s"
    if kind in ("jpeg", "png", "one-frame-mp4"):
        return _still_image(kind, path), "a still image"
    if kind == "corrupt-mp4":
        return videos.make_corrupt_middle(video("long_20s.mp4"), path / "bad.mp4"), "decoding broke at 10.0 s (Invalid data found"
    if kind == "fifo":  # opening it would wait for a writer for ever
        os.mkfifo(path / "live.ts")
        return path / "live.ts", "live.ts: a pipe (FIFO), not a video file"
    if kind == "character-device":
        return Path("/dev/zero"), "/dev/zero: a character device, not a video file"
    raise AssertionError(kind)


def _still_image(kind, folder):
    """A JPEG and a PNG, written with FFmpeg's image encoders, and an MP4 of one frame."""
    import av

    if kind == "one-frame-mp4":
        return videos.make_video(folder / "still.mp4", frames=1)
    path = folder / ("photo.jpg" if kind == "jpeg" else "shot.png")
    codec, pix_fmt = ("mjpeg", "yuvj420p") if kind == "jpeg" else ("png", "rgb24")
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = 320, 180, pix_fmt
        for packet in stream.encode(av.VideoFrame.from_ndarray(videos.frame_image(0, 320, 180), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "random", "directory-of-nothing", "audio-only",
                                  "truncated-mkv", "truncated-mp4", "corrupt-mkv", "corrupt-mp4", "jpeg", "png",
                                  "one-frame-mp4", "fifo", "character-device"])
def test_bad_video(kind, tmp_path, capsys):
    path, message = make_input(kind, tmp_path)
    out = tmp_path / "out"
    code, err = run_cli(capsys, [path, "-o", out / "deeper" / "f.npy", "--model", small_bundle(4), "--device", "cpu",
                                 "-q"])
    assert code == 2
    # Damage found while decoding comes after the model loaded (and warned that it is random-init).
    lines = [line for line in err.splitlines() if "random weights" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not out.exists()  # not even the directories it would have written into


def test_too_short_for_reference_alignment(tmp_path, capsys):
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4),
                         "--align", "reference"])
    assert code == 2 and err.count("\n") == 1 and "too short for --align reference" in err
    assert list(tmp_path.iterdir()) == []
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4), "-q"])
    assert code == 0 and err.count("\n") == 1 and "random weights" in err  # centre alignment: 5 rows


@pytest.mark.parametrize("damage,message", [
    ("missing", "no model bundle at"),
    ("no-json", "bundle.json is missing"),
    ("no-onnx", "model.onnx is missing"),
    ("version", "format_version 99 is not supported"),
    ("garbage-onnx", "model.onnx does not match the sha256 in"),
    ("wrong-sha256", "model.onnx does not match the sha256 in"),
    ("another-bundles-onnx", "model.onnx does not match the sha256 in"),
    ("edited-width", "output features is [batch, 128], but bundle.json's architecture needs [batch, 256]"),
    ("edited-classes", "output logits is [batch, 18], but bundle.json's architecture needs [batch, 5]"),
    ("edited-frames", "input video is [batch, 3, 4, 224, 224], but bundle.json's architecture needs "
                      "[batch, 3, 16, 224, 224]"),
    ("edited-image-size", "input video is [batch, 3, 4, 224, 224], but bundle.json's architecture needs "
                          "[batch, 3, 4, 112, 112]"),
])
def test_bad_bundle(damage, message, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle(4), bundle)
    if damage == "missing":
        shutil.rmtree(bundle)
    elif damage == "no-json":
        (bundle / "bundle.json").unlink()
    elif damage == "no-onnx":
        (bundle / "model.onnx").unlink()
    elif damage == "version":
        meta = json.loads((bundle / "bundle.json").read_text())
        meta["format_version"] = 99
        (bundle / "bundle.json").write_text(json.dumps(meta))
    elif damage == "garbage-onnx":
        (bundle / "model.onnx").write_bytes(b"\x00garbage" * 100)
    elif damage == "another-bundles-onnx":  # same architecture, other weights: same shapes, same size
        model = bytearray((bundle / "model.onnx").read_bytes())
        middle = len(model) // 2  # inside the weights: a float or two of another model
        model[middle:middle + 8] = bytes(255 - b for b in model[middle:middle + 8])
        (bundle / "model.onnx").write_bytes(bytes(model))
    else:
        meta = json.loads((bundle / "bundle.json").read_text())
        if damage == "wrong-sha256":
            meta["onnx"]["sha256"] = "0" * 64
        else:
            key, value = {"edited-width": ("width", 256), "edited-classes": ("classes", 5),
                          "edited-frames": ("frames", 16), "edited-image-size": ("image_size", 112)}[damage]
            meta["architecture"][key] = value
            meta["class_names"] = meta["class_names"][:meta["architecture"]["classes"]]
        (bundle / "bundle.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", out / "f.npy", "--model", bundle, "--device", "cpu", "-q"])
    assert code == 2
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], err
    assert not out.exists() or list(out.iterdir()) == []


def test_default_bundle_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", tmp_path / "f.npy"])
    assert code == 2 and err.count("\n") == 1 and "no model bundle at" in err and "tsf-export" in err


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", blocker / "sub" / "f.npy", "--model", small_bundle(4)])
    assert code == 2 and err.count("\n") == 1 and "cannot write to" in err


def test_files_no_manifest_vouches_for_are_not_clobbered(tmp_path, capsys):
    (tmp_path / "f.npy").write_bytes(b"precious")
    (tmp_path / "f.json").write_text("{}")
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4)])
    assert code == 2 and err.count("\n") == 1, err
    assert "f.json exists and is not a tsf output manifest; use --overwrite to replace it" in err
    assert (tmp_path / "f.npy").read_bytes() == b"precious"
    (tmp_path / "f.json").unlink()
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4)])
    assert code == 2 and err.count("\n") == 1 and "f.npy exists without the f.json that would vouch for it" in err
    assert (tmp_path / "f.npy").read_bytes() == b"precious"


def test_usage_errors_are_one_line(capsys):
    code, err = run_cli(capsys, ["--align", "sideways", "x.mkv"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    code, err = run_cli(capsys, [])
    assert code == 2 and err == "error: no input videos (give VIDEO..., a directory or --list FILE)\n"


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    (tmp_path / "x.mkv").write_bytes(b"junk" * 100)
    proc = subprocess.run([sys.executable, "-m", "tsf.runtime", str(tmp_path / "x.mkv"), "--model",
                           str(small_bundle(4))], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def _has_gpu() -> bool:
    from tsf.runtime.gpu import cuda_device_count

    return cuda_device_count() > 0


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
@pytest.mark.parametrize("args,message", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU 0 (no NVIDIA driver or GPU found)"),
    (["--backend", "tensorrt", "--device", "cpu"], "--backend tensorrt: tensorrt runs on cuda only, not on cpu"),
    (["--decoder", "nvdec"], "--decoder nvdec: "),
])
def test_gpu_requests_without_a_gpu_fail_clearly(args, message, tmp_path, capsys):
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4), "-q"] + args)
    errors = [line for line in err.splitlines() if "random weights" not in line]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], err
    assert list(tmp_path.iterdir()) == []


def test_sigint_leaves_no_output(tmp_path):
    """A real Ctrl-C (SIGINT) in the middle of a video: exit 130, nothing written, no temporaries.

    The child installs Python's Ctrl-C handler itself: a shell that starts the suite in the
    background (`nohup`, `cmd &`) passes SIGINT on as ignored, and Python then installs none (tsf is
    right to keep an inherited "ignore"). It says "ready" after its first batch and waits there for
    the signal, so the Ctrl-C lands mid-video however loaded the machine is."""
    import signal

    child = textwrap.dedent("""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from tsf.runtime import progress
        def first_batch_then_wait(self, rows):
            print("ready", file=sys.stderr, flush=True)
            signal.pause()
        progress.VideoProgress.update = first_batch_then_wait
        from tsf.runtime.cli import main
        main(sys.argv[1:])
    """)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", child, str(video("long_20s.mkv")), "-o", str(out / "f.npy"),
                             "--model", str(small_bundle(4)), "--device", "cpu", "--batch-size", "1", "-q"],
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line == "ready\n":
            break
    assert seen and seen[-1] == "ready\n", "".join(seen)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not out.exists() or list(out.iterdir()) == []


def test_a_pipe_given_as_the_video_is_named_for_what_it_is(tmp_path):
    """`tsf-extract /dev/stdin < stream.ts`: a pipe, not "an empty file"."""
    run = subprocess.run([sys.executable, "-m", "tsf.runtime", "/dev/stdin", "-o", str(tmp_path / "f.npy"),
                          "--model", str(small_bundle(4)), "-q"], input=b"\x47" * 188 * 10, capture_output=True,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.decode().startswith("error: /dev/stdin: a pipe (FIFO), not a video")
    assert run.stderr.count(b"\n") == 1 and list(tmp_path.iterdir()) == []


def test_names_with_a_colon_are_files_not_protocols(tmp_path):
    """FFmpeg reads `2024-01-01T20:00.mp4` as protocol "2024-01-01T20", `pipe:x.mp4` as standard input
    and `file:y.mp4` as y.mp4: named relative to the working directory, each is the local file."""
    names = ["2024-01-01T20:00.mp4", "pipe:x.mp4", "file:y.mp4"]
    for name in names:
        os.link(video("h264_25fps.mp4"), tmp_path / name)
    run = subprocess.run([sys.executable, "-m", "tsf.runtime", *names, "-o", "out/", "--model", str(small_bundle(4)),
                          "--device", "cpu", "-q"], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for name in names:
        assert json.loads((tmp_path / "out" / name).with_suffix(".json").read_text())["rows"] == 8


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_thread_count_beyond_any_engine_is_one_line(backend, tmp_path, capsys):
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), video("h264_25fps.mp4"), "-o", tmp_path, "--model",
                                 small_bundle(4), "--backend", backend, "--threads", "2147483648", "-q"])
    assert code == 2 and err.count("\n") == 1 and "2147483648 is not in the range 1<=x<=4096" in err, err
    assert list(tmp_path.iterdir()) == []


def test_thread_counts_from_the_library_or_slurm_are_bounded(monkeypatch):
    from tsf.runtime.backends import cpu_threads
    from tsf.runtime.errors import BackendError

    with pytest.raises(BackendError, match="--threads 2147483648: CPU inference runs on 1 to 4096 threads"):
        cpu_threads(2**31)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(2**40))
    with pytest.raises(BackendError, match="SLURM_CPUS_PER_TASK 1099511627776: CPU inference runs on 1 to"):
        cpu_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cpu_threads() == 3 and cpu_threads(5) == 5


def test_an_over_long_output_path_is_one_short_line(tmp_path, capsys):
    out = tmp_path.joinpath(*["d" * 200] * 22, "f.npy")  # past PATH_MAX (4096 bytes)
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", out, "--model", small_bundle(4), "-q"])
    assert code == 2 and err.count("\n") == 1 and len(err) < 300, err
    assert err.startswith(f"error: {str(tmp_path)[:50]}") and err.endswith("ddd/f.npy: file name too long\n"), err


def test_an_output_that_is_a_device_or_a_pipe_is_refused(tmp_path, capsys):
    """`-o /dev/null` made /dev/null.npy beside the device; a FIFO stands in for it here."""
    from tsf.runtime.errors import OutputError
    from tsf.runtime.outputs import OutputSet

    fifo = tmp_path / "features"
    os.mkfifo(fifo)
    code, err = run_cli(capsys, [video("h264_25fps.mkv"), "-o", fifo, "--model", small_bundle(4), "-q"])
    assert code == 2 and err == f"error: cannot write an output set under {fifo}: it is a pipe (FIFO), not a file name\n"
    assert sorted(os.listdir(tmp_path)) == ["features"]
    with pytest.raises(OutputError, match="under /dev/null: it is a character device"):
        OutputSet("/dev/null").check_writable("npy", heads=False)
