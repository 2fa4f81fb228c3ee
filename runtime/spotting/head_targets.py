"""What a learned spotting head is trained towards, from events in seconds and rows placed in time.

Rows are features as tsf writes them: row i describes the window centred on `row_times[i]`
seconds. Events are (class index, seconds) on the same clock. Two kinds of targets
(docs/spotting.md, "The two heads"):
- NetVLAD++ (SoccerNet's baseline): the half is cut into non-overlapping windows of W rows from
  row 0 (`clip_starts`, the last window padded by repeating the last row); a window's target is
  multi-hot over [background, class 0, class 1, ...], background set only when no event's row
  falls inside it. An event's row is the row nearest to it in time.
- dense anchors (spivak): every row and class gets a confidence target, 1 when an event of that
  class lies within `confidence_radius` seconds of the row, and a displacement target, the
  signed distance from the row to the nearest event of that class divided by
  `displacement_radius`, defined only where that distance is at most `displacement_radius`.
  Positive and negative confidence targets are weighted per class so that positives carry
  `positive_share` of the loss (spivak's weighting).
Only NumPy is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import LabelledEvent

NETVLAD = "netvlad++"
DENSE = "dense"
KINDS = (DENSE, NETVLAD)  # the heads there are; the first is tsf-spot train's default


def event_rows(row_times: np.ndarray, seconds) -> np.ndarray:
    """The row nearest in time to each event (ties: the earlier row)."""
    row_times = np.asarray(row_times, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.float64)
    after = np.clip(np.searchsorted(row_times, seconds, side="left"), 1, max(len(row_times) - 1, 1))
    before = after - 1
    if len(row_times) == 1:
        return np.zeros(len(seconds), dtype=np.int64)
    closer_after = np.abs(row_times[after] - seconds) < np.abs(seconds - row_times[before])
    return np.where(closer_after, after, before).astype(np.int64)


def clip_starts(rows: int, window_rows: int) -> np.ndarray:
    """First row of each training window: 0, W, 2W, ... below rows - 1 (SoccerNet's windows)."""
    return np.arange(0, rows - 1, window_rows, dtype=np.int64)


def window_rows_at(starts: np.ndarray, window_rows: int, rows: int) -> np.ndarray:
    """(windows, W) row indices from each start, clamped to the half (edge rows repeat)."""
    return np.clip(np.asarray(starts)[:, None] + np.arange(window_rows)[None, :], 0, rows - 1)


def centred_window_rows(rows: int, window_rows: int) -> np.ndarray:
    """(rows, W): the window for row t covers rows t - W//2 ... t - W//2 + W - 1, clamped."""
    return window_rows_at(np.arange(rows) - window_rows // 2, window_rows, rows)


def netvlad_clip_targets(rows: int, window_rows: int, rows_of_events, classes_of_events,
                         num_classes: int) -> np.ndarray:
    """(windows, 1 + classes) float32 targets of the non-overlapping windows; column 0 is background."""
    windows = len(clip_starts(rows, window_rows))
    targets = np.zeros((windows, num_classes + 1), dtype=np.float32)
    targets[:, 0] = 1
    for row, c in zip(np.asarray(rows_of_events, dtype=np.int64), np.asarray(classes_of_events, dtype=np.int64)):
        window = row // window_rows
        if window < windows:  # an event past the last window's start is out of view, as in SoccerNet
            targets[window, 0] = 0
            targets[window, c + 1] = 1
    return targets


def dense_targets(row_times: np.ndarray, event_seconds, event_classes, num_classes: int,
                  confidence_radius: float, displacement_radius: float):
    """(confidence, displacement, displacement_mask), each (rows, classes).

    confidence: 1.0 within confidence_radius seconds of an event of the class, else 0.0.
    displacement: (event time - row time) / displacement_radius for the nearest event of the
    class (ties: the earlier event), where that event is at most displacement_radius away; 0 and
    masked out elsewhere.
    """
    row_times = np.asarray(row_times, dtype=np.float64)
    rows = len(row_times)
    confidence = np.zeros((rows, num_classes), dtype=np.float32)
    displacement = np.zeros((rows, num_classes), dtype=np.float32)
    mask = np.zeros((rows, num_classes), dtype=bool)
    nearest = np.full((rows, num_classes), np.inf)
    order = np.argsort(np.asarray(event_seconds, dtype=np.float64), kind="stable")
    for k in order:
        t, c = float(event_seconds[k]), int(event_classes[k])
        offset = t - row_times
        distance = np.abs(offset)
        confidence[distance <= confidence_radius, c] = 1.0
        closer = (distance <= displacement_radius) & (distance < nearest[:, c])
        nearest[closer, c] = distance[closer]
        displacement[closer, c] = offset[closer] / displacement_radius
        mask[closer, c] = True
    return confidence, displacement, mask


def positive_negative_weights(positives: np.ndarray, negatives: np.ndarray, positive_share: float):
    """Per class (weight of a positive target, weight of a negative one): with these, positives carry
    `positive_share` of the summed weight. A class without positives (or negatives) gets weight 0 there."""
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    total = positives + negatives
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.where(positives > 0, total * positive_share / positives, 0.0)
        negative = np.where(negatives > 0, total * (1 - positive_share) / negatives, 0.0)
    return positive.astype(np.float32), negative.astype(np.float32)


@dataclass
class LabelledHalf:
    """One half (or one video) to train or validate on: its rows, their times and its events.

    `events` are this half's events of the head's classes: (class index, seconds), in time order;
    `visible` says which were shown on screen (SoccerNet's unshown events still count in its metric).
    """

    game: str
    half: int
    rows: np.ndarray  # (N, width) float32
    row_times: np.ndarray  # (N,) seconds
    event_classes: np.ndarray  # (E,) int
    event_seconds: np.ndarray  # (E,) float
    event_visible: np.ndarray  # (E,) bool

    @classmethod
    def from_events(cls, game: str, half: int, rows, row_times, events, class_names) -> "LabelledHalf":
        """`events`: LabelledEvents of the game; those of this half and of a known class are kept."""
        index = {name: c for c, name in enumerate(class_names)}
        kept = sorted((e.position_ms, index[e.label], e.visible) for e in events
                      if e.half == half and e.label in index)
        return cls(game, half, np.asarray(rows, dtype=np.float32), np.asarray(row_times, dtype=np.float64),
                   np.array([c for _, c, _ in kept], dtype=np.int64),
                   np.array([ms / 1000 for ms, _, _ in kept], dtype=np.float64),
                   np.array([v for _, _, v in kept], dtype=bool))

    def labelled_events(self, class_names) -> list[LabelledEvent]:
        return [LabelledEvent(self.half, int(round(s * 1000)), class_names[c], bool(v))
                for c, s, v in zip(self.event_classes, self.event_seconds, self.event_visible)]
