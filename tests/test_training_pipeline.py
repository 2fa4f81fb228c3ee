"""The life of a model on the CPU: a synthetic SoccerNet-like tree -> `tsf-train prepare` -> a few
training steps -> checkpoint -> resume -> plot -> `tsf-export` -> `tsf-extract`.

The expected samples are written out by hand in tests/training_data.py; the clips are checked
frame by frame through the frame-number barcodes of tests/videos.py.
"""

from __future__ import annotations

import json
import math
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
from tsf.training.train import fit
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
    with pytest.raises(TrainingError, match=r"labels not in the class map: 'Dive' \(1, e\.g\. in league/.*Beta/1_HQ\)"):
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
    assert refused.exit_code == 2 and refused.output.startswith("error: labels not in the class map: 'Header' "
                                                                "(1, e.g. in videos/good)")


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
    from tsf.training.weights import infer_config, load_reference_weights, read_pdparams

    data, _ = prepared
    straight = fit(tiny_config(data, tmp_path / "straight"), log=lambda m: None)
    assert straight["epochs_run"] == 2 and straight["last_epoch"] == 2

    # The same run cut after one epoch and resumed, with DataLoader worker processes this time. The
    # resume is given nothing but the run folder: its settings are the run's own (config.yaml).
    cut = tiny_config(data, tmp_path / "cut", **{"data.num_workers": 1})
    assert fit(cut, stop_after_epochs=1, log=lambda m: None)["last_epoch"] == 1
    with pytest.raises(TrainingError, match="pass --resume"):
        fit(cut, log=lambda m: None)
    record = (tmp_path / "cut" / "config.yaml").read_bytes()
    result = CliRunner().invoke(cli, ["fit", "--resume", "-o", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout.splitlines()[-1])
    assert resumed["epochs_run"] == 1 and resumed["last_epoch"] == 2
    assert (tmp_path / "cut" / "config.yaml").read_bytes() == record

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

    data, _ = prepared
    root, _ = tree
    config = tiny_config(data, tmp_path / "run", **{"model.image_size": 224, "sampling.short_side_range": [225, 256],
                                                    "schedule.epochs": 1, "schedule.batch_size": 3,
                                                    "optimizer.warmup_epochs": 0})
    summary = fit(config, log=lambda m: None)
    run = tmp_path / "run"
    names = (run / "classes.txt").read_text().splitlines()
    # No --heads, no --classes: the checkpoint says the model has 2 heads (width / 64 would say 1).
    bundle = export_bundle(tmp_path / "bundle", weights=summary["best"])
    described = json.loads((Path(bundle) / "bundle.json").read_text())
    assert described["class_names"] == names
    assert (described["architecture"]["width"], described["architecture"]["heads"]) == (64, 2)

    video = root / GAME_B / "2_HQ.mkv"  # 20 s
    out = tmp_path / "features.npy"
    extract = Path(sys.executable).with_name("tsf-extract")
    result = subprocess.run([str(extract), str(video), "-o", str(out), "--model", str(bundle), "-q",
                             "--precision", "fp32"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "TSF_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    features = np.load(out)
    assert features.shape == (20, 64) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.std(features, axis=0).max() > 0  # different seconds give different features

    # The trained model, as training built it, on the very windows tsf-extract ran.
    trained = trained_model(run, summary["best"])
    assert rel_l2(features, trained_features(trained, video, bundle)) <= 1e-5


def test_fine_tuning_starts_from_weights_of_another_head_and_frame_count(prepared, tmp_path):
    """Like the Kinetics-400 start: a 400-class head is dropped, an 8-frame time_embed resampled."""
    import paddle

    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import read_pdparams, save_pdparams

    data, _ = prepared
    paddle.seed(7)
    kinetics_like = PPTimeSformer(TimeSformerConfig(frames=8, depth=2, width=64, heads=2, image_size=32, num_classes=400))
    start = tmp_path / "k400_like.pdparams"
    save_pdparams(kinetics_like, start)
    messages = []
    summary = fit(tiny_config(data, tmp_path / "run", **{"start_from": str(start), "schedule.epochs": 1,
                                                        "optimizer.warmup_epochs": 0, "optimizer.base_lr": 0.0}),
                  log=messages.append)
    text = "\n".join(messages)
    assert "head.fc.weight [64, 400]" in text and "backbone.time_embed [1, 4, 64]" in text
    trained = read_pdparams(summary["checkpoint"])
    source = read_pdparams(start)
    # lr 0: the backbone is the starting point's (L2 decay scales by lr too)
    np.testing.assert_array_equal(trained["backbone.blocks.1.mlp.fc2.weight"], source["backbone.blocks.1.mlp.fc2.weight"])
    assert trained["head.fc.weight"].shape == (64, 18)


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def trained_model(run: Path, weights):
    """The Paddle model a run trained, built from its config.yaml and classes.txt (not from the export)."""
    import yaml

    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import load_reference_weights, read_pdparams

    settings = yaml.safe_load((run / "config.yaml").read_text())["model"]
    classes = len((run / "classes.txt").read_text().splitlines())
    model = PPTimeSformer(TimeSformerConfig(**settings, num_classes=classes))
    load_reference_weights(model, read_pdparams(weights))
    model.eval()
    return model


class PaddleModelEngine:
    """The trained Paddle model in the shape of a runtime engine, so that the runtime's own decoding,
    window planning, preprocessing and batching feed it the rows tsf-extract computed."""

    name, precision, precision_reason, default_batch_size, wants_gpu_input = "paddle", "fp32", "test", 4, False

    def __init__(self, model):
        from tsf.runtime.gpu import CPU

        self.model, self.device = model, CPU

    def run(self, video):
        import paddle

        with paddle.no_grad():
            outputs = self.model(paddle.to_tensor(np.ascontiguousarray(video)))
        return dict(zip(("features", "logits", "event_times"), (o.numpy() for o in outputs)))

    def describe(self):
        return {}


def trained_features(model, video: Path, bundle) -> np.ndarray:
    from tsf.runtime.bundle import load_bundle
    from tsf.runtime.pipeline import extract
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    bundle = load_bundle(bundle)
    info = probe_video(video)
    return extract(info, plan_windows(info, bundle.window, "center"), bundle, PaddleModelEngine(model),
                   decoder="cpu").features


def write_config(path: Path, data_dir, **overrides) -> Path:
    """tiny_config's settings as a YAML file, as a user would keep them."""
    import yaml

    config = tiny_config(data_dir, "unused", **overrides)
    del config["output_dir"]
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_resumed_run_keeps_its_settings_unless_told(prepared, tmp_path):
    """--resume trains with the run's record; a differing --set is refused, naming it; with
    --change-settings it is recorded beside (never over) config.yaml, and the schedule goes on from
    where it stood in epochs, not in saved steps."""
    data, _ = prepared
    run = tmp_path / "run"
    runner = CliRunner()
    config = write_config(tmp_path / "tiny.yaml", data)
    first = runner.invoke(cli, ["fit", "--config", str(config), "-o", str(run), "--stop-after", "1"])
    assert first.exit_code == 0, first.output
    record = (run / "config.yaml").read_bytes()

    refused = runner.invoke(cli, ["fit", "--resume", "-o", str(run), "--set", "schedule.batch_size=3"])
    assert refused.exit_code == 2
    assert f"--resume trains with {run}'s own settings" in refused.output
    assert "schedule.batch_size 2 -> 3" in refused.output and "--change-settings" in refused.output
    model = runner.invoke(cli, ["fit", "--resume", "-o", str(run), "--set", "model.heads=4", "--change-settings"])
    assert model.exit_code == 2 and "model.heads 2 -> 4" in model.output and "start a new run" in model.output
    assert (run / "config.yaml").read_bytes() == record and not (run / "changes.jsonl").exists()

    changed = runner.invoke(cli, ["fit", "--resume", "-o", str(run), "--set", "schedule.batch_size=3",
                                  "--change-settings"])
    assert changed.exit_code == 0, changed.output
    assert (run / "config.yaml").read_bytes() == record
    [change] = [json.loads(line) for line in (run / "changes.jsonl").read_text().splitlines()]
    assert change["after_epoch"] == 1 and change["changes"] == {"schedule.batch_size": {"from": 2, "to": 3}}
    # epoch 2 of 2 at 6 samples / 3 = 2 steps: the cosine at epochs 1.0 and 1.5 (warm-up 1 epoch)
    steps = [r for r in read_list(run / "metrics.jsonl") if r["kind"] == "train" and r["epoch"] == 2]
    expected = [0.01 * 0.5 * (math.cos(math.pi * e / 2) + 1) for e in (1.0, 1.5)]
    np.testing.assert_allclose([r["lr"] for r in steps], expected, rtol=1e-9)

    # the record now includes the change: resuming without --set agrees with it, and has nothing left to run
    done = runner.invoke(cli, ["fit", "--resume", "-o", str(run), "--set", "schedule.batch_size=3"])
    assert done.exit_code == 0, done.output
    assert "has run all 2 epochs of its schedule" in done.output
    assert json.loads(done.stdout.splitlines()[-1])["epochs_run"] == 0


def test_a_warm_up_as_long_as_the_run_is_refused(prepared, tmp_path):
    data, _ = prepared
    with pytest.raises(TrainingError, match=r"optimizer.warmup_epochs 2 is not below schedule.epochs 2: .* every "
                                            r"step would run at learning rate 0"):
        tiny_config(data, tmp_path / "run", **{"optimizer.warmup_epochs": 2})
    result = CliRunner().invoke(cli, ["fit", "--set", f"data.dir={data}", "-o", str(tmp_path / "run"),
                                      "--set", "schedule.epochs=2"])
    assert result.exit_code == 2 and "is not below schedule.epochs 2" in result.output
    assert not (tmp_path / "run").exists()


def test_the_starting_weights_are_named(prepared, tmp_path):
    data, _ = prepared
    result = CliRunner().invoke(cli, ["fit", "--config", str(write_config(tmp_path / "c.yaml", data)),
                                      "-o", str(tmp_path / "run"), "--set", f"start_from={tmp_path}/k400.pdparams"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: start_from {tmp_path}/k400.pdparams: file not found")
    assert "Kinetics-400" in line and "ppTimeSformer_k400_16f_distill.pdparams" in line and "docs/training.md" in line


def test_fit_without_validation_says_which_checkpoint_to_export(prepared, tmp_path):
    """Also: training from random weights, and a crop far from the reference's, are warned about."""
    data, _ = prepared
    copy = tmp_path / "prepared"
    shutil.copytree(data, copy)
    (copy / "valid.jsonl").write_text("")
    messages = []
    summary = fit(tiny_config(copy, tmp_path / "run", **{"schedule.epochs": 2}), stop_after_epochs=1,
                  log=messages.append)
    checkpoint = str(tmp_path / "run" / "checkpoints" / "epoch_0001.pdparams")
    assert summary["best"] is None and summary["export"] == checkpoint
    assert messages[-1] == f"to export the last epoch (1; without validation samples there is no best.pdparams): " \
                           f"tsf-export {checkpoint} -o BUNDLE_DIR"
    warnings = [m for m in messages if m.startswith("warning:")]
    assert any("no validation samples" in w for w in warnings)
    assert any("starting from random weights" in w and "Kinetics-400" in w for w in warnings)
    assert any("sampling.short_side_range [33, 40] with model.image_size 32" in w for w in warnings)
    assert any(m.startswith("epoch 1/2 (") and "s): train loss" in m for m in messages)


def test_accumulated_batches_step_like_one_larger_batch(prepared, tmp_path):
    """Batch 2 x 2 accumulated = batch 4: one global batch, one optimiser step (no event-time term,
    whose per-batch normalisation differs; cross-entropy is a mean over equal shares)."""
    from tsf.training.weights import read_pdparams

    data, _ = prepared
    common = {"schedule.epochs": 2, "loss.event_time_weight": 0.0}
    large = fit(tiny_config(data, tmp_path / "large", **common, **{"schedule.batch_size": 4}),
                stop_after_epochs=1, log=lambda m: None)
    accumulated = fit(tiny_config(data, tmp_path / "accumulated", **common,
                                  **{"schedule.batch_size": 2, "schedule.accumulate_steps": 2}),
                      stop_after_epochs=1, log=lambda m: None)
    steps = [[r["step"] for r in read_list(tmp_path / name / "metrics.jsonl") if r["kind"] == "train"]
             for name in ("large", "accumulated")]
    assert steps == [[1, 2], [1, 2]]  # 6 samples: batches of 4 + 2, and of (2 + 2) + 2
    a, b = read_pdparams(large["checkpoint"]), read_pdparams(accumulated["checkpoint"])
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_reduced_precision_needs_a_gpu(prepared, tmp_path):
    data, _ = prepared
    for amp in ("fp16", "bf16"):
        with pytest.raises(TrainingError, match=f"amp: {amp} needs a GPU"):
            fit(tiny_config(data, tmp_path / amp, amp=amp), log=lambda m: None)


def test_prepare_names_everything_it_leaves_out(tmp_path):
    """A half without video, a game in no list, a listed game that is not there, events past the last
    whole clip, a source smaller than the clips: each named with its counts; an empty split refused."""
    root = tmp_path / "tree"
    games = {"Alpha - Beta": (1, 2), "Gamma - Delta": (1,), "Epsilon - Zeta": (1, 2)}
    for game, halves in games.items():
        (root / game).mkdir(parents=True)
        for half in halves:
            size = (228, 128) if game == "Gamma - Delta" else (456, 256)
            make_video(root / game / f"{half}_HQ.mkv", seconds=12, fps=FPS, size=size, bframes=0)
        labels = [{"gameTime": f"{h} - 00:0{s}", "label": "Goal", "position": str(s * 1000)}
                  for h in (1, 2) for s in (3, 5)] + [{"gameTime": "1 - 00:11", "label": "Foul", "position": "11000"}]
        (root / game / "Labels-v2.json").write_text(json.dumps({"annotations": labels}))
    (root / "train.txt").write_text("Alpha - Beta\nGamma - Delta\n")
    (root / "valid.txt").write_text("Ghost - Town\n")
    args = ["prepare", str(tmp_path / "out"), "--soccernet", str(root), "--video-glob", "{half}_HQ.mkv",
            "--split", f"train={root / 'train.txt'}", "--split", f"valid={root / 'valid.txt'}", "--workers", "1"]

    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "--allow-empty-splits" in refused.output
    assert f"the valid split would have no videos ({root / 'valid.txt'} lists 1 game(s) not found: Ghost - Town)" \
        in refused.output
    assert not (tmp_path / "out").exists()

    result = CliRunner().invoke(cli, args + ["--allow-empty-splits"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: Gamma - Delta: no video of half 2 matches --video-glob; its 2 event(s) left out",
        "warning: Epsilon - Zeta: in no split list; the game and its 5 event(s) left out",
        f"warning: {root / 'valid.txt'} lists Ghost - Town for valid, but no such game (a folder with "
        f"Labels-v2.json) is there",
        f"warning: {root / 'Alpha - Beta' / '1_HQ.mkv'}: 1 event(s) outside its whole 10-s clips (before 0 s or "
        f"in the trailing partial clip) left out",
        f"warning: {root / 'Gamma - Delta' / '1_HQ.mkv'}: 1 event(s) outside its whole 10-s clips (before 0 s or "
        f"in the trailing partial clip) left out",
        f"warning: {root / 'Gamma - Delta' / '1_HQ.mkv'} is 228x128: its clips are upscaled to 456x256 (the "
        f"reference cut them from 1080p; use higher-resolution sources where you have them)",
    ]
    # a batch job's log gets a line per finished video (no terminal, no progress bar)
    assert [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("cut ")] == \
        ["cut 1/3", "cut 2/3", "cut 3/3"]
    report = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert report["samples"] == {"train": 6, "valid": 0, "test": 0}
    assert report["halves_without_video"] == [{"game": "Gamma - Delta", "half": 2, "events": 2}]


def test_ctrl_c_says_what_was_saved_and_how_to_resume(prepared, tmp_path):
    """Ctrl-C (a real SIGINT, sent once the run has begun) stops at the next step; the epoch in
    progress is not saved, and the message says so."""
    import signal

    from tsf.training.train import Interrupted

    data, _ = prepared
    run = tmp_path / "run"

    def press_ctrl_c_once_training(message):
        if message.startswith("training "):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as caught:
        fit(tiny_config(data, run), log=press_ctrl_c_once_training)
    assert str(caught.value) == (f"interrupted in epoch 1: its steps are lost (a checkpoint is written at the end "
                                 f"of each epoch); no epoch was saved; resume with: tsf-train fit --resume -o {run}")
    assert not list((run / "checkpoints").iterdir())
    resumed = CliRunner().invoke(cli, ["fit", "--resume", "-o", str(run), "--stop-after", "1"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout.splitlines()[-1])["last_epoch"] == 1
