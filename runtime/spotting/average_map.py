"""SoccerNet-v2 action-spotting average-mAP, tight and loose, exactly as the SoccerNet package computes it.

The published metric is defined by its code (`SoccerNet.Evaluation.ActionSpotting`, package
0.2.0), whose details decide the numbers, so this module follows that code rather than the paper:
- Events and predictions are binned to frames at 2 per second (`int(2 * position_ms / 1000)`),
  14,400 frames per half; two predictions of one class in the same frame collapse into the last
  one written, and predictions with a negative confidence are ignored.
- A tolerance δ (seconds) matches a prediction to a ground-truth event when they are at most
  δ/2 apart (δ·2 frames wide in all). Ground-truth events are taken in time order; each takes
  the unmatched prediction of highest confidence inside its window (ties: the earliest).
- Precision and recall are read at 200 confidence thresholds `linspace(0, 1, 200)` (a prediction
  counts when its confidence is >= the threshold); AP is the 11-point interpolated AP.
- mAP is the mean over all classes, including classes without any ground truth (their AP is 0).
  Average-mAP is the trapezoid area under mAP(δ) divided by the δ range in steps: tight δ = 1..5 s,
  loose δ = 5..60 s in steps of 5.
- "visible"/"unshown" variants keep only predictions whose nearest ground truth (per class, split
  at midpoints) is a visible or an unshown event; the package scales the unshown figure by 17/13
  (13 of the 17 SoccerNet-v2 classes have unshown events), and so do we.

The SoccerNet package itself (with boto3, huggingface_hub, scikit-video... as dependencies) is
optional: `evaluate(..., implementation="soccernet")` runs its `evaluate()` on the same games, and
the tests check that both agree. Only NumPy is needed here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .classes import SOCCERNET_V2_ACTIONS
from .labels import LABELS_FILE, labels_events, read_labels

TOLERANCES = {
    "tight": tuple(range(1, 6)),
    "loose": tuple(range(5, 61, 5)),
}
FRAMES_PER_SECOND = 2
FRAMES_PER_HALF = 120 * 60 * FRAMES_PER_SECOND
THRESHOLDS = np.linspace(0, 1, 200)
UNSHOWN_SCALE = 17 / 13
RESULTS_FILE = "results_spotting.json"


@dataclass
class HalfVectors:
    """One half of one game as frame x class arrays, the package's representation.

    targets: 1 visible event, -1 unshown event, 0 none; detections: confidence, -1 none;
    closest: per frame, the visibility (1/-1) of the nearest ground-truth event of that class.
    """

    targets: np.ndarray
    detections: np.ndarray
    closest: np.ndarray


@dataclass
class MapResult:
    average_map: float
    average_map_per_class: list[float]
    average_map_visible: float
    average_map_unshown: float
    map_per_tolerance: dict[int, float] = field(default_factory=dict)

    def to_dict(self, class_names) -> dict:
        return {
            "a_mAP": self.average_map,
            "a_mAP_visible": self.average_map_visible,
            "a_mAP_unshown": self.average_map_unshown,
            "a_mAP_per_class": dict(zip(class_names, self.average_map_per_class)),
            "mAP_per_tolerance": {str(k): v for k, v in self.map_per_tolerance.items()},
        }


def position_frame(position_ms) -> int:
    return min(int(FRAMES_PER_SECOND * (int(position_ms) / 1000)), FRAMES_PER_HALF - 1)


def labels_to_targets(labels: dict, class_names) -> tuple[np.ndarray, np.ndarray]:
    """`Labels-v2.json` content -> (half 1, half 2) target arrays; unknown labels are skipped."""
    return events_to_targets(labels_events(labels), class_names)


def events_to_targets(events, class_names) -> tuple[np.ndarray, np.ndarray]:
    """`LabelledEvent`s -> (half 1, half 2) target arrays: 1 visible, -1 unshown; unknown labels skipped."""
    class_index = {name: i for i, name in enumerate(class_names)}
    halves = (np.zeros((FRAMES_PER_HALF, len(class_names))), np.zeros((FRAMES_PER_HALF, len(class_names))))
    for event in events:
        if event.label in class_index and event.half in (1, 2):
            halves[event.half - 1][position_frame(event.position_ms), class_index[event.label]] = 1 if event.visible else -1
    return halves


def predictions_to_detections(predictions: dict, class_names) -> tuple[np.ndarray, np.ndarray]:
    """`results_spotting.json` content -> (half 1, half 2) detection arrays."""
    class_index = {name: i for i, name in enumerate(class_names)}
    halves = (np.full((FRAMES_PER_HALF, len(class_names)), -1.0), np.full((FRAMES_PER_HALF, len(class_names)), -1.0))
    for prediction in predictions["predictions"]:
        if prediction["label"] not in class_index:
            continue
        half = int(prediction["half"])
        if half in (1, 2):
            frame = position_frame(prediction["position"])
            halves[half - 1][frame, class_index[prediction["label"]]] = float(prediction["confidence"])
    return halves


def closest_event_visibility(targets: np.ndarray) -> np.ndarray:
    """Per class, each frame takes the value of the nearest event, split at (floored) midpoints."""
    closest = np.full(targets.shape, -1.0)
    frames = targets.shape[0]
    for c in range(targets.shape[1]):
        events = np.flatnonzero(targets[:, c])
        if len(events) == 0:
            continue
        bounds = [-events[0], *events.tolist(), 2 * frames]
        for k in range(1, len(bounds) - 1):
            start = max(0, (bounds[k - 1] + bounds[k]) // 2)
            stop = min(frames, (bounds[k] + bounds[k + 1]) // 2)
            closest[start:stop, c] = targets[bounds[k], c]
    return closest


def match_class(target: np.ndarray, detection: np.ndarray, closest: np.ndarray, window_frames: float):
    """One class of one half: (confidence, matched 0/1, closest visibility) per prediction.

    Events in time order each take the highest-confidence unmatched prediction within
    window_frames/2 frames (the earliest on ties).
    """
    events = np.flatnonzero(target != 0)
    predicted = np.flatnonzero(detection >= 0)
    scores = detection[predicted]
    matched = np.zeros(len(predicted))
    for event in events:
        candidates = np.flatnonzero((np.abs(predicted - event) <= window_frames / 2) & (matched == 0))
        if len(candidates):
            matched[candidates[np.argmax(scores[candidates])]] = 1
    return scores, matched, closest[predicted]


def _precision_recall(scores, matched, ground_truth_count):
    """Precision and recall at every threshold: counts of predictions with confidence >= threshold."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    matched_from = np.concatenate([np.cumsum(matched[order][::-1])[::-1], [0.0]])
    first = np.searchsorted(sorted_scores, THRESHOLDS, side="left")
    selected = len(scores) - first
    true_positives = matched_from[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positives / selected)
        recall = np.nan_to_num(true_positives / ground_truth_count)
    return precision, recall


