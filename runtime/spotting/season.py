"""A season on disk -> the labelled halves a head trains and validates on.

Features are tsf output sets read through runtime/outputs.py; labels are SoccerNet's
`Labels-v2.json` per game or one label table (labels.py); the train and valid splits are lists
of games (or, for a table, videos), the table's `split` column, or SoccerNet's official lists.
- SoccerNet layout: game `league/season/game` has its sets in FEATURES/league/season/game
  (`1_NAME`, `2_NAME`, found by `game_halves`) and its labels in LABELS/league/season/game/Labels-v2.json.
- A table: the video `dir/clip.mp4` (relative to the table) has its set at FEATURES/dir/clip
  (FEATURES/dir/clip_NAME with a set name, as tsf-extract --name names it); each video is one
  half-like sequence, named by its path.
Every half of a season must come from the same feature bundle, width and rate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..extras import require
from ..outputs import OutputSet, game_halves, read_outputs, set_name
from .classes import BACKGROUND, SOCCERNET_V2_ACTIONS, read_class_names
from .head_bundle import FeatureKind
from .head_targets import LabelledHalf
from .labels import LABELS_FILE, LabelledEvent, read_labels, read_split_list, read_table

log = logging.getLogger("tsf")

SPLITS = ("train", "valid")
SOCCERNET_SPLITS = "soccernet"  # --split train=soccernet: SoccerNet's official list of that split


@dataclass
class Season:
    class_names: tuple[str, ...]
    features: FeatureKind | None = None
    halves: dict[str, list[LabelledHalf]] = field(default_factory=lambda: {s: [] for s in SPLITS})

    def add(self, split: str, half: LabelledHalf, kind: FeatureKind, source) -> None:
        if self.features is None:
            self.features = kind
        problem = self.features.mismatch(kind)
        if problem:
            raise InputError(f"{source} has {problem} (the season's first set has {self.features.bundle_id!r} "
                             f"features, {self.features.width} wide, {self.features.rate:g} per second)")
        self.halves[split].append(half)


def feature_kind(finished) -> FeatureKind:
    """The bundle id, width and rate an output set records (a one-line error where it does not)."""
    try:
        return FeatureKind(finished.bundle_id, finished.width, finished.rate)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise InputError(f"{finished.metadata_path} does not record its feature bundle id and row stride "
                         "(bundle.id, window.stride_seconds); re-extract it with this tsf") from None


def head_class_names(path) -> tuple[str, ...]:
    """A head's classes from a class-names file (classes.read_class_names); a background class, as a
    bundle's list has, is dropped."""
    names = [n for n in read_class_names(path) if n != BACKGROUND]
    if not names or len(set(names)) != len(names):
        raise InputError(f"{path}: give each class name once (and at least one)")
    return tuple(names)


def split_games(split_lists: dict[str, str]) -> dict[str, list[str]]:
    """{split: names} from `--split SPLIT=FILE` (FILE `soccernet`: SoccerNet's official list)."""
    games = {}
    for split, source in split_lists.items():
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r} (give {' and '.join(SPLITS)})")
        if source == SOCCERNET_SPLITS:
            utils = require("SoccerNet.utils", "soccernet", f"--split {split}={SOCCERNET_SPLITS}", InputError)
            games[split] = [str(g) for g in utils.getListGames(split, task="spotting")]
        else:
            games[split] = read_split_list(source)
    return games


def soccernet_season(features_root, labels_root, games: dict[str, list[str]], class_names=SOCCERNET_V2_ACTIONS,
                     name: str | None = None) -> Season:
    """Labelled halves of the listed games: sets under FEATURES/<game>, labels under LABELS/<game>."""
    for split in SPLITS:
        if split not in games:
            raise InputError(f"no {split} games: give --split {split}=FILE (one game per line, or 'soccernet' for "
                             "SoccerNet's official list)")
    season = Season(tuple(class_names))
    for split in SPLITS:
        missing = []
        for game in games[split]:
            labels_path = Path(labels_root, game, LABELS_FILE)
            halves = game_halves(Path(features_root, game), name)
            if not halves or not labels_path.is_file():
                missing.append(game)
                continue
            events = read_labels(labels_path)
            for half, base in sorted(halves.items()):
                finished = read_outputs(base)
                season.add(split, LabelledHalf.from_events(game, half, finished.features, finished.row_times, events,
                                                           season.class_names), feature_kind(finished), base)
        _report(split, len(games[split]), missing, "features or labels")
    return season


def table_season(features_root, table_path, class_names=None, games: dict[str, list[str]] | None = None,
                 name: str | None = None) -> Season:
    """Labelled videos of a label table, split by `games` ({split: video paths as the table gives
    them}) or else by the table's split column."""
    rows = read_table(table_path)
    base = os.path.dirname(os.path.abspath(table_path))
    by_video: dict[str, list] = {}
    for row in rows:
        by_video.setdefault(os.path.relpath(row.video, base).replace(os.sep, "/"), []).append(row)
    if class_names is None:
        class_names = tuple(sorted({row.label for row in rows}))
    season = Season(tuple(class_names))
    if games is None:
        games = {split: [] for split in SPLITS}
        for video, video_rows in by_video.items():
            splits = {row.split for row in video_rows}
            if len(splits) > 1:
                raise InputError(f"{table_path}: {video} is given several splits ({', '.join(sorted(map(str, splits)))})")
            split = splits.pop()
            if split is None:
                raise InputError(f"{table_path}: {video} has no split; add a split column (train, valid) or give "
                                 "--split train=FILE --split valid=FILE")
            if split in games:
                games[split].append(video)
    for split in SPLITS:
        missing = []
        for video in games.get(split, []):
            video = video.replace(os.sep, "/")
            stem = Path(video)
            base_path = Path(features_root, stem.parent, set_name(stem, name))
            if not OutputSet(base_path).metadata_path.is_file():
                missing.append(video)
                continue
            finished = read_outputs(base_path)
            events = [LabelledEvent(1, row.time_ms, row.label) for row in by_video.get(video, [])]
            season.add(split, LabelledHalf.from_events(str(stem.with_suffix("")), 1, finished.features,
                                                       finished.row_times, events, season.class_names),
                       feature_kind(finished), base_path)
        _report(split, len(games.get(split, [])), missing, "features")
    return season


def _report(split: str, listed: int, missing: list[str], what: str) -> None:
    if missing:
        log.warning("%d of the %d %s games or videos have no %s and are left out (the first: %s)",
                    len(missing), listed, split, what, missing[0])
