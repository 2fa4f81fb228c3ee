"""A synthetic SoccerNet-like tree for the training tests: two tiny games, labels with the edge
cases that matter (game-start offsets, events on clip boundaries, millisecond positions, a
gameTime-only event, an unknown label, an event past the last whole clip), and the samples that
`tsf-train prepare` must produce from it, written out by hand from the spec.

Videos come from tests/videos.py, so every frame carries its frame number as a barcode.
"""

from __future__ import annotations

import json
from pathlib import Path

from videos import make_video

FPS = 10
SIZE = (456, 256)
GAME_A = "league/2020-2021/2020-09-12 - 17-00 Alpha 1 - 0 Beta"
GAME_B = "league/2020-2021/2020-09-19 - 20-00 Gamma 2 - 2 Delta"

# seconds of video per half
DURATIONS = {(GAME_A, 1): 25, (GAME_A, 2): 31, (GAME_B, 1): 22, (GAME_B, 2): 20}

LABELS = {
    GAME_A: [
        # half 1 starts 3 s into the video (video.ini): video time = position + 3 s
        {"gameTime": "1 - 00:07", "label": "Goal", "position": "7000"},          # 10.000 s: clip 1 at 0.0 (boundary)
        {"gameTime": "1 - 00:16", "label": "Foul", "position": "16999"},         # 19.999 s: clip 1 at 9.999
        {"gameTime": "1 - 00:02", "label": "Corner", "position": "2500"},        # 5.5 s: clip 0
        {"gameTime": "1 - 00:20", "label": "Clearance", "position": "20000"},    # 23.0 s: past the last whole clip
        {"gameTime": "1 - 00:04", "label": "Dive", "position": "4000"},          # not a SoccerNet-v2 class
        # half 2 starts at 0 s
        {"gameTime": "2 - 00:05", "label": "Throw-in", "position": "5250"},      # 5.25 s: clip 0
        {"gameTime": "2 - 00:12", "label": "Kick-off"},                          # no position: 12 s -> clip 1 at 2.0
    ],
    GAME_B: [  # no video.ini: video time = position
        {"gameTime": "1 - 00:05", "label": "Goal", "position": "5000"},
        {"gameTime": "2 - 00:15", "label": "Shots on target", "position": "15000"},
    ],
}

VIDEO_INI = "[1_HQ.mkv]\nstart_time_second = 3\nduration_second = 22\n\n[2_HQ.mkv]\nstart_time_second = 0\nduration_second = 31\n"

# (source id, clip index, class name, event time in the clip), per split; background at 5.0 s
EXPECTED = {
    "train": [
        (f"{GAME_A}/1_HQ", 0, "Corner", 5.5),
        (f"{GAME_A}/1_HQ", 1, "Foul", 9.999),
        (f"{GAME_A}/1_HQ", 1, "Goal", 0.0),
        (f"{GAME_A}/2_HQ", 0, "Throw-in", 5.25),
        (f"{GAME_A}/2_HQ", 1, "Kick-off", 2.0),
        (f"{GAME_A}/2_HQ", 2, "background", 5.0),
    ],
    "valid": [
        (f"{GAME_B}/1_HQ", 0, "Goal", 5.0),
        (f"{GAME_B}/1_HQ", 1, "background", 5.0),
        (f"{GAME_B}/2_HQ", 0, "background", 5.0),
        (f"{GAME_B}/2_HQ", 1, "Shots on target", 5.0),
    ],
}


def make_soccernet_tree(root: Path) -> dict[str, Path]:
    """Write the tree under `root`; returns the split lists {"train": path, "valid": path}."""
    for (game, half), seconds in DURATIONS.items():
        folder = root / game
        folder.mkdir(parents=True, exist_ok=True)
        make_video(folder / f"{half}_HQ.mkv", seconds=seconds, fps=FPS, size=SIZE, bframes=0)
    for game, events in LABELS.items():
        (root / game / "Labels-v2.json").write_text(json.dumps({"UrlLocal": game, "annotations": events}))
    (root / GAME_A / "video.ini").write_text(VIDEO_INI)
    lists = {"train": root / "train.txt", "valid": root / "valid.txt"}
    lists["train"].write_text(GAME_A + "\n")
    lists["valid"].write_text(GAME_B + "\n")
    return lists
