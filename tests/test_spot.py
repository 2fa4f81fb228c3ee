"""Spotting: planted peaks in synthetic head outputs come back as the expected SoccerNet events."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from spot_data import CLASS_NAMES, planted_logits, softmax64, write_heads
from tsf.runtime.errors import InputError
from tsf.runtime.outputs import game_halves
from tsf.runtime.spotting.spot import SpotSettings, class_probabilities, game_time, load_half, nms_peaks, spot_half
from tsf.runtime.spotting.cli import main

EVENTS = {
    "Goal": [(100, 12.0), (110, 10.0)],  # the second is within 15 s of the first: suppressed at 30 s
    "Corner": [(50, 11.0), (300, 9.0)],
    "Foul": [(400, 9.0)],
}
ROWS = 600


def expected_events(logits, centre_offset, events, half=1):
    """Hand-derived: every planted peak but Goal@110, at the row's window centre."""
    p = softmax64(logits)
    out = []
    for label, peaks in events.items():
        for row, _ in peaks:
            if (label, row) == ("Goal", 110):
                continue
            seconds = row + centre_offset
            out.append({"gameTime": f"{half} - {int(seconds) // 60:02d}:{int(seconds) % 60:02d}", "label": label,
                        "position": str(int(round(seconds * 1000))), "half": str(half),
                        "confidence": p[row, CLASS_NAMES.index(label)]})
    return sorted(out, key=lambda e: int(e["position"]))


def as_comparable(spots):
    return [{**s.to_soccernet(), "confidence": s.confidence} for s in spots]


def test_softmax_matches_float64_reference_and_survives_large_logits():
    logits = planted_logits(50, EVENTS)
    np.testing.assert_allclose(class_probabilities(logits), softmax64(logits), rtol=1e-12)
    big = np.array([[1000.0, 999.0, -1000.0]])
    np.testing.assert_allclose(class_probabilities(big)[0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0])


def test_rows_are_placed_at_the_times_their_set_records(tmp_path):
    assert list(load_half(write_heads(str(tmp_path / "c"), planted_logits(3, {}))).row_times) == [0.5, 1.5, 2.5]
    assert list(load_half(write_heads(str(tmp_path / "r"), planted_logits(3, {}), "reference")).row_times) == \
        [2.5, 3.5, 4.5]
    assert list(load_half(write_heads(str(tmp_path / "two"), planted_logits(4, {}), rate=2)).row_times) == \
        [0.25, 0.75, 1.25, 1.75]


def test_two_rows_per_second_place_events_at_the_right_milliseconds(tmp_path):
    """SoccerNet's rate: row i of a --rate 2 set is centred on (i + 0.5) / 2 s."""
    logits = planted_logits(2 * ROWS, {"Goal": [(201, 12.0)], "Corner": [(600, 11.0)]})
    spots = spot_half(load_half(write_heads(str(tmp_path / "1_tsf"), logits, rate=2)), 1, SpotSettings(threshold=0.5))
    assert [(s.label, s.to_soccernet()["position"]) for s in spots] == [("Goal", "100750"), ("Corner", "300250")]


@pytest.mark.parametrize("alignment, centre_offset", [("center", 0.5), ("reference", 2.5)])
def test_planted_peaks_are_spotted_at_their_game_time(tmp_path, alignment, centre_offset):
    logits = planted_logits(ROWS, EVENTS)
    heads = load_half(write_heads(str(tmp_path / "1_224p"), logits, alignment))
    spots = spot_half(heads, half=1, settings=SpotSettings(nms_window=30, threshold=0.5))
    got = as_comparable(spots)
    want = expected_events(logits, centre_offset, EVENTS)
    assert [{k: v for k, v in g.items() if k != "confidence"} for g in got] == \
           [{k: v for k, v in w.items() if k != "confidence"} for w in want]
    np.testing.assert_allclose([g["confidence"] for g in got], [w["confidence"] for w in want], rtol=1e-6)
    assert all(s.confidence > 0.99 for s in spots if s.label == "Goal")


