"""tsf-extract end to end on generated videos, against an independent path written in the test:
every frame decoded straight with PyAV, frames picked by the documented rules (reference indices
from tests/reference/sampling.py, centre times by brute force), float64 preprocessing from
tests/reference/numpy_preprocess.py, the model run by onnxruntime directly."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest

from reference.sampling import reference_rows
from runtime_helpers import (VIDEOS, cosine_rows, decode_all, extract, independent_features, record_selection, run_cli,
                             small_bundle, video)
from tsf.runtime.backends.precision import native_bf16
from tsf.runtime.bundle import load_bundle
from tsf.runtime.decode import PyAVDecoder
from tsf.runtime.probe import probe_video
from tsf.runtime.progress import format_speed
from videos import read_frame_number

FORMATS = ["h264_25fps.mkv", "h264_25fps.mp4", "h264_2997fps.mkv", "h264_2997fps_audio.mp4", "vfr.mkv",
           "odd_455x255.mkv", "portrait_256x456.mp4", "short_side_224.mkv", "h264_25fps.ts",
           "audio_outlasts_video.mkv"]


@pytest.mark.parametrize("name", FORMATS)
def test_decoder_yields_every_frame_in_presentation_order(name):
    path = video(name)
    info = probe_video(path)
    times, _, rate = decode_all(path)
    assert info.fps == rate and info.width, info.height == VIDEOS[name].get("size", (456, 256))
    decoder = PyAVDecoder(info)
    seen = []
    for frame in decoder.frames():
        assert read_frame_number(frame.to_rgb()) == frame.number  # B-frames came out reordered
        seen.append(frame.pts_time)
    decoder.close()
    assert seen == times
    assert abs(info.duration - (times[-1] - times[0] + (times[-1] - times[-2]))) <= Fraction(1, 10)


@pytest.mark.parametrize("name,rows_per_second", [(name, 1) for name in FORMATS] + [
    ("h264_25fps.mkv", 2), ("h264_2997fps_audio.mp4", 2), ("vfr.mkv", 3)])
def test_center_alignment_rows_frame_times_and_features(name, rows_per_second, monkeypatch):
    """R rows per second: N = ceil(duration x R); frame k of row i is the frame shown at
    (i + 0.5) / R - 2.5 + k * 5/(T-1) s: real windows at a stride of 1/R s, not interpolated rows."""
    bundle_dir = small_bundle(4)
    path = video(name)
    picks = record_selection(monkeypatch)
    result = extract(path, bundle_dir, align="center", rate=rows_per_second, backend="onnxruntime", device="cpu",
                     batch_size=3)
    times, images, rate = decode_all(path)
    duration = probe_video(path).duration
    assert result.rows == math.ceil(duration * rows_per_second)
    assert list(result.row_times) == [(i + 0.5) / rows_per_second for i in range(result.rows)]

    tolerance = 1 / rate / 4
    start = times[0]

    def shown_at(t):
        candidates = [k for k, p in enumerate(times) if p <= t + tolerance]
        return candidates[-1] if candidates else 0

    def frame_time(i, k):
        return start + (i + Fraction(1, 2)) / rows_per_second - Fraction(5, 2) + k * Fraction(5, 3)

    expected = [[shown_at(frame_time(i, k)) for k in range(4)] for i in range(result.rows)]
    selected = dict(picks)
    got = [[selected[frame_time(i, k)] for k in range(4)] for i in range(result.rows)]
    assert got == expected
    # Each selected frame is the frame the video shows then (its barcode), decoded and preprocessed once.
    assert all(read_frame_number(images[k]) == k for row in expected for k in row)
    assert result.stats.frames_preprocessed == len({k for row in expected for k in row})

    reference = independent_features(bundle_dir, [[images[k] for k in row] for row in expected])
    assert cosine_rows(result.features, reference).min() >= 0.9999


@pytest.mark.parametrize("name", ["h264_25fps.mkv", "h264_2997fps_audio.mp4", "odd_455x255.mkv"])
def test_reference_alignment_fidelity(name):
    """--align reference gives the reference's rows: same count, cosine >= 0.9999 per row."""
    bundle_dir = small_bundle(16)
    path = video(name)
    result = extract(path, bundle_dir, align="reference", backend="onnxruntime", device="cpu")
    _, images, rate = decode_all(path)
    length = int(len(images) / rate)
    indices = reference_rows(length, float(rate), len(images))
    assert result.rows == len(indices) == length - 5
    reference = independent_features(bundle_dir, [[images[k] for k in row] for row in indices])
    cosine = cosine_rows(result.features, reference)
    assert cosine.min() >= 0.9999, cosine


