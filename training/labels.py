"""Class map and annotation parsing: SoccerNet-v2 `Labels-v2.json` + `video.ini`, or a CSV/JSON list.

Times are kept as integer milliseconds end to end so that "which 10-s clip holds this event" is
exact arithmetic: an event at 10.000 s belongs to the clip [10, 20), never to [0, 10) by a float
rounding accident.

Dependencies: only the standard library (csv, json, configparser).
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass

from tsf.runtime.spotting.classes import BACKGROUND, SOCCERNET_V2_ACTIONS

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

_GAME_TIME_RE = re.compile(r"^\s*([12])\s*-\s*(\d+):(\d{1,2})\s*$")


def parse_game_time(text: str) -> tuple[int, int]:
    """`"1 - 12:34"` -> (half 1, 754 000 ms). Minutes may exceed 45 (added time)."""
    m = _GAME_TIME_RE.match(str(text))
    if not m:
        raise TrainingError(f"gameTime {text!r} is not of the form 'H - MM:SS'")
    half, minutes, seconds = (int(g) for g in m.groups())
    return half, (minutes * 60 + seconds) * 1000


def annotation_time_ms(annotation: dict) -> tuple[int, int]:
    """(half, ms since the half's kick-off): `position` (ms) when present, else gameTime seconds."""
    half, game_ms = parse_game_time(annotation.get("gameTime", ""))
    position = annotation.get("position")
    if position not in (None, ""):
        try:
            return half, int(round(float(position)))
        except (TypeError, ValueError):
            raise TrainingError(f"position {position!r} is not a number of milliseconds") from None
    return half, game_ms


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
    labels_path = os.path.join(game_dir, "Labels-v2.json")
    try:
        with open(labels_path, encoding="utf-8") as f:
            annotations = json.load(f)["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"cannot read annotations from {labels_path} ({type(exc).__name__})") from None
    ini_path = os.path.join(game_dir, "video.ini")
    offsets = read_game_start_offsets(ini_path) if os.path.isfile(ini_path) else {}
    events, without_video = [], Counter()
    for number, annotation in enumerate(annotations, start=1):
        try:
            half, ms = annotation_time_ms(annotation)
        except TrainingError as exc:
            raise TrainingError(f"{labels_path}, annotation {number}: {exc}") from None
        video = videos_by_half.get(half)
        if video is None:
            without_video[half] += 1
            continue
        offset_ms = int(round(offset_for_video(offsets, os.path.basename(video), half) * 1000))
        events.append(Event(video, ms + offset_ms, str(annotation.get("label", ""))))
    return events, dict(without_video)


# ---------------------------------------------------------------- simple format -----------------

SIMPLE_COLUMNS = ("video", "time_seconds", "label")


def read_simple_annotations(path: str) -> list[dict]:
    """Rows of `video, time_seconds, label[, split]` from a CSV (header row) or a JSON list.

    Video paths are relative to the annotation file's folder unless absolute.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.lower().endswith(".json"):
                rows = json.load(f)
                if isinstance(rows, dict):
                    rows = rows.get("annotations")
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise TrainingError(f"{path}: expected a JSON list of {{video, time_seconds, label}} objects")
            else:
                rows = list(csv.DictReader(f))
    except OSError as exc:
        raise TrainingError(f"cannot read annotations {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TrainingError(f"{path} is not valid JSON ({exc})".splitlines()[0]) from None
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for number, row in enumerate(rows, start=2 if not path.lower().endswith(".json") else 1):
        missing = [c for c in SIMPLE_COLUMNS if row.get(c) in (None, "")]
        if missing:
            raise TrainingError(f"{path} row {number}: missing {', '.join(missing)}")
        try:
            seconds = float(row["time_seconds"])
        except (TypeError, ValueError):
            raise TrainingError(f"{path} row {number}: time_seconds {row['time_seconds']!r} is not a number") from None
        video = os.path.normpath(os.path.join(base, str(row["video"])))
        out.append({"video": video, "time_ms": int(round(seconds * 1000)), "label": str(row["label"]).strip(),
                    "split": (row.get("split") or "").strip() or None})
    return out
