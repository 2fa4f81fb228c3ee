"""Action spotting from the classification heads: per-class peaks -> SoccerNet `results_spotting.json`.

`tsf-extract --heads` leaves, per video, an output set whose heads are `logits` and `event_times`
(N, classes) and whose metadata records each row's time (runtime/outputs.py reads it back). One
row is one window, centred at its recorded time. Spotting here is deliberately simple:
- confidence of class c in row i: softmax of the row's logits over all classes (background
  included, since the model was trained with cross-entropy over all of them), read for the
  action classes only: a row the model calls background has low action confidences;
- per class, greedy non-maximum suppression in seconds: take the most confident row left, emit
  it if its confidence is >= the threshold, drop every row closer than half the window to it,
  repeat. Two events of one class are thus at least window/2 apart;
- optionally (`use_event_times`) the event is placed inside its window with the `event_times`
  head; the published weights trained that head with weight 0, so it is off by default.
SoccerNet's halves are separate videos (`1_224p.mkv`, `2_224p.mkv`): a game is two output sets.
Only NumPy and the standard library are needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..files import write_files_atomically
from ..outputs import read_outputs
from .classes import BACKGROUND, read_class_names

RESULTS_FILE = "results_spotting.json"
DEFAULT_BACKGROUND = BACKGROUND
DEFAULT_NMS_WINDOW_S = 30.0  # SoccerNet's NetVLAD++ baseline default
DEFAULT_THRESHOLD = 0.0  # keep every peak: average-mAP rewards low-confidence candidates


@dataclass
class HalfHeads:
    """One video's head outputs and each row's time."""

    source: str
    logits: np.ndarray  # (N, C) raw scores
    event_times: np.ndarray  # (N, C) in [0, 1]: position inside the window
    row_times: np.ndarray  # (N,) seconds from the start of the video: each row's window centre
    window_seconds: float
    class_names: list[str]


@dataclass(frozen=True)
class Spot:
    half: int
    seconds: float
    label: str
    confidence: float

    def to_soccernet(self) -> dict:
        # Strings for position, half and confidence, as SoccerNet's own baselines write them.
        return {
            "gameTime": game_time(self.half, self.seconds),
            "label": self.label,
            "position": str(int(round(self.seconds * 1000))),
            "half": str(self.half),
            "confidence": f"{self.confidence:.6g}",
        }


def game_time(half: int, seconds: float) -> str:
    whole = int(seconds)
    return f"{half} - {whole // 60:02d}:{whole % 60:02d}"


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max subtracted so large logits cannot overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def nms_peaks(scores: np.ndarray, times: np.ndarray, window_seconds: float, threshold: float) -> list[int]:
    """Rows kept by greedy NMS, most confident first (ties: the earliest row)."""
    remaining = np.asarray(scores, dtype=np.float64).copy()
    times = np.asarray(times, dtype=np.float64)
    kept = []
    while len(remaining):
        best = int(np.argmax(remaining))
        if not remaining[best] >= threshold:  # also stops on the -inf of suppressed rows
            break
        kept.append(best)
        remaining[np.abs(times - times[best]) < window_seconds / 2] = -np.inf
    return kept


@dataclass(frozen=True)
class SpotSettings:
    """How peaks become events. The field names are tsf-spot's option names."""

    background: str = DEFAULT_BACKGROUND
    nms_window: float = DEFAULT_NMS_WINDOW_S  # seconds; two events of a class are at least half of it apart
    threshold: float = DEFAULT_THRESHOLD
    event_times: bool = False  # place events inside their window with the event_times head


def spot_half(heads: HalfHeads, half: int, settings: SpotSettings = SpotSettings()) -> list[Spot]:
    """Spotted events of one half, in time order."""
    background = settings.background
    if background not in heads.class_names:
        raise InputError(f"{heads.source}: no background class named {background!r} among the class names "
                         f"({', '.join(heads.class_names)}); pass --background NAME")
    probabilities = class_probabilities(heads.logits)
    centres = heads.row_times
    spots = []
    for c, label in enumerate(heads.class_names):
        if label == background:
            continue
        for row in nms_peaks(probabilities[:, c], centres, settings.nms_window, settings.threshold):
            seconds = centres[row]
            if settings.event_times:
                seconds = centres[row] - heads.window_seconds / 2 + float(heads.event_times[row, c]) * heads.window_seconds
            spots.append(Spot(half, max(float(seconds), 0.0), label, float(probabilities[row, c])))
    spots.sort(key=lambda s: (s.half, s.seconds, heads.class_names.index(s.label)))
    return spots


def results_document(url_local: str, spots: list[Spot]) -> dict:
    return {"UrlLocal": url_local, "predictions": [s.to_soccernet() for s in spots]}


def load_half(path: str | os.PathLike, classes_file: str | None = None) -> HalfHeads:
    """One video's heads from its output set (any of its file names, or OUT), read through
    runtime/outputs.py; `classes_file` overrides the class names the bundle recorded."""
    finished = read_outputs(path)
    if not finished.has_heads:
        raise InputError(f"{finished.base} has no heads (run tsf-extract with --heads)")
    if classes_file is not None:
        class_names, source = read_class_names(classes_file), classes_file
    else:
        class_names, source = list(finished.class_names), str(finished.base)
    if len(class_names) != finished.logits.shape[1]:
        raise InputError(f"{source} gives {len(class_names)} class names, but {finished.base} has "
                         f"{finished.logits.shape[1]} classes")
    return HalfHeads(str(finished.base), finished.logits, finished.event_times, finished.row_times,
                     finished.window_seconds, class_names)


def write_json_atomically(document: dict, path: str, overwrite: bool = False) -> None:
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")
    write_files_atomically({Path(path): (json.dumps(document, indent=2) + "\n").encode()}, overwrite=overwrite)