def test_cli_end_to_end_metadata_heads_and_reference_format(tmp_path, capsys):
    bundle_dir = small_bundle(4)
    path = video("h264_25fps.mkv")
    code, err = run_cli(capsys, [str(path), "-o", str(tmp_path / "out" / "f.npy"), "--model", str(bundle_dir),
                         "--device", "cpu", "--heads", "--batch-size", "5"])
    assert code == 0, err
    assert "random weights" in err
    features = np.load(tmp_path / "out" / "f.npy")
    assert features.shape == (8, 128) and features.dtype == np.float32
    heads = np.load(tmp_path / "out" / "f.heads.npz")
    assert heads["logits"].shape == heads["event_times"].shape == (8, 18)
    assert ((heads["event_times"] > 0) & (heads["event_times"] < 1)).all()
    meta = json.loads((tmp_path / "out" / "f.json").read_text())
    bundle = load_bundle(bundle_dir)
    assert meta["input"]["path"] == str(path.resolve()) and meta["input"]["size_bytes"] == path.stat().st_size
    assert meta["video"]["fps"] == 25.0 and meta["video"]["duration_seconds"] == 8.0
    assert meta["rows"] == 8 and meta["alignment"] == "center" and meta["window"]["seconds"] == 5.0
    assert meta["bundle"]["id"] == bundle.bundle_id and meta["bundle"]["random_init"] is True
    # The CPU's own choice: OpenVINO, in BF16 where the CPU has it natively (the bundle's gate passed).
    precision = "bf16" if native_bf16() else "fp32"
    assert meta["backend"] == "openvino" and meta["device"] == "cpu" and meta["precision"] == precision
    assert meta["precision_reason"].startswith("auto: ") and f"engine: openvino {precision} on cpu (auto: " in err
    assert meta["decoder"] == "cpu" and meta["engine"]["library"] == "openvino"
    assert meta["partial"] is False and meta["tsf_version"] and meta["batch_size"] == 5
    assert "frame_time_rule" in meta and "total_seconds" in meta["timings"]
    assert meta["features"] == {"format": "npy", "shape": [8, 128], "dtype": "float32", "load": "np.load(path)"}
    # Not a terminal here: progress is plain lines, and the last line and the info line give the
    # one speed figure ("x real time"), the info line naming the file written.
    assert "\r" not in err and "h264_25fps.mkv: 100% (8/8 windows), x" in err
    # Two info lines: the engine chosen (once per run, with why) and the video done (besides the
    # bf16 gate's measurement, on the first use of this bundle on this CPU).
    info = [line for line in err.splitlines() if line.startswith("info: ") and "fidelity of" not in line]
    assert len(info) == 2 and info[0].startswith("info: engine: openvino ") and "(auto: " in info[0]
    assert f"-> {tmp_path / 'out' / 'f.npy'}: 8 rows x 128" in info[1]
    assert info[1].endswith(format_speed(meta["timings"]["realtime_factor"])) and "windows_per_second" not in meta["timings"]
    # Same features through the library call (the CLI adds nothing to the numbers).
    direct = extract(path, bundle_dir, device="cpu", batch_size=5)
    assert np.allclose(direct.features, features, atol=1e-5)

    code, err = run_cli(capsys, [str(path), "-o", str(tmp_path / "ref.npy"), "--model", str(bundle_dir), "--device", "cpu",
                         "--format", "reference", "--align", "reference"])
    assert code == 0, err
    assert not (tmp_path / "ref.npy").exists() and f"-> {tmp_path / 'ref.pkl'}: 3 rows" in err
    d = np.load(tmp_path / "ref.pkl", allow_pickle=True).item()
    assert d["features"].shape == (3, 1, 128) and d["cls_score_all"].shape == d["event_times"].shape == (3, 1, 18)
    described = json.loads((tmp_path / "ref.json").read_text())["features"]
    assert described["format"] == "reference" and described["shape"] == [3, 1, 128]
    assert described["arrays"]["cls_score_all"] == [3, 1, 18]
    assert json.loads((tmp_path / "ref.json").read_text())["outputs"]["features"]["file"] == "ref.pkl"
    code, err = run_cli(capsys, [str(path), "-o", str(tmp_path / "ref.npy"), "--model", str(bundle_dir), "--device", "cpu",
                         "--format", "reference", "--align", "reference"])
    assert code == 0 and f"{tmp_path / 'ref.pkl'} exists; skipped" in err  # the finished .pkl set is recognised


