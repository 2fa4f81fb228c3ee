"""Action spotting from the classification heads: per-class peaks -> SoccerNet `results_spotting.json`.

`tsf-extract --heads` leaves, per video, `OUT.heads.npz` (`logits`, `event_times`, (N, classes))
and `OUT.json` (metadata). One row is one window; where it sits in the video depends on the
alignment recorded in the metadata: `center` row i is centred on i + 0.5 s, `reference` row i
covers [i, i + 5] s, centred on i + 2.5 s. Spotting here is deliberately simple:
- confidence of class c in row i: softmax of the row's logits over all classes (background
  included, since the model was trained with cross-entropy over all of them), read for the
  action classes only: a row the model calls background has low action confidences;
- per class, greedy non-maximum suppression in seconds: take the most confident row left, emit
  it if its confidence is >= the threshold, drop every row closer than half the window to it,
  repeat. Two events of one class are thus at least window/2 apart;
- optionally (`use_event_times`) the event is placed inside its window with the `event_times`
  head; the published weights trained that head with weight 0, so it is off by default.
SoccerNet's halves are separate videos (`1_224p.mkv`, `2_224p.mkv`): a game is two heads files.
Only NumPy and the standard library are needed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..outputs import write_files_atomically
from .classes import BACKGROUND

HEADS_SUFFIX = ".heads.npz"
RESULTS_FILE = "results_spotting.json"
DEFAULT_BACKGROUND = BACKGROUND
DEFAULT_NMS_WINDOW_S = 30.0  # SoccerNet's NetVLAD++ baseline default
DEFAULT_THRESHOLD = 0.0  # keep every peak: average-mAP rewards low-confidence candidates
DEFAULT_WINDOW_S = 5.0
_HALF_NAME = re.compile(r"^([12])(?=[_.])")


@dataclass
class HalfHeads:
    """One video's head outputs and what is needed to place its rows in time."""

    source: str
    logits: np.ndarray  # (N, C) raw scores
    event_times: np.ndarray  # (N, C) in [0, 1]: position inside the window
    alignment: str
    class_names: list[str]
    window_seconds: float = DEFAULT_WINDOW_S


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


def window_centre_times(rows: int, alignment: str, window_seconds: float = DEFAULT_WINDOW_S) -> np.ndarray:
    """Seconds from the start of the video at which each row's window is centred."""
    if alignment == "center":
        offset = 0.5
    elif alignment == "reference":
        offset = window_seconds / 2
    else:
        raise InputError(f"unknown alignment {alignment!r} (expected 'center' or 'reference')")
    return np.arange(rows, dtype=np.float64) + offset


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


def spot_half(heads: HalfHeads, half: int, background: str = DEFAULT_BACKGROUND,
              nms_window: float = DEFAULT_NMS_WINDOW_S, threshold: float = DEFAULT_THRESHOLD,
              use_event_times: bool = False) -> list[Spot]:
    """Spotted events of one half, in time order."""
    if background not in heads.class_names:
        raise InputError(f"{heads.source}: no background class named {background!r} among the class names "
                         f"({', '.join(heads.class_names)}); pass --background NAME")
    probabilities = class_probabilities(heads.logits)
    centres = window_centre_times(len(probabilities), heads.alignment, heads.window_seconds)
    spots = []
    for c, label in enumerate(heads.class_names):
        if label == background:
            continue
        for row in nms_peaks(probabilities[:, c], centres, nms_window, threshold):
            seconds = centres[row]
            if use_event_times:
                seconds = centres[row] - heads.window_seconds / 2 + float(heads.event_times[row, c]) * heads.window_seconds
            spots.append(Spot(half, max(float(seconds), 0.0), label, float(probabilities[row, c])))
    spots.sort(key=lambda s: (s.half, s.seconds, heads.class_names.index(s.label)))
    return spots


def results_document(url_local: str, spots: list[Spot]) -> dict:
    return {"UrlLocal": url_local, "predictions": [s.to_soccernet() for s in spots]}