def test_a_narrower_nms_window_keeps_the_second_goal(tmp_path):
    heads = load_half(write_heads(str(tmp_path / "1"), planted_logits(ROWS, EVENTS)))
    goals = [s.seconds for s in spot_half(heads, 1, SpotSettings(nms_window=10, threshold=0.5)) if s.label == "Goal"]
    assert goals == [100.5, 110.5]


def test_threshold_zero_nms_covers_every_row_and_keeps_spots_apart():
    rng = np.random.default_rng(3)
    scores = rng.uniform(size=500)
    times = np.arange(500) + 0.5
    kept = nms_peaks(scores, times, window_seconds=30, threshold=0.0)
    kept_times = np.sort(times[kept])
    assert np.all(np.diff(kept_times) >= 15)
    assert np.all(np.min(np.abs(times[:, None] - kept_times[None, :]), axis=1) < 15)
    # greedy order: most confident first, and the global maximum is always kept
    assert kept[0] == int(np.argmax(scores))
    assert list(scores[kept]) == sorted(scores[kept], reverse=True)


def test_event_times_head_places_the_event_inside_its_window(tmp_path):
    logits = planted_logits(ROWS, {"Goal": [(100, 12.0)]})
    event_times = np.full(logits.shape, 0.5, dtype=np.float32)
    event_times[100, CLASS_NAMES.index("Goal")] = 0.2
    heads = load_half(write_heads(str(tmp_path / "1"), logits, "center", event_times=event_times))
    (goal,) = [s for s in spot_half(heads, 1, SpotSettings(threshold=0.5, event_times=True)) if s.label == "Goal"]
    assert goal.seconds == pytest.approx(100.5 - 2.5 + 0.2 * 5)


def test_game_time_formats_like_soccernet():
    assert game_time(1, 0.5) == "1 - 00:00"
    assert game_time(2, 2759.9) == "2 - 45:59"
    assert game_time(1, 3000.0) == "1 - 50:00"


def test_halves_are_found_by_soccernet_names(tmp_path):
    for name in ("1_224p", "2_224p"):
        write_heads(str(tmp_path / name), planted_logits(10, {}))
    write_heads(str(tmp_path / "match"), planted_logits(10, {}))  # not a half: not part of the game
    assert game_halves(tmp_path) == {1: tmp_path / "1_224p", 2: tmp_path / "2_224p"}
    for name in ("1_tsf", "2_tsf"):  # a second feature set of the same game, named with --name
        write_heads(str(tmp_path / name), planted_logits(10, {}))
    assert game_halves(tmp_path, "tsf") == {1: tmp_path / "1_tsf", 2: tmp_path / "2_tsf"}
    with pytest.raises(InputError, match="two output sets for half 1"):
        game_halves(tmp_path)


def test_missing_or_mismatched_class_names_are_one_line_errors(tmp_path):
    path = write_heads(str(tmp_path / "1"), planted_logits(10, {}), class_names=None)
    with pytest.raises(InputError, match="--classes"):
        load_half(path)
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASS_NAMES[:5]) + "\n")
    with pytest.raises(InputError, match="gives 5 class names"):
        load_half(path, str(names))
    names.write_text("\n".join(CLASS_NAMES) + "\n")
    assert load_half(path, str(names)).class_names == CLASS_NAMES
    os.remove(tmp_path / "1.json")
    with pytest.raises(InputError, match="1.npy exists without the 1.json"):
        load_half(path)


def _game(tmp_path):
    game = tmp_path / "out" / "league" / "2015-2016" / "game one"
    first = planted_logits(ROWS, EVENTS)
    second = planted_logits(ROWS, {"Penalty": [(20, 12.0)], "Goal": [(21, 12.0)]}, seed=1)
    write_heads(str(game / "1_224p"), first)
    write_heads(str(game / "2_224p"), second)
    return game, first, second