def eleven_point_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    ap = 0.0
    for level in np.arange(11) / 10:
        reached = precision[recall >= level]
        ap += reached.max() if len(reached) else 0.0
    return ap / 11


def map_at_tolerance(halves: list[HalfVectors], tolerance_s: float):
    """(mAP, per-class AP, visible mAP, unshown mAP) at one tolerance, over all halves."""
    window_frames = tolerance_s * FRAMES_PER_SECOND
    num_classes = halves[0].targets.shape[1]
    ap_all, ap_visible, ap_unshown = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for c in range(num_classes):
        parts = [match_class(h.targets[:, c], h.detections[:, c], h.closest[:, c], window_frames) for h in halves]
        scores = np.concatenate([p[0] for p in parts])
        matched = np.concatenate([p[1] for p in parts])
        closest = np.concatenate([p[2] for p in parts])
        visible_events = sum(int(np.sum(h.targets[:, c] > 0)) for h in halves)
        unshown_events = sum(int(np.sum(h.targets[:, c] < 0)) for h in halves)
        ap_all[c] = eleven_point_ap(*_precision_recall(scores, matched, visible_events + unshown_events))
        # The variants drop predictions (not events) whose nearest event has the other visibility.
        visible_scores = np.where(closest > 0.5, scores, -1.0)
        unshown_scores = np.where(closest < -0.5, scores, -1.0)
        ap_visible[c] = eleven_point_ap(*_precision_recall(visible_scores, matched, visible_events))
        ap_unshown[c] = eleven_point_ap(*_precision_recall(unshown_scores, matched, unshown_events))
    return np.mean(ap_all), ap_all, np.mean(ap_visible), np.mean(ap_unshown)