def heads_and_metadata_paths(path: str) -> tuple[str, str]:
    """Accept OUT.heads.npz, OUT.json, OUT.npy or OUT itself; return (OUT.heads.npz, OUT.json)."""
    path = os.fspath(path)
    for suffix in (HEADS_SUFFIX, ".json", ".npy"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return path + HEADS_SUFFIX, path + ".json"


def _read_class_names_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InputError(f"cannot read class names from {path} ({exc})") from None
    if text.lstrip().startswith("["):  # a JSON list, e.g. copied from bundle.json
        try:
            return [str(n) for n in json.loads(text)]
        except ValueError as exc:
            raise InputError(f"{path} is not a JSON list of class names ({exc})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def load_half(path: str, classes_file: str | None = None) -> HalfHeads:
    """Read one video's heads and metadata written by `tsf-extract --heads`.

    Metadata keys used: `alignment` ("center" | "reference"), `class_names` (list, one per logit
    column; `--classes FILE` overrides or supplies it) and optionally `window.seconds`.
    """
    heads_path, metadata_path = heads_and_metadata_paths(path)
    if not os.path.isfile(heads_path):
        raise InputError(f"heads file not found: {heads_path} (run tsf-extract with --heads)")
    try:
        with np.load(heads_path) as npz:
            logits = np.asarray(npz["logits"], dtype=np.float32)
            event_times = np.asarray(npz["event_times"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{heads_path} is not a heads file with 'logits' and 'event_times' ({exc})") from None
    if logits.ndim != 2 or logits.shape != event_times.shape:
        raise InputError(f"{heads_path}: logits {logits.shape} and event_times {event_times.shape} "
                         "must both be (rows, classes)")
    try:
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise InputError(f"metadata file not found: {metadata_path} (it records the row alignment)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read metadata {metadata_path} ({exc})") from None
    alignment = metadata.get("alignment", metadata.get("align"))
    if alignment is None:
        raise InputError(f"{metadata_path} does not record the alignment ('alignment': 'center' or 'reference')")
    window = metadata.get("window")
    window_seconds = float(window.get("seconds", DEFAULT_WINDOW_S)) if isinstance(window, dict) else DEFAULT_WINDOW_S
    if classes_file is not None:
        class_names = _read_class_names_file(classes_file)
        source = classes_file
    else:
        class_names = metadata.get("class_names")
        if class_names is None and isinstance(metadata.get("bundle"), dict):
            class_names = metadata["bundle"].get("class_names")
        if class_names is None:
            raise InputError(f"{metadata_path} has no class names; pass --classes FILE (one name per line)")
        source = metadata_path
    class_names = [str(n) for n in class_names]
    if len(class_names) != logits.shape[1]:
        raise InputError(f"{source} gives {len(class_names)} class names, but {heads_path} has {logits.shape[1]} classes")
    return HalfHeads(heads_path, logits, event_times, str(alignment), class_names, window_seconds)


def half_number(heads_path: str) -> int | None:
    """1 or 2 from SoccerNet-style names (`1_224p.heads.npz`, `2.heads.npz`), else None."""
    match = _HALF_NAME.match(os.path.basename(heads_path))
    return int(match.group(1)) if match else None


def find_game_halves(folder: str) -> dict[int, str]:
    """{half: heads path} for the heads files directly inside a game folder."""
    halves: dict[int, str] = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(HEADS_SUFFIX):
            continue
        half = half_number(name)
        if half is None:
            raise InputError(f"{os.path.join(folder, name)}: cannot tell the half from the name "
                             "(expected 1_... or 2_..., as SoccerNet's 1_224p.mkv); use --half1/--half2")
        if half in halves:
            raise InputError(f"{folder} holds two heads files for half {half}: {os.path.basename(halves[half])} and {name}")
        halves[half] = os.path.join(folder, name)
    return halves


def find_games(root: str) -> list[str]:
    """Every folder under root (root included) that directly holds heads files, sorted."""
    return sorted(folder for folder, _, files in os.walk(root) if any(f.endswith(HEADS_SUFFIX) for f in files))


def write_json_atomically(document: dict, path: str, overwrite: bool = False) -> None:
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")
    write_files_atomically({Path(path): (json.dumps(document, indent=2) + "\n").encode()}, overwrite=overwrite)