def test_cli_resume_overwrite_and_many_videos(tmp_path, capsys):
    bundle_dir = str(small_bundle(4))
    data = tmp_path / "SoccerNet"
    for game in ("g1", "g2"):
        (data / game).mkdir(parents=True)
        os.link(video("h264_25fps.mkv"), data / game / "1_224p.mkv")
    (data / "g2" / "2_224p.mkv").write_bytes(b"not a video at all")
    out = tmp_path / "features"
    code, err = run_cli(capsys, [str(data), "-o", str(out), "--model", bundle_dir, "--device", "cpu", "--quiet"])
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {data / 'g2' / '2_224p.mkv'}: not a readable video (Invalid data found when processing input)"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == ["g1", "g1/1_224p.json", "g1/1_224p.npy", "g2", "g2/1_224p.json", "g2/1_224p.npy"]
    before = (out / "g1" / "1_224p.npy").stat().st_mtime_ns

    (data / "g2" / "2_224p.mkv").unlink()
    code, err = run_cli(capsys, [str(data), "-o", str(out), "--model", bundle_dir, "--device", "cpu"])
    assert code == 0 and "0 done, 2 skipped" in err
    assert (out / "g1" / "1_224p.npy").stat().st_mtime_ns == before
    code, err = run_cli(capsys, [str(data), "-o", str(out), "--model", bundle_dir, "--device", "cpu", "--overwrite", "-q"])
    assert code == 0 and (out / "g1" / "1_224p.npy").stat().st_mtime_ns != before


@pytest.mark.parametrize("name,flag", [("truncated.mkv", "truncated"), ("corrupt.mkv", "decoding broke"),
                                       ("corrupt.mp4", "decoding broke")])
def test_allow_partial_keeps_rows_before_the_break(tmp_path, capsys, name, flag):
    import videos

    source = video("long_20s." + name.split(".")[1])
    bad = tmp_path / name
    if name.startswith("truncated"):
        videos.make_truncated(source, bad, keep=0.5)
    else:
        videos.make_corrupt_middle(source, bad, at=0.5)
    args = [str(bad), "-o", str(tmp_path / "o.npy"), "--model", str(small_bundle(4)), "--device", "cpu", "-q"]
    code, err = run_cli(capsys, args)
    assert code == 2 and f"error: {bad}: {flag}" in err
    assert not (tmp_path / "o.npy").exists()
    code, err = run_cli(capsys, args + ["--allow-partial"])
    assert code == 0, err
    meta = json.loads((tmp_path / "o.json").read_text())
    features = np.load(tmp_path / "o.npy")
    assert meta["partial"] is True and 0 < meta["rows"] == len(features) < 20
    assert meta["decoded_until_seconds"] <= 12
    # The rows kept are the rows of the undamaged file.
    full = extract(source, small_bundle(4), device="cpu", backend="onnxruntime")
    assert cosine_rows(features, full.features[:len(features)]).min() >= 0.9999


def test_ctrl_c_leaves_no_output(tmp_path, capsys, monkeypatch):
    from tsf.runtime.backends.onnxruntime import OnnxRuntimeBackend

    calls = []
    real_run = OnnxRuntimeBackend.run

    def run_then_interrupt(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", run_then_interrupt)
    out = tmp_path / "out"
    code, err = run_cli(capsys, [str(video("h264_25fps.mkv")), "-o", str(out / "f.npy"), "--model", str(small_bundle(4)),
                         "--device", "cpu", "--backend", "onnxruntime", "--batch-size", "2", "-q"])
    assert code == 130 and "interrupted" in err
    assert not out.exists()  # not even its directory
