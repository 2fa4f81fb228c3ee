"""Video -> tsf-extract --heads -> tsf-spot -> SoccerNet results (+ score) -> tsf-plot, on a generated game."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from runtime_helpers import small_bundle, video
from spot_data import CLASS_NAMES, softmax64
from tsf.runtime.cli import main as extract_main
from tsf.runtime.spotting.plot import main as plot_main
from tsf.runtime.spotting.cli import main as spot_main


def run(main, args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.mark.parametrize("align, centre_offset", [("center", 0.5), ("reference", 2.5)])
def test_video_to_results_file_score_and_picture(tmp_path, capsys, align, centre_offset):
    pytest.importorskip("matplotlib")
    game = "league/2016-2017/2016-09-10 - 17-00 Home 1 - 0 Away"
    data = tmp_path / "SoccerNet"
    (data / game).mkdir(parents=True)
    for half in (1, 2):  # SoccerNet's layout: each half is its own video
        os.link(video("h264_25fps.mkv"), data / game / f"{half}_224p.mkv")
    assert run(extract_main, [data, "-o", tmp_path / "out", "--model", small_bundle(4), "--device", "cpu",
                              "--heads", "--align", align, "-q"]) == 0, capsys.readouterr().err
    # The random-init test bundle carries SoccerNet's class names (background included): no flags needed.
    assert run(spot_main, [tmp_path / "out", "-o", tmp_path / "preds"]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "preds" / game / "results_spotting.json").read_text())
    assert results["UrlLocal"] == game

    # Threshold 0 and a 30-s window on an 8-s video: every action class once per half, at the row
    # where its softmax confidence peaks (computed here independently from the heads file).
    for half in (1, 2):
        heads = np.load(tmp_path / "out" / game / f"{half}_224p.heads.npz")
        probabilities = softmax64(heads["logits"])
        predicted = {p["label"]: p for p in results["predictions"] if p["half"] == str(half)}
        assert sorted(predicted) == sorted(CLASS_NAMES[:-1])
        for label, p in predicted.items():
            c = CLASS_NAMES.index(label)
            row = int(np.argmax(probabilities[:, c]))
            assert p["position"] == str(int(round((row + centre_offset) * 1000)))
            assert p["gameTime"] == f"{half} - 00:0{int(row + centre_offset)}"
            assert float(p["confidence"]) == pytest.approx(probabilities[row, c], rel=1e-5)

    labels = tmp_path / "labels" / game
    labels.mkdir(parents=True)
    (labels / "Labels-v2.json").write_text(json.dumps({"annotations": [
        {"gameTime": "1 - 00:04", "label": "Goal", "position": "4000", "visibility": "visible"},
        {"gameTime": "2 - 00:02", "label": "Corner", "position": "2000", "visibility": "not shown"}]}))
    metrics = tmp_path / "metrics.json"
    classes = tmp_path / "classes.txt"  # the same names, given as a file this time
    classes.write_text("\n".join(CLASS_NAMES) + "\n")
    assert run(spot_main, [tmp_path / "out", "-o", tmp_path / "preds", "--classes", classes, "--overwrite",
                           "--evaluate", tmp_path / "labels", "--map-implementation", "builtin",
                           "--metrics", metrics]) == 0, capsys.readouterr().err
    scores = json.loads(metrics.read_text())
    # One prediction per class and half, within 8 s of the two events: both found at the loose
    # tolerances (+-2.5 s and more), so Goal's and Corner's loose APs are positive.
    assert scores["games"] == 1
    assert scores["loose"]["a_mAP_per_class"]["Goal"] > 0 and scores["loose"]["a_mAP_per_class"]["Corner"] > 0

    picture = tmp_path / "match.png"
    assert run(plot_main, [tmp_path / "out" / game, "-o", picture, "--size", "800x500",
                           "--results", tmp_path / "preds" / game / "results_spotting.json", "--min-confidence", "0",
                           "--labels", labels / "Labels-v2.json"]) == 0, capsys.readouterr().err
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
