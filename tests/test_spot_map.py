"""SoccerNet average-mAP: worked examples computed by hand, and agreement with the SoccerNet package."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tsf.runtime.spotting import average_map as sm
from tsf.runtime.spotting.classes import SOCCERNET_V2_ACTIONS
from tsf.runtime.errors import InputError


def labels_doc(events):
    """events: [(half, label, seconds, visible)]"""
    return {"annotations": [
        {"gameTime": f"{h} - {int(s) // 60:02d}:{int(s) % 60:02d}", "label": label, "position": str(int(round(s * 1000))),
         "team": "home", "visibility": "visible" if visible else "not shown"} for h, label, s, visible in events]}


def results_doc(predictions):
    """predictions: [(half, label, seconds, confidence)]"""
    return {"UrlLocal": "x", "predictions": [
        {"gameTime": f"{h} - {int(s) // 60:02d}:{int(s) % 60:02d}", "label": label, "position": str(int(round(s * 1000))),
         "half": str(h), "confidence": str(conf)} for h, label, s, conf in predictions]}


def score(events, predictions, classes, tolerances):
    halves = sm.game_halves(labels_doc(events), results_doc(predictions), classes)
    return sm.average_map(halves, tolerances)


EVENTS = [(1, "A", 100.0, True), (1, "A", 300.0, True), (1, "B", 200.0, True),
          (2, "A", 1000.0, True), (2, "B", 50.0, False), (2, "B", 2000.0, True)]


@pytest.mark.parametrize("metric", ["tight", "loose"])
def test_perfect_predictions_score_one(metric):
    predictions = [(h, label, s, 0.9) for h, label, s, _ in EVENTS]
    result = score(EVENTS, predictions, ("A", "B"), sm.TOLERANCES[metric])
    assert result.average_map == 1.0
    assert result.average_map_per_class == [1.0, 1.0]
    assert result.average_map_visible == 1.0


@pytest.mark.parametrize("metric", ["tight", "loose"])
def test_predictions_beyond_the_tolerance_score_zero(metric):
    # loose tolerances reach 60 s, i.e. +-30 s around each event: 31 s away never matches
    predictions = [(h, label, s + 31.0, 0.9) for h, label, s, _ in EVENTS]
    result = score(EVENTS, predictions, ("A", "B"), sm.TOLERANCES[metric])
    assert result.average_map == 0.0
    assert result.map_per_tolerance and set(result.map_per_tolerance.values()) == {0.0}


def test_a_class_without_ground_truth_counts_as_zero():
    predictions = [(h, label, s, 0.9) for h, label, s, _ in EVENTS]
    result = score(EVENTS, predictions, ("A", "B", "C"), sm.TOLERANCES["loose"])
    assert result.average_map == pytest.approx(2 / 3)


# One class, two events at 100 s (visible) and 300 s (not shown); predictions:
#   100.0 s conf 0.9 (on the event), 190.0 s conf 0.8 (nowhere near one), 301.5 s conf 0.6 (1.5 s late).
# A tolerance d matches within d/2 s, counted in frames of 0.5 s, so 301.5 s matches for d >= 3.
# d = 1, 2: TP only at 0.9. (precision, recall) at thresholds: <=0.6: (1/3, 1/2), <=0.8: (1/2, 1/2),
#   <=0.9: (1, 1/2), above: (0, 0). 11-point AP: recall levels 0..0.5 reach precision 1, 0.6..1 nothing:
#   AP = 6/11.
# d >= 3: <=0.6: (2/3, 1), <=0.8: (1/2, 1/2), <=0.9: (1, 1/2): levels 0..0.5 -> 1, 0.6..1 -> 2/3:
#   AP = (6 + 5 * 2/3) / 11 = 28/33.
# tight a-mAP: trapezoid over d = 1..5 of [6/11, 6/11, 28/33, 28/33, 28/33] / 4
#   = (18/33 + 23/33 + 28/33 + 28/33) / 4 = 97/132; loose: 28/33 at every d.
# Visible-only: predictions nearest the visible event (100.0, 190.0; the split is at 200 s) against
#   1 visible event: the 0.9 one is a TP at every d, so AP = 1.
MIXED_EVENTS = [(1, "A", 100.0, True), (1, "A", 300.0, False)]
MIXED_PREDICTIONS = [(1, "A", 100.0, 0.9), (1, "A", 190.0, 0.8), (1, "A", 301.5, 0.6)]


def test_mixed_case_by_hand():
    per_tolerance = score(MIXED_EVENTS, MIXED_PREDICTIONS, ("A",), [1, 2, 3, 4, 5]).map_per_tolerance
    assert per_tolerance == pytest.approx({1: 6 / 11, 2: 6 / 11, 3: 28 / 33, 4: 28 / 33, 5: 28 / 33}, abs=1e-12)
    tight = score(MIXED_EVENTS, MIXED_PREDICTIONS, ("A",), sm.TOLERANCES["tight"])
    assert tight.average_map == pytest.approx(97 / 132, abs=1e-12)
    assert tight.average_map_visible == pytest.approx(1.0, abs=1e-12)
    loose = score(MIXED_EVENTS, MIXED_PREDICTIONS, ("A",), sm.TOLERANCES["loose"])
    assert loose.average_map == pytest.approx(28 / 33, abs=1e-12)


def test_greedy_matching_gives_each_event_its_most_confident_prediction():
    # Two events 4 s apart, one prediction between them (2 s from each) and one on the second event.
    # d = 5 (+-2.5 s): the first event takes the middle one (only candidate), the second its own: 2 TP.
    events = [(1, "A", 100.0, True), (1, "A", 104.0, True)]
    predictions = [(1, "A", 102.0, 0.9), (1, "A", 104.0, 0.5)]
    assert score(events, predictions, ("A",), [5]).average_map == pytest.approx(1.0)
    # d = 1 (+-0.5 s): the middle one matches nothing: TP 1 of 2 predictions, recall 1/2 at <=0.5;
    # precision at recall 1/2 is 1/2, at recall 0 (threshold in (0.5, 0.9]) precision 0.
    # AP = 6 * (1/2) / 11 = 3/11.
    assert score(events, predictions, ("A",), [1]).average_map == pytest.approx(3 / 11)


def _write_game(root, game, labels, results):
    for folder, name, doc in ((os.path.join(root, "labels", game), sm.LABELS_FILE, labels),
                              (os.path.join(root, "preds", game), sm.RESULTS_FILE, results)):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            json.dump(doc, f)


def _random_game(rng, classes):
    events, predictions = [], []
    for half in (1, 2):
        for label in classes:
            times = rng.uniform(0, 2700, size=rng.integers(0, 8))
            events += [(half, label, float(t), bool(rng.uniform() < 0.8)) for t in times]
            # predictions near most events (more confident), others anywhere (less): every regime of the curve
            near = [(t + rng.normal(0, 3), rng.uniform(0.3, 1)) for t in times if rng.uniform() < 0.8]
            anywhere = [(t, rng.uniform(0, 0.7)) for t in rng.uniform(0, 2700, size=rng.integers(0, 20))]
            predictions += [(half, label, max(float(t), 0.0), round(float(c), 4)) for t, c in near + anywhere]
    return labels_doc(events), results_doc(predictions)


def test_evaluate_matches_the_soccernet_package(tmp_path):
    pytest.importorskip("SoccerNet.Evaluation.ActionSpotting")
    rng = np.random.default_rng(7)
    for game in ("league/2015-2016/game a", "league/2015-2016/game b", "cup/2016/game c"):
        _write_game(str(tmp_path), game, *_random_game(rng, SOCCERNET_V2_ACTIONS))
    ours = sm.evaluate(tmp_path / "labels", tmp_path / "preds", implementation="builtin")
    theirs = sm.evaluate(tmp_path / "labels", tmp_path / "preds", implementation="soccernet")
    assert ours["games"] == theirs["games"] == 3
    for metric in ("tight", "loose"):
        for key in ("a_mAP", "a_mAP_visible", "a_mAP_unshown"):
            assert ours[metric][key] == pytest.approx(theirs[metric][key], abs=1e-12), (metric, key)
        for name in SOCCERNET_V2_ACTIONS:
            assert ours[metric]["a_mAP_per_class"][name] == pytest.approx(theirs[metric]["a_mAP_per_class"][name], abs=1e-12)
        assert 0.1 < ours[metric]["a_mAP"] < 0.9, ours[metric]["a_mAP"]  # more than the extremes


def test_evaluate_counts_labelled_games_without_results_and_refuses_unlabelled_ones(tmp_path):
    doc = labels_doc(EVENTS), results_doc([(h, label, s, 0.9) for h, label, s, _ in EVENTS])
    _write_game(str(tmp_path), "l/s/g1", *doc)
    _write_game(str(tmp_path), "l/s/g2", *doc)
    os.remove(tmp_path / "preds" / "l/s/g2" / sm.RESULTS_FILE)
    result = sm.evaluate(tmp_path / "labels", tmp_path / "preds", implementation="builtin")
    assert (result["games"], result["labelled_games_without_results"]) == (1, 1)
    os.remove(tmp_path / "labels" / "l/s/g1" / sm.LABELS_FILE)
    with pytest.raises(InputError, match="no Labels-v2.json for game 'l/s/g1'"):
        sm.evaluate(tmp_path / "labels", tmp_path / "preds", implementation="builtin")
