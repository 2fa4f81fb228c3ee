"""One video decoded by K decoders at once (runtime/decode_segments.py) gives exactly what one
decoder gives: the same frames, bit for bit, the same windows, the same features, the same
breaks. Checked against PyAV decoding each file from its start, on videos built here: closed and
open GOPs with B-frames, MP4, MPEG-TS, variable frame rate, a start offset, a last segment shorter
than a window, more decoders than keyframes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import videos
from runtime_helpers import small_bundle, video
from tsf.runtime.bundle import Bundle, Preprocessing, Window
from tsf.runtime.decode import DecodeError, PyAVDecoder
from tsf.runtime.decode_segments import MAX_CPU_DECODERS, choose_decoders, keyframe_starts, split_rows
from tsf.runtime.gpu import CPU
from tsf.runtime.pipeline import extract
from tsf.runtime.probe import probe_video
from tsf.runtime.sample import plan_windows

SIZE = (256, 144)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("segments")
    made = {
        "closed GOP, B-frames": videos.make_video(folder / "closed.mkv", seconds=12, size=SIZE, bframes=2, gop=25),
        "open GOP, B-frames": videos.make_video(folder / "open.mkv", seconds=12, size=SIZE, bframes=3, open_gop=True),
        "open GOP, MP4": videos.make_video(folder / "open.mp4", seconds=12, size=SIZE, bframes=3, open_gop=True),
        "open GOP, MPEG-TS": videos.make_video(folder / "open.ts", seconds=12, size=SIZE, bframes=3, open_gop=True),
        "variable frame rate": videos.make_video(folder / "vfr.mkv", pts_seconds=videos.vfr_times(12), fps=25,
                                                 size=SIZE, gop=25),
        # keyframes every 2 s: with 6 decoders the last segment starts at 10 s of 11.5 s
        "last segment shorter than a window": videos.make_video(folder / "tail.mkv", seconds=11.5, size=SIZE),
        "2 keyframes": videos.make_video(folder / "sparse.mkv", seconds=8, size=SIZE, gop=100),
    }
    made["start offset"] = videos.remux(made["closed GOP, B-frames"], folder / "offset.mkv", Fraction(1003, 10))
    return made


def test_the_open_gop_clips_have_leading_pictures(clips):
    """Pictures decoded after a keyframe but shown before it: what makes a GOP open."""
    for name in ("open GOP, B-frames", "open GOP, MP4", "open GOP, MPEG-TS"):
        with av.open(str(clips[name])) as container:
            packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]
        keys = [i for i, (_, key) in enumerate(packets) if key][1:]
        assert keys and any(packets[i + 1][0] < packets[i][0] for i in keys), name


def decoded(info, keyframe=None) -> list[tuple[Fraction, bytes]]:
    """(time, the decoded picture's planes) of every frame a PyAVDecoder yields."""
    decoder = PyAVDecoder(info, keyframe=keyframe)
    try:
        return [(f.pts_time, f.frame.to_ndarray().tobytes()) for f in decoder.frames()]
    finally:
        decoder.close()


@pytest.mark.parametrize("count", [2, 3, 6])
@pytest.mark.parametrize("name", ["closed GOP, B-frames", "open GOP, B-frames", "open GOP, MP4", "open GOP, MPEG-TS",
                                  "variable frame rate", "start offset", "last segment shorter than a window",
                                  "2 keyframes"])
def test_segments_put_together_are_the_one_decoders_frames(clips, name, count):
    info = probe_video(clips[name])
    keyframes = keyframe_starts(info, count)
    assert 0 < len(keyframes) <= count - 1
    starts = [k.pts * info.time_base for k in keyframes]
    assert starts == sorted(set(starts)) and starts[0] > info.start_time
    merged = []
    for i, keyframe in enumerate([None, *keyframes]):
        frames = decoded(info, keyframe)
        assert keyframe is None or frames[0][0] == starts[i - 1]  # it starts at its keyframe
        merged += [f for f in frames if i == len(keyframes) or f[0] < starts[i]]
    assert merged == decoded(info)


def test_more_decoders_than_keyframes_gives_one_segment_per_keyframe(clips):
    info = probe_video(clips["2 keyframes"])
    assert [k.pts * info.time_base for k in keyframe_starts(info, 7)] == [4]


class RecordingEngine:
    """A CPU engine stand-in that keeps every row it is given: features[:, 0] numbers the row's
    input in `inputs`, so a test can see exactly what each row was computed from."""

    name, device, precision, default_batch_size, wants_gpu_input = "recording", CPU, "fp32", 2, False

    def __init__(self):
        self.inputs: list[np.ndarray] = []

    def run(self, video):
        first = len(self.inputs)
        self.inputs += [row.copy() for row in video]
        features = np.zeros((len(video), 4), np.float32)
        features[:, 0] = np.arange(first, first + len(video))
        return {"features": features, "logits": np.zeros((len(video), 2), np.float32),
                "event_times": np.zeros((len(video), 2), np.float32)}

    def rows(self, result) -> list[np.ndarray]:
        return [self.inputs[int(i)] for i in result.features[:, 0]]


def bundle(frames=4) -> Bundle:
    return Bundle(dir=Path("."), meta={}, onnx_path=Path("model.onnx"), class_names=("a", "b"),
                  architecture={"frames": frames, "depth": 1, "width": 4, "heads": 1, "classes": 2,
                                "image_size": 224, "patch_size": 16, "mlp_ratio": 4},
                  bundle_id="0" * 16, random_init=True, window=Window.reference(frames),
                  preprocessing=Preprocessing.reference())


def windows(path, decoders, align="center", **options):
    """(result, each row's input) of the pipeline on `path` with `decoders` decoders."""
    info = probe_video(path)
    engine = RecordingEngine()
    result = extract(info, plan_windows(info, bundle().window, align), bundle(), engine, decoder="cpu",
                     decoders=decoders, **options)
    return result, engine.rows(result)


@pytest.mark.parametrize("count", [2, 3, 6])
@pytest.mark.parametrize("name", ["open GOP, B-frames", "open GOP, MPEG-TS", "variable frame rate", "start offset",
                                  "last segment shorter than a window", "2 keyframes"])
def test_every_window_sees_the_one_decoders_frames(clips, name, count):
    one, expected = windows(clips[name], 1)
    many, got = windows(clips[name], count)
    assert one.decoders == 1 and 1 < many.decoders <= count
    assert many.rows == one.rows == len(got)
    for row, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"row {row}"


def test_the_reference_alignment_too(clips):
    _, expected = windows(clips["open GOP, B-frames"], 1, align="reference")
    many, got = windows(clips["open GOP, B-frames"], 4, align="reference")
    assert many.decoders > 1 and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_a_last_segment_shorter_than_a_window_is_split_off(clips):
    info = probe_video(clips["last segment shorter than a window"])
    plan = plan_windows(info, bundle().window)
    segments = split_rows(plan, info, keyframe_starts(info, 6))
    last = segments[-1]
    assert info.end_time - last.start < bundle().window.seconds and len(last.rows) >= 1
    assert [s.rows for s in segments] == sorted([s.rows for s in segments], key=lambda r: r.start)
    assert sum(len(s.rows) for s in segments) == plan.rows and segments[-1].end is None
    assert all(s.end == n.start for s, n in zip(segments, segments[1:]))


def test_the_buffers_grow_with_the_decoders_not_the_video(clips):
    one, _ = windows(clips["closed GOP, B-frames"], 1)
    many, _ = windows(clips["closed GOP, B-frames"], 4)
    assert many.decoders == 4
    assert many.stats.peak_buffered_frames <= many.decoders * one.stats.peak_buffered_frames
    # the segments decode past the next one's start for their last windows: a window's worth each
    extra = many.stats.frames_decoded - one.stats.frames_decoded
    assert 0 < extra <= (many.decoders - 1) * (bundle().window.seconds + 1) * 25


@pytest.mark.slow
def test_features_are_identical_with_two_decoders(clips):
    """The real (small) model on the CPU, batch 1: the same features, bit for bit."""
    from runtime_helpers import extract as extract_video

    one = extract_video(clips["open GOP, B-frames"], small_bundle(4), device="cpu", batch_size=1, decoders=1)
    two = extract_video(clips["open GOP, B-frames"], small_bundle(4), device="cpu", batch_size=1, decoders=2)
    assert two.decoders == 2 and np.array_equal(one.features, two.features)
    assert np.array_equal(one.logits, two.logits)


# ------------------------------------------------------------------- damage is seen as before

def damaged(kind, folder: Path) -> Path:
    if kind == "lost cluster":  # the demuxer resynchronises 2 s later: a jump with skipped bytes
        return videos.make_corrupt_middle(video("long_20s.mkv"), folder / "lost.mkv", at=0.3)
    if kind == "corrupt packets":
        return videos.make_corrupt_middle(video("long_20s.mp4"), folder / "bad.mp4")
    if kind == "truncated":
        return videos.make_truncated(video("long_20s.mkv"), folder / "cut.mkv", 0.5)
    source = videos.make_video(folder / "src.ts", seconds=20, fps=25, bframes=0)  # TS packets cut out
    data = source.read_bytes()
    packets = len(data) // 188
    (folder / "cut.ts").write_bytes(data[:188 * (packets * 3 // 10)] + data[188 * (packets * 4 // 10):])
    return folder / "cut.ts"


def outcome(path, decoders, allow_partial):
    try:
        result, rows = windows(path, decoders, allow_partial=allow_partial)
    except DecodeError as e:
        return str(e), e.at_time
    return result.rows, str(result.stats.partial), result.stats.partial.at_time, rows


@pytest.mark.parametrize("kind", ["lost cluster", "corrupt packets", "truncated", "cut MPEG-TS"])
@pytest.mark.parametrize("allow_partial", [False, True])
def test_a_break_is_reported_as_one_decoder_reports_it(tmp_path, kind, allow_partial):
    path = damaged(kind, tmp_path)
    expected = outcome(path, 1, allow_partial)
    assert ("decoding broke" in expected[0] or "truncated" in expected[0]) if not allow_partial else expected[0] > 0
    for count in (3, 5):
        got = outcome(path, count, allow_partial)
        assert got[:3] == expected[:3]
        if allow_partial:
            assert all(np.array_equal(a, b) for a, b in zip(got[3], expected[3], strict=True))


# ------------------------------------------------------------------------ how many decoders

def test_the_number_of_decoders_and_why():
    assert choose_decoders(3, "nvdec", 7, 0) == (3, "--decoders 3")
    assert choose_decoders(None, "nvdec", 7, 0) == (7, "this GPU has 7 NVDEC engines")
    assert choose_decoders(None, "nvdec", 7, 0, sharing=3) == (2, "this GPU has 7 NVDEC engines, shared by 3 videos at once")
    assert choose_decoders(None, "nvdec", 1, 0, sharing=3)[0] == 1
    assert choose_decoders(None, "cpu", None, 0) == (1, "0 CPUs left after inference")
    assert choose_decoders(None, "cpu", None, 1) == (1, "1 CPU left after inference")
    assert choose_decoders(None, "cpu", None, 6) == (6, "6 CPUs left after inference")
    assert choose_decoders(None, "cpu", None, 64) == (MAX_CPU_DECODERS, f"64 CPUs left after inference, at most "
                                                                        f"{MAX_CPU_DECODERS}")


def test_the_choice_is_logged_with_its_reason(clips, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tsf"):
        windows(clips["2 keyframes"], 4)
    assert any("2 cpu decoders at once (--decoders 4; the keyframes allow 2)" in r.getMessage() for r in caplog.records)


def test_the_number_of_videos_at_once_and_why():
    from tsf.runtime.decode_segments import choose_videos_at_once

    assert choose_videos_at_once(None, 10, 7) == (7, "this GPU has 7 NVDEC engines")
    assert choose_videos_at_once(None, 3, 7) == (3, "this GPU has 7 NVDEC engines")
    assert choose_videos_at_once(None, 1, 7) == (1, "one video")
    assert choose_videos_at_once(None, 10, None) == (1, "decoding on the CPU, where inference takes the cores")
    assert choose_videos_at_once(4, 10, None) == (4, "--videos-at-once 4")
    assert choose_videos_at_once(4, 2, 7) == (2, "--videos-at-once 4")


@pytest.mark.slow
def test_tsf_extract_with_decoders_and_videos_at_once_writes_the_same_features(clips, tmp_path, capsys):
    """The command line: two videos at once, two decoders each, the small model on the CPU."""
    import json

    from runtime_helpers import run_cli

    data = tmp_path / "in"
    data.mkdir()
    for name in ("open GOP, B-frames", "variable frame rate"):
        (data / clips[name].name).hardlink_to(clips[name])
    common = [data, "--model", small_bundle(4), "--device", "cpu", "-q"]
    code, err = run_cli(capsys, common + ["-o", tmp_path / "one"])
    assert code == 0, err
    code, err = run_cli(capsys, common + ["-o", tmp_path / "many", "--decoders", "2", "--videos-at-once", "2"])
    assert code == 0, err
    for name in ("open", "vfr"):
        assert np.array_equal(np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "many" / f"{name}.npy"))
        meta = json.loads((tmp_path / "many" / f"{name}.json").read_text())
        assert meta["decoders"] == 2 and meta["settings"]["videos_at_once"] == 2


def test_a_restart_the_probe_did_not_look_for_keeps_the_video_in_one_piece(tmp_path, monkeypatch):
    """A TS of two recordings joined, where the probe's cheap check missed the restart: decoders
    seeking by time could land in the second recording, so the file is scanned before it is split,
    and with its restart it is decoded in one piece (one decoder meets the restart, and the video
    is probed again: its rows are the whole video's, as with one decoder)."""
    from test_runtime_reliability import joined_ts
    from tsf.runtime import probe

    joined = joined_ts(videos.make_video(tmp_path / "half.ts", seconds=8, fps=25, size=SIZE), tmp_path / "joined.ts",
                       restart=True)
    monkeypatch.setattr(probe, "_holds_more_than_stated", lambda *a: False)  # as if the cheap check missed it
    info = probe_video(joined)
    assert info.timestamps_may_restart and info.timestamp_restarts == 0
    assert keyframe_starts(info, 4) == []
    from runtime_helpers import extract as extract_video

    one = extract_video(joined, small_bundle(4), device="cpu", decoders=1)
    four = extract_video(joined, small_bundle(4), device="cpu", decoders=4)
    assert one.rows == four.rows == 16 and four.decoders == 1
    assert np.array_equal(one.features, four.features)
