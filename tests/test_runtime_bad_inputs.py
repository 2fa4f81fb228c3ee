"""Every bad input is one `error: ...` line, exit code 2, and no output file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

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
                                  "one-frame-mp4"])
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
    """A real Ctrl-C (SIGINT) in the middle of a video: exit 130, nothing written, no temporaries."""
    import signal

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tsf.runtime", str(video("long_20s.mkv")), "-o", str(out / "f.npy"),
                             "--model", str(small_bundle(16)), "--device", "cpu", "--batch-size", "1"],
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    while "win" not in seen:  # the progress bar is up: extraction is under way
        char = proc.stderr.read(1)
        assert char, seen
        seen += char
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not out.exists() or list(out.iterdir()) == []