def _trapezoid_mean(values) -> float:
    integral = 0.0
    for a, b in zip(values[:-1], values[1:]):
        integral += (a + b) / 2
    return integral / (len(values) - 1)


def average_map(halves: list[HalfVectors], tolerances) -> MapResult:
    """Average-mAP over the tolerances (seconds); one tolerance gives plain mAP at it."""
    if not halves:
        raise InputError("no games to evaluate")
    per_tolerance = [map_at_tolerance(halves, t) for t in tolerances]
    maps = [p[0] for p in per_tolerance]
    if len(tolerances) == 1:
        m, per_class, visible, unshown = per_tolerance[0]
        return MapResult(float(m), per_class.tolist(), float(visible), float(unshown), {tolerances[0]: float(m)})
    per_class = [_trapezoid_mean([p[1][c] for p in per_tolerance]) for c in range(len(per_tolerance[0][1]))]
    return MapResult(
        average_map=float(_trapezoid_mean(maps)),
        average_map_per_class=[float(v) for v in per_class],
        average_map_visible=float(_trapezoid_mean([p[2] for p in per_tolerance])),
        average_map_unshown=float(_trapezoid_mean([p[3] for p in per_tolerance]) * UNSHOWN_SCALE),
        map_per_tolerance={t: float(m) for t, m in zip(tolerances, maps)},
    )


def game_halves(labels: dict, predictions: dict, class_names) -> list[HalfVectors]:
    return half_vectors(labels_to_targets(labels, class_names), predictions_to_detections(predictions, class_names))


def half_vectors(targets, detections) -> list[HalfVectors]:
    """(half 1, half 2) targets and detections -> the two halves' vectors."""
    return [HalfVectors(t, d, closest_event_visibility(t)) for t, d in zip(targets, detections)]


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({exc})") from None


def find_predicted_games(predictions_root: str) -> list[str]:
    """Game paths (relative, '/'-separated) under predictions_root holding a results file."""
    games = []
    for folder, _, files in os.walk(predictions_root):
        if RESULTS_FILE in files:
            games.append(os.path.relpath(folder, predictions_root).replace(os.sep, "/"))
    return sorted(games)


def soccernet_package_available() -> bool:
    try:
        import SoccerNet.Evaluation.ActionSpotting  # noqa: F401  (optional; heavy dependencies)
    except ImportError:
        return False
    return True


def evaluate(labels_root, predictions_root, games=None, class_names=SOCCERNET_V2_ACTIONS,
             implementation: str = "auto") -> dict:
    """Tight and loose average-mAP of `predictions_root/<game>/results_spotting.json` against
    `labels_root/<game>/Labels-v2.json`, over `games` (default: every game with predictions)."""
    predictions_root = os.fspath(predictions_root)
    games = sorted(games) if games is not None else find_predicted_games(predictions_root)
    if not games:
        raise InputError(f"no {RESULTS_FILE} under {predictions_root}")
    results = {game: os.path.join(predictions_root, game, RESULTS_FILE) for game in games}
    return evaluate_results(labels_root, results, class_names, implementation)


