"""The learnability proof, through the commands the README gives: on a synthetic season in which an
event shows only as an order of atoms over 8 seconds (no single row tells), a head trained with
`tsf-spot train` finds the held-out test games' events to the second, while `tsf-spot` from the
best per-row classifier's logits stays near chance; and a head refuses features it was not trained on.

The season is small (16 games of two 10-minute halves, 4 classes, 64 events per game) so that it
trains in about a minute on 2 CPU cores; every step is seeded, nothing is timed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tsf.runtime.spotting.cli import main as spot_main  # noqa: E402
from tsf.runtime.spotting.synthetic import SeasonShape, make_motifs  # noqa: E402
from tsf.runtime.spotting.synthetic import main as synthetic_main  # noqa: E402

# A compact dense head for a 32-wide, 10-minute season: the U-Net narrower, chunks of 32 s, small batches.
HEAD_SETTINGS = ("hidden=32", "max_channels=64", "chunk_seconds=32", "batch_size=8", "max_epochs=30")


def run(main, args):
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    folder = tmp_path_factory.mktemp("season")
    assert run(synthetic_main, [folder, "--games", 16, "--valid", 2, "--test", 2, "--width", 32,
                                "--half-minutes", 10, "--events-per-class", 3]) == 0
    return folder


@pytest.fixture(scope="module")
def trained(season, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "dense"
    settings = [a for s in HEAD_SETTINGS for a in ("--set", s)]
    assert run(spot_main, ["train", season / "features", "--labels", season / "labels",
                           "--split", f"train={season / 'train.txt'}", "--split", f"valid={season / 'valid.txt'}",
                           "--classes", season / "classes.txt", "-o", run_dir, *settings,
                           "--validate-every", 2, "--patience", 5, "--threads", 1, "-q"]) == 0
    return run_dir


def scores(season, tmp_path, *head):
    metrics = tmp_path / "metrics.json"
    assert run(spot_main, [season / "features" / "test", *head, "-o", tmp_path / "predictions", "--evaluate",
                           season / "labels" / "test", "--map-implementation", "builtin", "--metrics", metrics]) == 0
    return json.loads(metrics.read_text())


def test_a_learned_head_finds_what_no_single_row_shows(season, trained, tmp_path):
    learned = scores(season, tmp_path / "head", "--head", trained / "head")
    per_row = scores(season, tmp_path / "per-row")
    assert learned["games"] == per_row["games"] == 2
    assert set(learned["tight"]["a_mAP_per_class"]) == {"Penalty", "Kick-off", "Goal", "Substitution"}
    assert learned["tight"]["a_mAP"] >= 0.8, learned["tight"]
    assert per_row["tight"]["a_mAP"] <= 0.15, per_row["tight"]
    assert learned["loose"]["a_mAP"] >= per_row["loose"]["a_mAP"] + 0.3
    # the log and the kept head agree on the best validation score
    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    best = max(r["valid_tight_average_map"] for r in log if "valid_tight_average_map" in r)
    head = json.loads((trained / "head" / "head.json").read_text())
    assert head["training"]["valid_tight_average_map"] == best
    assert head["features"] == {"bundle_id": head["features"]["bundle_id"], "width": 32, "rate": 1.0}


def test_results_files_are_soccernets(season, trained, tmp_path):
    assert run(spot_main, [season / "features" / "test", "--head", trained / "head", "-o", tmp_path]) == 0
    results = json.loads((tmp_path / "game 015" / "results_spotting.json").read_text())
    assert results["UrlLocal"] == "game 015"
    first = results["predictions"][0]
    assert set(first) == {"gameTime", "label", "position", "half", "confidence"}
    assert first["half"] in ("1", "2") and first["position"].isdigit() and 0 <= float(first["confidence"]) <= 1
    minutes, seconds = first["gameTime"].split(" - ")[1].split(":")
    assert int(minutes) * 60 + int(seconds) == int(first["position"]) // 1000


def test_a_head_refuses_other_features(season, trained, tmp_path, capsys):
    other = tmp_path / "other"
    assert run(synthetic_main, [other, "--games", 3, "--valid", 1, "--test", 1, "--width", 32, "--half-minutes", 2,
                                "--events-per-class", 1, "--seed", 1, "--no-heads"]) == 0
    capsys.readouterr()
    assert run(spot_main, [other / "features", "--head", trained / "head", "-o", tmp_path / "p"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "feature bundle" in err and err.count("\n") == 1, err
    assert run(spot_main, [season / "features" / "test", "--head", trained / "head", "--classes",
                           season / "classes.txt", "-o", tmp_path / "q"]) == 2
    assert "--classes applies to the model's per-window heads" in capsys.readouterr().err


def test_no_single_row_shows_an_event():
    """The generator's promise: a motif is an order of all the atoms, each once, so the rows of an
    event hold each atom exactly as often as the uniformly drawn rows around it do."""
    shape = SeasonShape(classes=6)
    atoms, orders = make_motifs(np.random.default_rng(0), shape)
    assert atoms.shape == (shape.motif_seconds, shape.width)
    assert all(sorted(order) == list(range(shape.motif_seconds)) for order in orders)
    assert len({tuple(order) for order in orders}) == 6


def test_the_cost_benchmark_runs(tmp_path):
    """benchmarks/spot_heads.py end to end on a tiny season (its figures mean nothing here)."""
    from benchmarks.spot_heads import main as benchmark_main

    assert benchmark_main(["--out", str(tmp_path), "--games", "3", "--width", "8", "--rate", "1", "--classes", "2",
                           "--half-minutes", "3", "--epochs", "1", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "spot_heads.json").read_text())
    assert [(r["architecture"], r["threads"]) for r in result["rows"]] == [("dense", 1), ("netvlad++", 1)]
    assert all(r["train_epoch_s_per_half"] > 0 and r["training_gflop_per_half_epoch"] > 0 for r in result["rows"])
    assert "## Learned spotting heads" in (tmp_path / "spot_heads.md").read_text()
