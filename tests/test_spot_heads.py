"""Learned spotting heads, part by part: labels, targets, losses, NMS, the models against a float64
reference, the head bundle, the device choice, and a seeded run that resumes to the same head.

Every expected value here is worked out by hand (or by tests/reference/numpy_netvlad.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
torch.set_num_threads(1)  # these heads are tiny: one thread is faster than two on a shared 2-core machine

from reference.numpy_netvlad import netvlad_plus_plus  # noqa: E402
from tsf.runtime.errors import InputError  # noqa: E402
from tsf.runtime.fidelity import MAX_REL_L2, compare  # noqa: E402
from tsf.runtime.spotting import average_map  # noqa: E402
from tsf.runtime.spotting.head_bundle import FeatureKind, Head, load_head, save_head, spots_from_candidates  # noqa: E402
from tsf.runtime.spotting.head_models import DenseConfig, dense_loss, make_config, netvlad_loss  # noqa: E402
from tsf.runtime.spotting.head_targets import (DENSE, NETVLAD, LabelledHalf, centred_window_rows,  # noqa: E402
                                               clip_starts, dense_targets, event_rows, netvlad_clip_targets,
                                               positive_negative_weights, window_rows_at)
from tsf.runtime.spotting.head_train import Trainer, TrainSettings, torch_device  # noqa: E402
from tsf.runtime.spotting.labels import (LabelledEvent, annotation_event, labels_events, read_labels,  # noqa: E402
                                         read_split_list, read_table)


# ---------------------------------------------------------------- labels ------------------------

def test_an_annotation_takes_its_position_else_its_game_time():
    assert annotation_event({"gameTime": "1 - 00:07", "position": "7250", "label": "Goal", "visibility": "visible"}) \
        == LabelledEvent(1, 7250, "Goal", True)
    assert annotation_event({"gameTime": "2 - 01:02", "label": "Corner"}) == LabelledEvent(2, 62_000, "Corner", True)
    assert annotation_event({"gameTime": "2 - 93:05", "position": 5585123.4, "label": "Foul",
                             "visibility": "not shown"}) == LabelledEvent(2, 5_585_123, "Foul", False)
    with pytest.raises(InputError, match="gameTime"):
        annotation_event({"gameTime": "3 - 00:10", "label": "Goal"})
    with pytest.raises(InputError, match="position"):
        annotation_event({"gameTime": "1 - 00:10", "position": "soon", "label": "Goal"})


def test_a_labels_file_with_a_bad_annotation_is_one_line_naming_file_and_entry(tmp_path):
    path = tmp_path / "Labels-v2.json"
    path.write_text(json.dumps({"annotations": [{"gameTime": "1 - 00:01", "label": "Goal"},
                                                {"gameTime": "1 - 0x:01", "label": "Goal"}]}))
    with pytest.raises(InputError) as error:
        read_labels(path)
    assert str(path) in str(error.value) and "annotation 2:" in str(error.value) and "\n" not in str(error.value)
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_labels(path)
    with pytest.raises(InputError, match="annotations"):
        labels_events({"predictions": []})


def test_average_map_reads_labels_through_the_one_parser():
    document = {"annotations": [{"gameTime": "1 - 00:07", "position": "7250", "label": "B"},
                                {"gameTime": "2 - 01:02", "label": "A", "visibility": "not shown"},
                                {"gameTime": "1 - 00:09", "label": "Unknown"}]}
    first, second = average_map.labels_to_targets(document, ("A", "B"))
    assert first[14, 1] == 1 and np.count_nonzero(first) == 1  # 7.25 s -> frame int(2 * 7.25) = 14
    assert second[124, 0] == -1 and np.count_nonzero(second) == 1  # whole seconds: 62 s -> frame 124


def test_a_label_table_and_split_lists(tmp_path):
    table = tmp_path / "data" / "labels.csv"
    table.parent.mkdir()
    table.write_text("video,time_seconds,label,split\nclips/a.mp4,12.3456,Goal,train\n../b.mp4,0,Corner,\n")
    rows = read_table(table)
    assert [(r.video, r.time_ms, r.label, r.split) for r in rows] == [
        (str(tmp_path / "data" / "clips" / "a.mp4"), 12346, "Goal", "train"), (str(tmp_path / "b.mp4"), 0, "Corner", None)]
    table.write_text("video,time_seconds,label\nclips/a.mp4,-1,Goal\n")
    with pytest.raises(InputError, match="line 2: time_seconds '-1' is negative"):
        read_table(table)
    table.write_text("video,time_seconds,label\nclips/a.mp4,,Goal\n")
    with pytest.raises(InputError, match="line 2: missing time_seconds"):
        read_table(table)
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps([{"video": "x.mkv", "time_seconds": 1.5, "label": "Foul"}]))
    assert read_table(as_json)[0].time_ms == 1500
    listing = tmp_path / "train.txt"
    listing.write_text("england_epl/2014-2015/game one/\n\n  spain/game two \n")
    assert read_split_list(listing) == ["england_epl/2014-2015/game one", "spain/game two"]


# ---------------------------------------------------------------- targets -----------------------

def test_an_event_belongs_to_the_nearest_row_ties_to_the_earlier():
    np.testing.assert_array_equal(event_rows(np.array([0.5, 1.5, 2.5, 3.5]), [0.0, 1.0, 1.01, 9.0, 2.5]), [0, 0, 1, 3, 2])
    np.testing.assert_array_equal(event_rows(np.array([2.5]), [0.0, 7.0]), [0, 0])


def test_netvlad_windows_are_soccernets():
    # feats2clip: starts 0, W, 2W ... below rows - 1; the last window repeats the last row.
    np.testing.assert_array_equal(clip_starts(16, 15), [0])
    np.testing.assert_array_equal(clip_starts(17, 15), [0, 15])
    np.testing.assert_array_equal(window_rows_at(np.array([15]), 4, 17), [[15, 16, 16, 16]])
    # at inference the window of row t is rows t - W//2 ... t - W//2 + W - 1
    np.testing.assert_array_equal(centred_window_rows(5, 4), [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3],
                                                              [1, 2, 3, 4], [2, 3, 4, 4]])


def test_netvlad_window_targets_by_hand():
    # 31 rows, W = 15: windows [0, 15) and [15, 30); the event at row 30 is past the last window.
    targets = netvlad_clip_targets(31, 15, [3, 14, 15, 30], [0, 1, 1, 0], num_classes=2)
    np.testing.assert_array_equal(targets, [[0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(netvlad_clip_targets(31, 15, [], [], 2), [[1, 0, 0], [1, 0, 0]])


def test_dense_targets_by_hand():
    row_times = np.arange(10) + 0.5
    confidence, displacement, mask = dense_targets(row_times, [8.0, 4.5, 0.0], [0, 0, 1], num_classes=2,
                                                   confidence_radius=1.0, displacement_radius=2.0)
    np.testing.assert_array_equal(np.flatnonzero(confidence[:, 0]), [3, 4, 5, 7, 8])
    np.testing.assert_array_equal(np.flatnonzero(confidence[:, 1]), [0])
    np.testing.assert_array_equal(np.flatnonzero(mask[:, 0]), [2, 3, 4, 5, 6, 7, 8, 9])
    # rows 2..5 point at 4.5 s; row 6 (6.5 s) is 2.0 s from 4.5 and 1.5 s from 8.0: the nearer wins
    np.testing.assert_allclose(displacement[2:10, 0], [1.0, 0.5, 0.0, -0.5, 0.75, 0.25, -0.25, -0.75])
    np.testing.assert_allclose(displacement[[0, 1], 1], [-0.25, -0.75])
    assert not mask[2:, 1].any() and (displacement[~mask] == 0).all()
    # equally near two events: the earlier one
    _, tie, _ = dense_targets(np.array([5.5]), [6.5, 4.5], [0, 0], 1, 1.0, 2.0)
    assert tie[0, 0] == -0.5


def test_positives_carry_their_share_of_the_confidence_weight():
    positive, negative = positive_negative_weights([2, 0], [8, 10], positive_share=0.2)
    np.testing.assert_allclose(positive, [1.0, 0.0])
    np.testing.assert_allclose(negative, [1.0, 0.8])


# ---------------------------------------------------------------- losses ------------------------

def test_netvlad_loss_is_binary_cross_entropy_averaged():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    by_hand = (math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e ** -1) + math.log(2)) / 4
    assert float(netvlad_loss(logits, targets)) == pytest.approx(by_hand, rel=1e-6)


def test_dense_loss_by_hand():
    config = DenseConfig(displacement_weight=2.0)
    zeros = torch.zeros(1, 2, 1)
    confidence_targets = torch.tensor([[[1.0], [0.0]]])
    predicted = torch.tensor([[[0.2], [1.0]]])
    displacement_targets = torch.tensor([[[0.0], [0.0]]])
    mask = torch.tensor([[[1.0], [1.0]]])
    weights = (torch.tensor([3.0]), torch.tensor([0.5]))
    total, confidence, displacement = dense_loss(zeros, predicted, confidence_targets, displacement_targets, mask,
                                                 torch.ones(1, 2), *weights, config)
    assert float(confidence) == pytest.approx((3 + 0.5) * math.log(2) / 2, rel=1e-6)
    # Huber (delta 0.5) / 0.5: 0.2 -> 0.5 * 0.2^2 / 0.5 = 0.04; 1.0 -> 0.5 * (1.0 - 0.25) / 0.5 = 0.75
    assert float(displacement) == pytest.approx((0.04 + 0.75) / 2, rel=1e-6)
    assert float(total) == pytest.approx(float(confidence) + 2 * float(displacement), rel=1e-6)
    # padding rows count for nothing
    _, confidence, displacement = dense_loss(zeros, predicted, confidence_targets, displacement_targets, mask,
                                             torch.tensor([[1.0, 0.0]]), *weights, config)
    assert float(confidence) == pytest.approx(3 * math.log(2), rel=1e-6)
    assert float(displacement) == pytest.approx(0.04, rel=1e-6)


# ---------------------------------------------------------------- NMS -------------------------

def test_spots_from_moved_candidates_by_hand():
    times = np.array([[10.0], [10.4], [30.0], [31.0]])
    confidences = np.array([[0.9], [0.8], [0.5], [0.7]])
    spots = spots_from_candidates(times, confidences, ("Goal",), half=2, nms_window=3.0)
    assert [(s.half, s.seconds, s.label, s.confidence) for s in spots] == [(2, 10.0, "Goal", 0.9), (2, 31.0, "Goal", 0.7)]
    # a 30-s window: 31.0 is 21 s from 10.0 (kept); 30.0 is within 15 s of 31.0 (suppressed)
    assert [s.seconds for s in spots_from_candidates(times, confidences, ("Goal",), 1, 30.0)] == [10.0, 31.0]
    # the window is open: a candidate exactly half a window away survives
    edge = spots_from_candidates(np.array([[0.0], [15.0]]), np.array([[0.9], [0.5]]), ("Goal",), 1, 30.0)
    assert [s.seconds for s in edge] == [0.0, 15.0]
    assert spots_from_candidates(times, confidences, ("Goal",), 1, 3.0, threshold=0.75)[0].seconds == 10.0
    assert len(spots_from_candidates(times, confidences, ("Goal",), 1, 3.0, threshold=0.75)) == 1


def test_dense_candidates_move_by_the_displacement_and_stay_in_the_half():
    torch.manual_seed(0)
    head = Head.new(DENSE, make_config(DENSE, {"hidden": 4, "max_channels": 4}), ("A", "B"), FeatureKind("x", 3, 1.0))
    with torch.no_grad():
        for layer in (head.model.confidence, head.model.displacement):
            layer.weight.zero_()
        head.model.confidence.bias.copy_(torch.tensor([0.0, 2.0]))
        head.model.displacement.bias.copy_(torch.tensor([math.atanh(0.5), math.atanh(-0.25)]))
    row_times = np.arange(20) + 0.5
    times, confidences = head.candidates(np.random.default_rng(0).standard_normal((20, 3)), row_times)
    np.testing.assert_allclose(confidences[:, 0], 0.5, rtol=1e-6)
    np.testing.assert_allclose(confidences[:, 1], 1 / (1 + math.exp(-2)), rtol=1e-6)
    np.testing.assert_allclose(times[:, 0], np.minimum(row_times + 3.0, 19.5), rtol=1e-6)  # 0.5 x 6 s, clipped
    np.testing.assert_allclose(times[:, 1], np.maximum(row_times - 1.5, 0.5), rtol=1e-6)


# ---------------------------------------------------------------- models ------------------------

def test_netvlad_plus_plus_matches_the_float64_reference_window_by_window():
    torch.manual_seed(1)
    config = make_config(NETVLAD, {"vocabulary": 8, "reduced_width": 16})
    head = Head.new(NETVLAD, config, ("A", "B", "C"), FeatureKind("x", 12, 1.0))  # W = 15 rows at 1 per second
    rows = np.random.default_rng(2).standard_normal((40, 12)).astype(np.float32)
    times, confidences = head.candidates(rows, np.arange(40) + 0.5)
    state = {k: v.double().numpy() for k, v in head.model.state_dict().items()}
    index = centred_window_rows(40, 15)
    expected = np.stack([netvlad_plus_plus(rows[index[t]], state)[1:] for t in range(40)])
    assert compare(expected, confidences)["rel_l2"] <= MAX_REL_L2  # float32 against float64: the same arithmetic
    np.testing.assert_array_equal(times, np.repeat((np.arange(40) + 0.5)[:, None], 3, axis=1))


def test_netvlad_plus_plus_has_soccernets_parameter_count():
    # SoccerNet's published NetVLAD++ log (2048-d ResNET features, 17 classes): 1,704,466 parameters.
    head = Head.new(NETVLAD, make_config(NETVLAD), tuple(f"c{i}" for i in range(17)), FeatureKind("x", 2048, 2.0))
    assert sum(p.numel() for p in head.model.parameters()) == 1_704_466
    assert head.model.window_rows == 30


def test_dense_head_sizes_follow_the_rate():
    config = make_config(DENSE)
    assert (config.levels(1.0), config.chunk_rows(1.0)) == (5, 112)  # 16 rows of 1 s at the coarsest level
    assert (config.levels(2.0), config.chunk_rows(2.0)) == (6, 224)  # spivak's 224 frames at 2 per second
    assert config.chunk_rows(3.0) % 2 ** (config.levels(3.0) - 1) == 0


def test_settings_are_checked():
    assert make_config(DENSE, {"max_epochs": "7", "learning_rate": "1e-3"}).max_epochs == 7
    for bad, message in (({"nope": 1}, "no setting 'nope'"), ({"max_epochs": "2.5"}, "whole number"),
                         ({"dropout": 1.0}, "out of range"), ({"vocabulary": 7}, "even"), ({"window_seconds": 0}, "out of range")):
        with pytest.raises(InputError, match=message):
            make_config(NETVLAD if "vocabulary" in bad or "dropout" in bad or "window_seconds" in bad else DENSE, bad)


# ---------------------------------------------------------------- the head bundle ---------------

@pytest.mark.parametrize("kind", [DENSE, NETVLAD])
def test_a_saved_head_gives_the_same_events_and_refuses_other_features(tmp_path, kind):
    torch.manual_seed(3)
    settings = {"hidden": 8, "max_channels": 8} if kind == DENSE else {"vocabulary": 4, "reduced_width": 8}
    head = Head.new(kind, make_config(kind, settings), ("A", "B"), FeatureKind("bundle-1", 6, 2.0))
    rows = np.random.default_rng(4).standard_normal((90, 6)).astype(np.float32)
    row_times = (np.arange(90) + 0.5) / 2
    save_head(head, tmp_path / "head")
    loaded = load_head(tmp_path / "head")
    assert (loaded.kind, loaded.class_names, loaded.features) == (kind, ("A", "B"), FeatureKind("bundle-1", 6, 2.0))
    assert loaded.spot(rows, row_times, 1) == head.spot(rows, row_times, 1)
    loaded.check_features(FeatureKind("bundle-1", 6, 2.0), "x")
    for other, words in ((FeatureKind("bundle-2", 6, 2.0), "feature bundle 'bundle-2'"),
                         (FeatureKind("bundle-1", 7, 2.0), "7-wide"), (FeatureKind("bundle-1", 6, 1.0), "1 rows per second")):
        with pytest.raises(InputError, match=words) as error:
            loaded.check_features(other, "game/1_x")
        assert "\n" not in str(error.value) and "game/1_x" in str(error.value)


def test_broken_head_bundles_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="not a head bundle"):
        load_head(tmp_path)
    head = Head.new(DENSE, make_config(DENSE, {"hidden": 4, "max_channels": 4}), ("A",), FeatureKind("b", 3, 1.0))
    save_head(head, tmp_path / "h")
    (tmp_path / "h" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot load head weights"):
        load_head(tmp_path / "h")
    description = json.loads((tmp_path / "h" / "head.json").read_text())
    (tmp_path / "h" / "head.json").write_text(json.dumps({**description, "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        load_head(tmp_path / "h")


def test_the_device_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr("tsf.runtime.gpu.cuda_device_count", lambda: 0)
    assert torch_device("auto") == torch.device("cpu")
    assert torch_device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------- training ----------------------

def _tiny_halves(seed: int, count: int):
    rng = np.random.default_rng(seed)
    halves = []
    for k in range(count):
        rows = rng.standard_normal((150, 6)).astype(np.float32)
        events = [LabelledEvent(1, int(ms), label) for ms, label in ((20_500, "A"), (70_500, "B"), (120_500, "A"))]
        halves.append(LabelledHalf.from_events(f"game {k}", 1, rows, np.arange(150) + 0.5, events, ("A", "B")))
    return halves


TINY = {DENSE: (("hidden", 4), ("max_channels", 8), ("chunk_seconds", 32), ("batch_size", 2), ("max_epochs", 3)),
        NETVLAD: (("vocabulary", 4), ("reduced_width", 8), ("batch_size", 4), ("max_epochs", 3))}


@pytest.mark.parametrize("kind", [DENSE, NETVLAD])
def test_training_is_seeded_and_resuming_gives_the_same_head(tmp_path, monkeypatch, kind):
    train, valid = _tiny_halves(5, 3), _tiny_halves(6, 1)
    features = FeatureKind("tiny", 6, 1.0)

    def trainer(folder, seed=7):
        settings = TrainSettings(kind, TINY[kind], seed=seed, validate_every=1, patience=10, device="cpu")
        return Trainer(folder, settings, ("A", "B"), features, train, valid, progress=False)

    straight = trainer(tmp_path / "straight").run()
    train_epoch = Trainer._train_epoch

    def dies_in_epoch_3(self, model, data, optimizer, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return train_epoch(self, model, data, optimizer, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "resumed").run()
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    with pytest.raises(InputError, match="--resume"):
        trainer(tmp_path / "resumed").run()
    resumed = trainer(tmp_path / "resumed").run(resume=True)
    assert (straight["epochs"], resumed["epochs"], straight["stopped"]) == (3, 3, "max_epochs")
    weights = [(tmp_path / run_dir / "head" / "weights.safetensors").read_bytes() for run_dir in ("straight", "resumed")]
    assert weights[0] == weights[1]
    logs = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("straight", "resumed")]
    assert [r["epoch"] for r in logs[1]] == [1, 2, 3]
    assert [r["train_loss"] for r in logs[0]] == [r["train_loss"] for r in logs[1]]
    assert all("valid_tight_average_map" in r for r in logs[0])
    assert trainer(tmp_path / "resumed").run(resume=True)["epochs"] == 3  # a finished run stays finished
    with pytest.raises(InputError, match="another run"):
        trainer(tmp_path / "straight", seed=8).run(resume=True)


# ---------------------------------------------------------------- seasons on disk ---------------

def _write_set(base, rows: int, width: int = 6, bundle: str = "tiny", rate: int = 1, seed: int = 0):
    from fractions import Fraction

    from tsf.runtime.outputs import write_outputs
    from tsf.runtime.sample import row_centres

    features = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    metadata = {"alignment": "center", "rows": rows, "rows_per_second": float(rate),
                "window": {"frames": 16, "seconds": 5.0, "stride_seconds": 1 / rate},
                "row_centre_seconds": [float(c) for c in row_centres("center", rows, Fraction(1, rate), 5)],
                "bundle": {"id": bundle, "class_names": ["x", "background"]}}
    write_outputs(base, features=features, metadata=metadata)


def test_a_label_table_season_trains_through_the_command(tmp_path, capsys):
    from tsf.runtime.spotting.cli import main as spot_main

    features = tmp_path / "features"
    for k, name in enumerate(("clips/a", "clips/b", "clips/c")):
        _write_set(features / f"{name}.npy", 120, seed=k)
    table = tmp_path / "labels.csv"
    table.write_text("video,time_seconds,label,split\nclips/a.mp4,30.2,shot,train\nclips/a.mp4,80,pass,train\n"
                     "clips/b.mp4,50,shot,train\nclips/c.mp4,60.5,pass,valid\n")
    settings = [a for s in ("hidden=4", "max_channels=8", "chunk_seconds=32", "max_epochs=1") for a in ("--set", s)]
    assert spot_main(["train", str(features), "--labels", str(table), "-o", str(tmp_path / "run"), *settings,
                      "--validate-every", "1", "--threads", "1", "-q"]) == 0
    head = json.loads((tmp_path / "run" / "head" / "head.json").read_text())
    assert head["class_names"] == ["pass", "shot"] and head["features"] == {"bundle_id": "tiny", "width": 6, "rate": 1.0}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["train"], run["valid"]) == (["clips/a/1", "clips/b/1"], ["clips/c/1"])
    table.write_text("video,time_seconds,label\nclips/a.mp4,30.2,shot\n")
    with pytest.raises(SystemExit):
        spot_main(["train", str(features), "--labels", str(table), "-o", str(tmp_path / "run2")])
    assert "has no split" in capsys.readouterr().err


def test_a_soccernet_season_and_its_checks(tmp_path, caplog):
    from tsf.runtime.spotting.season import soccernet_season, split_games

    for game, half in (("l/s/g1", 1), ("l/s/g1", 2), ("l/s/g2", 1), ("l/s/g3", 1)):
        _write_set(tmp_path / "features" / game / f"{half}_tsf.npy", 60, rate=2)
        (tmp_path / "labels" / game).mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / game / "Labels-v2.json").write_text(json.dumps({"annotations": [
            {"gameTime": "1 - 00:10", "position": "10000", "label": "Goal"},
            {"gameTime": "2 - 00:20", "position": "20000", "label": "Corner", "visibility": "not shown"},
            {"gameTime": "1 - 00:05", "label": "Dive"}]}))
    (tmp_path / "train.txt").write_text("l/s/g1\nl/s/missing\n")
    (tmp_path / "valid.txt").write_text("l/s/g2\n")
    games = split_games({"train": str(tmp_path / "train.txt"), "valid": str(tmp_path / "valid.txt")})
    season = soccernet_season(tmp_path / "features", tmp_path / "labels", games)
    assert season.features == FeatureKind("tiny", 6, 2.0)
    assert [(h.game, h.half) for h in season.halves["train"]] == [("l/s/g1", 1), ("l/s/g1", 2)]
    first, second = season.halves["train"]
    assert (list(first.event_seconds), list(first.event_classes)) == ([10.0], [2])  # Goal; Dive is no class
    assert (list(second.event_seconds), list(second.event_visible)) == ([20.0], [False])
    assert "1 of the 2 train games" in caplog.text and "l/s/missing" in caplog.text
    _write_set(tmp_path / "features" / "l/s/g2" / "2_tsf.npy", 60, bundle="other", rate=2)
    with pytest.raises(InputError, match="feature bundle 'other'"):
        soccernet_season(tmp_path / "features", tmp_path / "labels", games)
    with pytest.raises(InputError, match="no valid games"):
        soccernet_season(tmp_path / "features", tmp_path / "labels", {"train": ["l/s/g1"]})
    with pytest.raises(InputError, match="unknown split"):
        split_games({"test": "x.txt"})


def test_soccernets_official_split_lists():
    pytest.importorskip("SoccerNet")
    from tsf.runtime.spotting.season import split_games

    games = split_games({"train": "soccernet", "valid": "soccernet"})
    assert (len(games["train"]), len(games["valid"])) == (300, 100)
    assert all(name.count("/") == 2 for name in games["train"])