def evaluate_results(labels_root, results: dict[str, str], class_names=SOCCERNET_V2_ACTIONS,
                     implementation: str = "auto") -> dict:
    """Tight and loose average-mAP of {game: results file} against `labels_root/<game>/Labels-v2.json`.

    implementation: "builtin" (this module), "soccernet" (the SoccerNet package), or "auto" (the
    package where it is installed). Labelled games without results are counted, not scored.
    """
    labels_root = os.fspath(labels_root)
    if not os.path.isdir(labels_root):
        raise InputError(f"labels folder not found: {labels_root}")
    if not results:
        raise InputError("no games to evaluate")
    games = sorted(results)
    labels = {game: os.path.join(labels_root, game, LABELS_FILE) for game in games}
    for game in games:
        if not os.path.isfile(labels[game]):
            raise InputError(f"no {LABELS_FILE} for game {game!r} under {labels_root}")
        if not os.path.isfile(results[game]):
            raise InputError(f"results file not found: {results[game]}")
    labelled = {os.path.relpath(folder, labels_root).replace(os.sep, "/")
                for folder, _, files in os.walk(labels_root) if LABELS_FILE in files}
    if implementation == "auto":
        implementation = "soccernet" if soccernet_package_available() else "builtin"
    if implementation == "soccernet":
        scores = _evaluate_with_soccernet(labels, results, games, class_names)
    elif implementation == "builtin":
        halves = []
        for game in games:
            halves += half_vectors(events_to_targets(read_labels(labels[game]), class_names),
                                   predictions_to_detections(_read_json(results[game]), class_names))
        scores = {name: average_map(halves, tolerances).to_dict(class_names)
                  for name, tolerances in TOLERANCES.items()}
    else:
        raise InputError(f"unknown mAP implementation {implementation!r} (builtin, soccernet or auto)")
    return {
        "implementation": implementation,
        "games": len(games),
        "labelled_games_without_results": len(labelled - set(games)),
        **scores,
    }


def _evaluate_with_soccernet(labels: dict[str, str], results: dict[str, str], games, class_names) -> dict:
    try:
        from SoccerNet.Evaluation.ActionSpotting import evaluate as soccernet_evaluate
    except ImportError as exc:
        raise InputError(f"the SoccerNet package is not installed ({exc}); use --map-implementation builtin") from None
    # Its evaluate() walks a labels folder for every .json (dataset=None): give it a folder of
    # links holding exactly the games asked for, so other JSON files and other games stay out.
    with tempfile.TemporaryDirectory(prefix="tsf-map-") as scratch:
        for game in games:
            for files, name, side in ((labels, LABELS_FILE, "labels"), (results, RESULTS_FILE, "predictions")):
                os.makedirs(os.path.join(scratch, side, game), exist_ok=True)
                os.symlink(os.path.abspath(files[game]), os.path.join(scratch, side, game, name))
        scores = {}
        for metric in TOLERANCES:
            # It draws tqdm progress bars on stderr: keep the CLI's output readable.
            with contextlib.redirect_stderr(io.StringIO()):
                result = soccernet_evaluate(
                    os.path.join(scratch, "labels"), os.path.join(scratch, "predictions"),
                    prediction_file=RESULTS_FILE, label_files=LABELS_FILE, split=None, version=2,
                    framerate=FRAMES_PER_SECOND, metric=metric, dataset=None,
                    EVENT_DICTIONARY={name: i for i, name in enumerate(class_names)})
            scores[metric] = {
                "a_mAP": float(result["a_mAP"]),
                "a_mAP_visible": float(result["a_mAP_visible"]),
                "a_mAP_unshown": float(result["a_mAP_unshown"]),
                "a_mAP_per_class": dict(zip(class_names, map(float, result["a_mAP_per_class"]))),
            }
    return scores
