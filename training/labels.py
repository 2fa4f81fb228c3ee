"""Class map and annotations for training: SoccerNet-v2 games (`Labels-v2.json` + `video.ini`) or a table.

The label formats themselves are read by the runtime's one parser (runtime/spotting/labels.py,
shared with tsf-spot and its learned heads); this module places the events on each training
video's own clock.

Times are kept as integer milliseconds end to end so that "which 10-s clip holds this event" is
exact arithmetic: an event at 10.000 s belongs to the clip [10, 20), never to [0, 10) by a float
rounding accident.

Dependencies: only the standard library (json, configparser).
"""

from __future__ import annotations

import configparser
import json
import os
from collections import Counter
from dataclasses import dataclass

from tsf.runtime.spotting.classes import BACKGROUND, SOCCERNET_V2_ACTIONS
from tsf.runtime.spotting.labels import LABELS_FILE, read_labels

from .errors import TrainingError


@dataclass(frozen=True)
class ClassMap:
    """Class names in index order; background is always the last class."""

    names: tuple[str, ...]

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            dup = [n for n, c in Counter(self.names).items() if c > 1]
            raise TrainingError(f"class names repeat: {', '.join(dup)}")
        if not self.names or self.names[-1] != BACKGROUND:
            raise TrainingError(f"the last class must be {BACKGROUND!r}")

    @classmethod
    def soccernet_v2(cls) -> "ClassMap":
        return cls(SOCCERNET_V2_ACTIONS + (BACKGROUND,))

    @classmethod
    def from_actions(cls, actions) -> "ClassMap":
        actions = tuple(a for a in actions if a.lower() != BACKGROUND)
        return cls(actions + (BACKGROUND,))

    @property
    def background_index(self) -> int:
        return len(self.names) - 1

    def index(self, name: str) -> int | None:
        try:
            return self.names.index(name)
        except ValueError:
            return None

    def to_text(self) -> str:
        """One name per line in index order: the format `tsf-export --classes` reads."""
        return "".join(name + "\n" for name in self.names)

    def to_json(self) -> dict:
        return {"class_names": list(self.names), "background_index": self.background_index}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ClassMap":
        """A `classes.json` written by prepare, or a text file with one action name per line."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise TrainingError(f"cannot read class map {path}: {exc.strerror}") from None
        if path.endswith(".json"):
            try:
                names = json.loads(text)["class_names"]
            except (ValueError, KeyError, TypeError):
                raise TrainingError(f"{path} is not a class map (expected {{\"class_names\": [...]}})") from None
            return cls(tuple(names))
        return cls.from_actions(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class Event:
    """One annotated event: `video` is a path, `time_ms` is on the video's own clock."""

    video: str
    time_ms: int
    label: str


# ---------------------------------------------------------------- SoccerNet ---------------------
# Labels-v2.json and the label table are read by the runtime's one parser (runtime/spotting/labels.py);
# this module adds what training needs on top: full-match videos' start offsets and the class map.

def read_game_start_offsets(ini_path: str) -> dict[str, float]:
    """`video.ini` -> {section name: start_time_second}. Sections name the video files (`1_HQ.mkv`).

    The full-match (HQ) videos start before kick-off; gameTime counts from kick-off, so the video
    time of an event is gameTime + start_time_second. Trimmed videos (224p/720p) have no video.ini.
    """
    parser = configparser.ConfigParser()
    try:
        with open(ini_path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise TrainingError(f"cannot read {ini_path}: {exc}".splitlines()[0]) from None
    offsets = {}
    for section in parser.sections():
        value = parser[section].get("start_time_second")
        if value is None:
            continue
        try:
            offsets[section] = float(value)
        except ValueError:
            raise TrainingError(f"{ini_path} [{section}] start_time_second {value!r} is not a number") from None
    return offsets


def offset_for_video(offsets: dict[str, float], video_name: str, half: int) -> float:
    """The section named exactly like the video, else the one section of that half (`1_*`)."""
    if video_name in offsets:
        return offsets[video_name]
    same_half = [name for name in offsets if name.startswith(f"{half}_") or name == str(half)]
    if len(same_half) == 1:
        return offsets[same_half[0]]
    return 0.0


def soccernet_game_events(game_dir: str, videos_by_half: dict[int, str]) -> tuple[list[Event], dict[int, int]]:
    """Events of one game directory, on each half-video's own clock (game-start offset applied), and
    the number of events of each half that has no video (left out: prepare names them)."""
    ini_path = os.path.join(game_dir, "video.ini")
    offsets = read_game_start_offsets(ini_path) if os.path.isfile(ini_path) else {}
    events, without_video = [], Counter()
    for event in read_labels(os.path.join(game_dir, LABELS_FILE)):
        video = videos_by_half.get(event.half)
        if video is None:
            without_video[event.half] += 1
            continue
        offset_ms = int(round(offset_for_video(offsets, os.path.basename(video), event.half) * 1000))
        events.append(Event(video, event.position_ms + offset_ms, event.label))
    return events, dict(without_video)
