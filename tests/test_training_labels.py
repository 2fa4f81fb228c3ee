"""Label parsing and the class map, checked against values worked out by hand from the spec."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from tsf.training.errors import TrainingError
from tsf.runtime.errors import InputError
from tsf.training.labels import (BACKGROUND, ClassMap, Event, offset_for_video, read_game_start_offsets,
                                 soccernet_game_events)
from tsf.training.prepare import SourceVideo, build_samples, hash_split

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

SOCCERNET_ORDER = ["Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target",
                   "Shots off target", "Clearance", "Ball out of play", "Throw-in", "Foul",
                   "Indirect free-kick", "Direct free-kick", "Corner", "Yellow card", "Red card",
                   "Yellow->red card"]


def test_soccernet_class_map_is_the_official_order_then_background_at_17():
    classes = ClassMap.soccernet_v2()
    assert list(classes.names) == SOCCERNET_ORDER + ["background"]
    assert classes.background_index == 17 and classes.index("background") == 17
    assert classes.index("Yellow->red card") == 16 and classes.index("Dive") is None


def test_class_map_files(tmp_path):
    text = tmp_path / "actions.txt"
    text.write_text("pass\nshot\n\nBackground\n")
    assert ClassMap.load(text).names == ("pass", "shot", BACKGROUND)
    saved = tmp_path / "classes.json"
    saved.write_text(json.dumps(ClassMap.soccernet_v2().to_json()))
    assert ClassMap.load(saved) == ClassMap.soccernet_v2()
    with pytest.raises(TrainingError, match="repeat"):
        ClassMap(("a", "a", BACKGROUND))
    with pytest.raises(TrainingError, match="last class"):
        ClassMap(("a", "b"))


def test_video_ini_offsets(tmp_path):
    ini = tmp_path / "video.ini"
    ini.write_text("[1_HQ.mkv]\nstart_time_second = 65\nduration_second = 2850\n"
                   "[2_HQ.mkv]\nstart_time_second = 37.5\n")
    offsets = read_game_start_offsets(str(ini))
    assert offsets == {"1_HQ.mkv": 65.0, "2_HQ.mkv": 37.5}
    assert offset_for_video(offsets, "1_HQ.mkv", 1) == 65.0
    assert offset_for_video(offsets, "2_720p.mkv", 2) == 37.5  # the one section of that half
    assert offset_for_video({}, "1_224p.mkv", 1) == 0.0  # trimmed videos have no offsets


def test_clip_assignment_at_boundaries():
    """Clips are half-open [10k, 10k + 10) s: an event at exactly 10.000 s opens clip 1."""
    classes = ClassMap.soccernet_v2()
    events = [Event("v", ms, "Goal") for ms in (0, 9_999, 10_000, 19_999, 20_000, -1, 40_000)]
    video = SourceVideo("v", "v", "train", events)
    skipped = Counter()
    samples = build_samples(video, {0: "c0", 1: "c1", 3: "c3"}, 4, classes, 10, skipped)
    got = sorted((s["clip"], s["event_time"], s["label"]) for s in samples)
    goal = classes.index("Goal")
    assert got == [("c0", 0.0, goal), ("c0", 9.999, goal), ("c1", 0.0, goal), ("c1", 9.999, goal),
                   ("c3", 5.0, 17)]  # clip 3 has no event: one background sample at the centre
    # 20.000 s falls in clip 2, which could not be cut; -1 ms and 40 s (clip 4 of 4) are outside the whole clips
    assert skipped == {"clip_missing": 1, "outside_clips": 2}


def test_hash_split_is_stable_and_follows_the_ratios():
    names = [f"game {i}" for i in range(2000)]
    splits = Counter(hash_split(n, (0.8, 0.1, 0.1)) for n in names)
    assert abs(splits["train"] / 2000 - 0.8) < 0.04 and abs(splits["valid"] / 2000 - 0.1) < 0.03
    assert [hash_split(n, (0.8, 0.1, 0.1)) for n in names[:50]] == [hash_split(n, (0.8, 0.1, 0.1)) for n in names[:50]]
    assert {hash_split(n, (0, 1, 0)) for n in names[:50]} == {"valid"}


def test_a_bad_annotation_is_named_with_its_file_and_place(tmp_path):
    game = tmp_path / "league" / "game"
    game.mkdir(parents=True)
    annotations = [{"gameTime": "1 - 00:07", "label": "Goal", "position": "7000"},
                   {"gameTime": "1 - 00:09", "label": "Foul", "position": "abc"}]
    (game / "Labels-v2.json").write_text(json.dumps({"annotations": annotations}))
    with pytest.raises(InputError, match=rf"^{re.escape(str(game / 'Labels-v2.json'))}: annotation 2: position "
                                         r"'abc' is not a number of milliseconds$"):
        soccernet_game_events(str(game), {1: str(game / "1_HQ.mkv")})


def test_events_of_a_half_without_video_are_counted(tmp_path):
    game = tmp_path / "game"
    game.mkdir()
    annotations = [{"gameTime": f"{half} - 00:0{s}", "label": "Goal"} for half in (1, 2, 2) for s in (1,)]
    (game / "Labels-v2.json").write_text(json.dumps({"annotations": annotations}))
    events, without_video = soccernet_game_events(str(game), {1: str(game / "1_HQ.mkv")})
    assert [e.time_ms for e in events] == [1000] and without_video == {2: 2}
