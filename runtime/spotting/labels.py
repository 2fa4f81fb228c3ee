"""Event labels: SoccerNet's `Labels-v2.json`, tsf's `video,time_seconds,label[,split]` table, split lists.

This is the one parser of these formats in the runtime: the average-mAP, the learned spotting
heads and their training read labels through it. Its rules are the SoccerNet package's where the
package defines them (docs/spotting.md, "Labels"):
- an annotation's half is the first number of its `gameTime` ("1 - 12:34"); its time is
  `position` (milliseconds from the start of that half's video) when present, else the
  `gameTime` minutes and seconds; `visibility` "not shown" marks an event that happened off screen;
- a table row names a video (relative to the table's folder), a time in seconds on that video's
  own clock, a label and optionally a split. CSV with a header row, or a JSON list of objects;
- a split list names one game (or video) per line, or is a JSON list of them.
Only the standard library is needed.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass

from ..errors import InputError

LABELS_FILE = "Labels-v2.json"
TABLE_COLUMNS = ("video", "time_seconds", "label")
NOT_SHOWN = "not shown"
_GAME_TIME = re.compile(r"^\s*([12])\s*-\s*(\d+):(\d{1,2})\s*$")


@dataclass(frozen=True)
class LabelledEvent:
    """One annotated event of a half: `position_ms` from the start of that half's video."""

    half: int
    position_ms: int
    label: str
    visible: bool = True

    @property
    def seconds(self) -> float:
        return self.position_ms / 1000


@dataclass(frozen=True)
class TableRow:
    """One row of a label table: `video` is an absolute, normalised path."""

    video: str
    time_ms: int
    label: str
    split: str | None = None


def parse_game_time(text) -> tuple[int, int]:
    """`"1 - 12:34"` -> (half 1, 754 000 ms). Minutes may exceed 45 (added time)."""
    match = _GAME_TIME.match(str(text))
    if not match:
        raise InputError(f"gameTime {text!r} is not of the form 'H - MM:SS' with H 1 or 2")
    half, minutes, seconds = (int(g) for g in match.groups())
    return half, (minutes * 60 + seconds) * 1000


def annotation_event(annotation: dict) -> LabelledEvent:
    """One entry of `annotations` -> its event (position wins over gameTime's whole seconds)."""
    half, game_ms = parse_game_time(annotation.get("gameTime", ""))
    position = annotation.get("position")
    if position in (None, ""):
        position_ms = game_ms
    else:
        try:
            position_ms = int(round(float(position)))
        except (TypeError, ValueError):
            raise InputError(f"position {position!r} is not a number of milliseconds") from None
    return LabelledEvent(half, position_ms, str(annotation.get("label", "")),
                         annotation.get("visibility") != NOT_SHOWN)


def labels_events(document) -> list[LabelledEvent]:
    """Every event of a `Labels-v2.json` document, in file order."""
    annotations = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(annotations, list):
        raise InputError("no 'annotations' list (a SoccerNet Labels-v2.json has one)")
    events = []
    for number, annotation in enumerate(annotations, start=1):  # counted as people count: the first is 1
        if not isinstance(annotation, dict):
            raise InputError(f"annotation {number} is not an object")
        try:
            events.append(annotation_event(annotation))
        except InputError as exc:
            raise InputError(f"annotation {number}: {exc}") from None
    return events


def read_labels(path) -> list[LabelledEvent]:
    """The events of a `Labels-v2.json` file; a one-line InputError naming the file otherwise."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as exc:
        raise InputError(f"cannot read labels {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    try:
        return labels_events(document)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_table(path) -> list[TableRow]:
    """Rows of a `video,time_seconds,label[,split]` CSV (header row) or JSON list of such objects."""
    path = os.fspath(path)
    is_json = path.lower().endswith(".json")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if is_json:
                rows = json.load(f)
                if isinstance(rows, dict):
                    rows = rows.get("annotations")
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise InputError(f"{path}: expected a JSON list of {{video, time_seconds, label}} objects")
            else:
                rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"cannot read labels {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    base = os.path.dirname(os.path.abspath(path))
    table = []
    for number, row in enumerate(rows, start=1 if is_json else 2):  # a CSV's first data row is line 2
        where = f"{path} {'item' if is_json else 'line'} {number}"
        missing = [c for c in TABLE_COLUMNS if row.get(c) in (None, "")]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        try:
            seconds = float(row["time_seconds"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: time_seconds {row['time_seconds']!r} is not a number") from None
        if not seconds >= 0:
            raise InputError(f"{where}: time_seconds {row['time_seconds']!r} is negative")
        table.append(TableRow(os.path.normpath(os.path.join(base, str(row["video"]))), int(round(seconds * 1000)),
                              str(row["label"]).strip(), (str(row.get("split") or "")).strip() or None))
    return table


def read_split_list(path) -> list[str]:
    """Game (or video) names, one per line or a JSON list; blank lines and surrounding '/' dropped."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InputError(f"cannot read split list {path} ({exc.strerror})") from None
    if path.lower().endswith(".json"):
        try:
            names = json.loads(text)
        except ValueError:
            raise InputError(f"split list {path} is not valid JSON") from None
        if not isinstance(names, list):
            raise InputError(f"split list {path} must be a JSON list of names")
    else:
        names = text.splitlines()
    return [str(n).strip().strip("/") for n in names if str(n).strip()]