def test_cli_writes_one_results_file_per_game(tmp_path, capsys):
    game, first, second = _game(tmp_path)
    main([str(tmp_path / "out"), "-o", str(tmp_path / "preds"), "--threshold", "0.5"])
    results = json.loads((tmp_path / "preds" / "league" / "2015-2016" / "game one" / "results_spotting.json").read_text())
    assert results["UrlLocal"] == "league/2015-2016/game one"
    want = expected_events(first, 0.5, EVENTS, half=1) + expected_events(
        second, 0.5, {"Penalty": [(20, 0)], "Goal": [(21, 0)]}, half=2)
    got = results["predictions"]
    assert [{k: v for k, v in g.items() if k != "confidence"} for g in got] == \
           [{k: v for k, v in w.items() if k != "confidence"} for w in want]
    assert all(isinstance(g["confidence"], str) for g in got)
    np.testing.assert_allclose([float(g["confidence"]) for g in got], [w["confidence"] for w in want], rtol=1e-5)
    assert "league/2015-2016/game one: 6 events" in capsys.readouterr().out


def test_cli_refuses_to_clobber_and_reports_one_line(tmp_path, capsys):
    game, _, _ = _game(tmp_path)
    main([str(game), "--threshold", "0.5"])
    assert (game / "results_spotting.json").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(game), "--threshold", "0.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
    main([str(game), "--threshold", "0.5", "--overwrite"])


def test_cli_evaluates_against_labels(tmp_path, capsys):
    game, _, _ = _game(tmp_path)
    labels = tmp_path / "labels" / "league" / "2015-2016" / "game one"
    labels.mkdir(parents=True)
    truth = [("1", "Goal", 100.5), ("1", "Corner", 50.5), ("1", "Corner", 300.5), ("1", "Foul", 400.5),
             ("2", "Penalty", 20.5), ("2", "Goal", 21.5)]
    (labels / "Labels-v2.json").write_text(json.dumps({"annotations": [
        {"gameTime": f"{h} - 00:00", "label": label, "position": str(int(s * 1000)), "visibility": "visible"}
        for h, label, s in truth]}))
    metrics = tmp_path / "metrics.json"
    main([str(tmp_path / "out"), "-o", str(tmp_path / "preds"), "--threshold", "0.5",
          "--evaluate", str(tmp_path / "labels"), "--map-implementation", "builtin", "--metrics", str(metrics)])
    scores = json.loads(metrics.read_text())
    for metric in ("tight", "loose"):
        per_class = scores[metric]["a_mAP_per_class"]
        assert {c for c, v in per_class.items() if v == 1.0} == {"Goal", "Corner", "Foul", "Penalty"}
        assert all(v == 0.0 for c, v in per_class.items() if c not in {"Goal", "Corner", "Foul", "Penalty"})
        assert scores[metric]["a_mAP"] == pytest.approx(4 / 17)
    assert "average-mAP tight: 0.2353" in capsys.readouterr().out


def test_cli_takes_explicit_halves(tmp_path, capsys):
    game, first, second = _game(tmp_path)
    main(["--half1", str(game / "1_224p.json"), "--half2", str(game / "2_224p"), "--game", "l/s/g",
          "-o", str(tmp_path / "preds"), "--threshold", "0.5"])
    results = json.loads((tmp_path / "preds" / "l" / "s" / "g" / "results_spotting.json").read_text())
    assert results["UrlLocal"] == "l/s/g"
    assert [p["half"] for p in results["predictions"]] == ["1"] * 4 + ["2"] * 2
    with pytest.raises(SystemExit):
        main([str(game), "--half1", str(game / "1_224p.heads.npz")])
    assert "not both" in capsys.readouterr().err


def test_class_name_files_are_read_one_way_everywhere(tmp_path):
    from tsf.runtime.spotting.classes import read_class_names

    lines = tmp_path / "classes.txt"
    lines.write_text(" Goal \nCorner\nbackground\n\n\n")
    assert read_class_names(lines) == ["Goal", "Corner", "background"]
    listed = tmp_path / "classes.json"
    listed.write_text('["Goal", "Corner"]')
    assert read_class_names(listed) == ["Goal", "Corner"]
    for text, message in (("Goal\n\nCorner\n", "empty class name (entry 2)"), ("\n\n", "holds no class names"),
                          ("[1, ", "not a JSON list")):
        lines.write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            read_class_names(lines)
    with pytest.raises(InputError, match="class names file not found"):
        read_class_names(tmp_path / "absent.txt")
