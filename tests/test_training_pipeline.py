"""The life of a model on the CPU: a synthetic SoccerNet-like tree -> `tsf-train prepare` -> a few
training steps -> checkpoint -> resume -> plot -> `tsf-export` -> `tsf-extract`.

The expected samples are written out by hand in tests/training_data.py; the clips are checked
frame by frame through the frame-number barcodes of tests/videos.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from training_data import EXPECTED, FPS, GAME_A, GAME_B, make_soccernet_tree
from tsf.training.cli import cli
from tsf.training.config import load_config
from tsf.training.errors import TrainingError
from tsf.training.labels import ClassMap
from tsf.training.prepare import prepare
from videos import make_truncated, make_video, read_frame_number

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

CLASSES = ClassMap.soccernet_v2()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("soccernet")
    return root, make_soccernet_tree(root)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    root, lists = tree
    out = tmp_path_factory.mktemp("prepared")
    report = prepare(str(out), soccernet_root=str(root), split_lists={k: str(v) for k, v in lists.items()},
                     skip_unknown_labels=True, workers=2)
    return out, report


def read_list(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_unknown_labels_are_refused_before_any_work(tree, tmp_path):
    root, lists = tree
    with pytest.raises(TrainingError, match=r"labels not in the class map: 'Dive' \(1\)"):
        prepare(str(tmp_path / "out"), soccernet_root=str(root), split_lists={k: str(v) for k, v in lists.items()})
    assert not (tmp_path / "out").exists()


def test_samples_follow_offsets_boundaries_and_milliseconds(prepared):
    out, report = prepared
    for split, expected in EXPECTED.items():
        got = sorted((s["clip"], s["label"], s["event_time"]) for s in read_list(out / f"{split}.jsonl"))
        want = sorted((f"clips/{source}/{clip:04d}.mp4", CLASSES.index(name), time) for source, clip, name, time in expected)
        assert [(c, l) for c, l, _ in got] == [(c, l) for c, l, _ in want]
        np.testing.assert_allclose([t for *_, t in got], [t for *_, t in want], atol=1e-9)
    assert read_list(out / "test.jsonl") == []
    assert report["skipped_events"] == {"unknown_label": {"Dive": 1}, "outside_clips": 1, "clip_missing": 0}
    assert report["samples"] == {"train": 6, "valid": 4, "test": 0}
    assert report["background_samples"] == {"train": 1, "valid": 2, "test": 0}
    assert report["videos_failed"] == [] and report["games_not_in_split_lists"] == []
    assert json.loads((out / "classes.json").read_text())["class_names"][17] == "background"
    assert (out / "classes.txt").read_text().splitlines() == list(CLASSES.names)


def test_clips_are_whole_10_s_pieces_of_the_source(prepared):
    out, report = prepared
    clips = sorted((out / "clips").rglob("*.mp4"))
    assert len(clips) == report["clips"] == 2 + 3 + 2 + 2  # whole 10-s clips of 25, 31, 22, 20 s
    for clip in clips:
        index = int(clip.stem)
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            times = [float(f.pts * stream.time_base) for f in frames]
        assert (frames[0].width, frames[0].height) == (456, 256)
        assert len(frames) == 10 * FPS
        numbers = [read_frame_number(f.to_ndarray(format="rgb24")) for f in frames]
        assert numbers == [index * 10 * FPS + j for j in range(10 * FPS)], clip
        np.testing.assert_allclose(times, np.arange(10 * FPS) / FPS, atol=1e-3)


def test_prepare_resumes_and_only_cuts_missing_clips(prepared, tree, tmp_path):
    source, _ = prepared
    root, lists = tree
    out = tmp_path / "again"
    shutil.copytree(source, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")}
    removed = out / "clips" / GAME_B / "2_HQ" / "0001.mp4"
    removed.unlink()
    prepare(str(out), soccernet_root=str(root), split_lists={k: str(v) for k, v in lists.items()},
            skip_unknown_labels=True, workers=1)
    after = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")}
    assert after.keys() == before.keys()
    assert [p for p in after if after[p] != before[p]] == [removed]
    assert read_list(out / "valid.jsonl") == [
        {**s, "clip": s["clip"]} for s in read_list(source / "valid.jsonl")]
    assert not list(out.rglob(".tmp-*"))


def test_simple_format_with_corrupt_and_truncated_videos(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "good.mkv", seconds=12, fps=FPS, size=(456, 256), bframes=0)
    full = make_video(tmp_path / "full.mkv", seconds=40, fps=FPS, size=(456, 256), bframes=0)
    make_truncated(full, videos / "truncated.mkv", keep=0.5)
    (videos / "garbage.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    annotations = tmp_path / "labels.csv"
    annotations.write_text("video,time_seconds,label,split\n"
                           "videos/good.mkv,4.5,Corner,train\n"
                           "videos/good.mkv,11.0,Goal,train\n"        # in the partial tail: outside whole clips
                           "videos/truncated.mkv,3.25,Foul,valid\n"
                           "videos/truncated.mkv,35.0,Foul,valid\n"   # beyond where the file breaks off
                           "videos/garbage.mkv,1.0,Goal,train\n"
                           "videos/missing.mkv,1.0,Goal,train\n")
    out = tmp_path / "prepared"
    result = CliRunner().invoke(cli, ["prepare", str(out), "--annotations", str(annotations), "--workers", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "prepare.json").read_text())
    failed = {Path(f["video"]).name: f["error"] for f in report["videos_failed"]}
    assert set(failed) == {"truncated.mkv", "garbage.mkv", "missing.mkv"}
    assert "ends early" in failed["truncated.mkv"]
    assert "warning:" in result.output
    train = read_list(out / "train.jsonl")
    assert [(s["clip"], s["label_name"], s["event_time"]) for s in train] == [("clips/videos/good/0000.mp4", "Corner", 4.5)]
    valid = read_list(out / "valid.jsonl")
    assert ("clips/videos/truncated/0000.mp4", "Foul", 3.25) in [(s["clip"], s["label_name"], s["event_time"]) for s in valid]
    assert report["skipped_events"]["outside_clips"] == 1 and report["skipped_events"]["clip_missing"] >= 3
    annotations.write_text("video,time_seconds,label\nvideos/good.mkv,4.5,Header\n")
    refused = CliRunner().invoke(cli, ["prepare", str(tmp_path / "p2"), "--annotations", str(annotations)])
    assert refused.exit_code == 2 and refused.output.startswith("error: labels not in the class map: 'Header' (1)")


def tiny_config(data_dir, output_dir, **overrides):
    settings = {"data.dir": str(data_dir), "data.num_workers": 0, "output_dir": str(output_dir),
                "model.frames": 4, "model.depth": 2, "model.width": 64, "model.heads": 2, "model.image_size": 32,
                "sampling.short_side_range": [33, 40], "loss.event_time_weight": 1.0, "schedule.epochs": 2,
                "schedule.batch_size": 2, "schedule.valid_batch_size": 3, "optimizer.warmup_epochs": 1,
                "log_every": 1, "progress": False}
    settings.update(overrides)
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in settings.items()])


def test_train_checkpoint_resume_plot(prepared, tmp_path):
    from tsf.training.model import PPTimeSformer
    from tsf.training.train import fit
    from tsf.training.weights import infer_config, load_reference_weights, read_pdparams

    data, _ = prepared
    straight = fit(tiny_config(data, tmp_path / "straight"), log=lambda m: None)
    assert straight["epochs_run"] == 2 and straight["last_epoch"] == 2

    # The same run cut after one epoch and resumed, with DataLoader worker processes this time.
    cut = tiny_config(data, tmp_path / "cut", **{"data.num_workers": 1})
    assert fit(cut, stop_after_epochs=1, log=lambda m: None)["last_epoch"] == 1
    with pytest.raises(TrainingError, match="pass --resume"):
        fit(cut, log=lambda m: None)
    resumed = fit(cut, resume=True, log=lambda m: None)
    assert resumed["epochs_run"] == 1 and resumed["last_epoch"] == 2

    a = read_pdparams(straight["checkpoint"])
    b = read_pdparams(resumed["checkpoint"])
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # Reference layout: the checkpoint loads strictly and describes its own architecture.
    config = infer_config(b, heads=2)
    assert (config.depth, config.width, config.frames, config.image_size, config.num_classes) == (2, 64, 4, 32, 18)
    load_reference_weights(PPTimeSformer(config), b)

    records = read_list(tmp_path / "cut" / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    valid = epochs[-1]["valid"]
    assert valid["samples"] == 4 and 0 <= valid["top1"] <= 1 and valid["event_time_mae_s"] >= 0
    assert set(valid["per_class_accuracy"]) == set(CLASSES.names)
    assert valid["per_class_accuracy"]["Penalty"] is None  # no validation sample of that class
    assert (tmp_path / "cut" / "best.pdparams").exists()

    runner = CliRunner()
    result = runner.invoke(cli, ["plot", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "cut" / "plots").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    again = runner.invoke(cli, ["plot", str(tmp_path / "cut")])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_fit_cli_reports_bad_config(prepared, tmp_path):
    data, _ = prepared
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {data}}}\noptimiser: {{base_lr: 1}}\n")
    result = CliRunner().invoke(cli, ["fit", "--config", str(config)])
    assert result.exit_code == 2 and "error: unknown config key 'optimiser'" in result.output

    copy = tmp_path / "prepared"
    shutil.copytree(data, copy)
    (copy / "clips" / GAME_A / "2_HQ" / "0001.mp4").unlink()
    result = CliRunner().invoke(cli, ["fit", "--set", f"data.dir={copy}", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "1 clip(s) missing" in result.output and "Traceback" not in result.output
    # -o is the run folder, as everywhere else; the old `-o KEY=VALUE` says what to type instead
    result = CliRunner().invoke(cli, ["fit", "-o", f"data.dir={copy}"])
    assert result.exit_code == 2 and "--set KEY=VALUE" in result.output and "Traceback" not in result.output


def test_the_whole_life_of_a_model(prepared, tree, tmp_path):
    """prepare -> train at 224 px -> checkpoint -> tsf-export -> tsf-extract on a source video."""
    from tsf.export.bundle import export_bundle
    from tsf.training.train import fit

    data, _ = prepared
    root, _ = tree
    config = tiny_config(data, tmp_path / "run", **{"model.image_size": 224, "sampling.short_side_range": [225, 256],
                                                    "schedule.epochs": 1, "schedule.batch_size": 3})
    summary = fit(config, log=lambda m: None)
    run = tmp_path / "run"
    names = (run / "classes.txt").read_text().splitlines()
    bundle = export_bundle(tmp_path / "bundle", weights=summary["best"], class_names=names, heads=2)
    described = json.loads((Path(bundle) / "bundle.json").read_text())
    assert described["class_names"] == names and described["architecture"]["width"] == 64

    video = root / GAME_B / "2_HQ.mkv"  # 20 s
    out = tmp_path / "features.npy"
    extract = Path(sys.executable).with_name("tsf-extract")
    result = subprocess.run([str(extract), str(video), "-o", str(out), "--model", str(bundle), "-q"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "TSF_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    features = np.load(out)
    assert features.shape == (20, 64) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.std(features, axis=0).max() > 0  # different seconds give different features


def test_fine_tuning_starts_from_weights_of_another_head_and_frame_count(prepared, tmp_path):
    """Like the Kinetics-400 start: a 400-class head is dropped, an 8-frame time_embed resampled."""
    import paddle

    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.train import fit
    from tsf.training.weights import read_pdparams, save_pdparams

    data, _ = prepared
    paddle.seed(7)
    kinetics_like = PPTimeSformer(TimeSformerConfig(frames=8, depth=2, width=64, heads=2, image_size=32, num_classes=400))
    start = tmp_path / "k400_like.pdparams"
    save_pdparams(kinetics_like, start)
    messages = []
    summary = fit(tiny_config(data, tmp_path / "run", **{"start_from": str(start), "schedule.epochs": 1,
                                                        "optimizer.base_lr": 0.0}), log=messages.append)
    text = "\n".join(messages)
    assert "head.fc.weight [64, 400]" in text and "backbone.time_embed [1, 4, 64]" in text
    trained = read_pdparams(summary["checkpoint"])
    source = read_pdparams(start)
    # lr 0: the backbone is the starting point's (L2 decay scales by lr too)
    np.testing.assert_array_equal(trained["backbone.blocks.1.mlp.fc2.weight"], source["backbone.blocks.1.mlp.fc2.weight"])
    assert trained["head.fc.weight"].shape == (64, 18)
