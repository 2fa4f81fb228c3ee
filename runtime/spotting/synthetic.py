"""A synthetic season in which events can only be learned from context: for trying and testing heads.

Every half is a row of 1-second slots; each slot shows one of A "atoms" (random vectors, A = the
motif length in seconds), and every row is its slot's atom plus Gaussian noise. Outside events
the atoms are drawn uniformly at random. An event of class c at slot s lays class c's motif over
slots s - A/2 ... s + A/2 - 1: its own fixed order of all A atoms (a permutation, different per
class), and the event's time is the middle of slot s. So every row, event or not, is "one atom,
uniformly chosen, plus noise": no single row says whether an event is near or which one, and only
the order of atoms over A seconds does. A per-row classifier can do no better than chance; a head
that reads the sequence can find every event to the second.

`make_season` returns the games as arrays; `per_row_logits` fits the best per-row linear
classifier (softmax regression on single rows, over the whole season, validation included) and
gives its logits, which play the part of tsf's per-window heads for `tsf-spot` without a head.
Only NumPy is needed here; writing a season to disk is `write_season`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .classes import BACKGROUND, SOCCERNET_V2_ACTIONS

PER_ROW_STEPS = 300
PER_ROW_LEARNING_RATE = 0.5
PER_ROW_L2 = 1e-4
EVENT_GAP_SECONDS = 2  # between one motif's end and the next one's start


@dataclass(frozen=True)
class SeasonShape:
    games: int = 20
    classes: int = 4
    width: int = 64
    rate: float = 1.0  # rows per second
    half_seconds: int = 1200
    events_per_class: int = 4  # per half
    motif_seconds: int = 8
    noise: float = 1.0  # standard deviation per dimension; atoms have 1
    seed: int = 0

    @property
    def class_names(self) -> tuple[str, ...]:
        return SOCCERNET_V2_ACTIONS[:self.classes]

    def check(self) -> None:
        if not 1 <= self.classes <= len(SOCCERNET_V2_ACTIONS):
            raise InputError(f"classes must be 1 to {len(SOCCERNET_V2_ACTIONS)} (SoccerNet's actions, in order)")
        if self.motif_seconds < 2 or self.motif_seconds % 2:
            raise InputError("motif_seconds must be even and at least 2")
        if math.factorial(self.motif_seconds) < self.classes:
            raise InputError(f"{self.motif_seconds}-s motifs have fewer orders than {self.classes} classes")
        if self.rate <= 0 or self.games < 1 or self.width < 1 or self.events_per_class < 0 or self.noise < 0:
            raise InputError("games, width and rate must be positive; events and noise not negative")
        if self.events_per_class and self.slots_free() < self.classes * self.events_per_class:
            raise InputError(f"{self.classes * self.events_per_class} events of {self.motif_seconds} s do not fit "
                             f"in a {self.half_seconds}-s half with {EVENT_GAP_SECONDS} s between them")

    def slots_free(self) -> int:
        count = self.classes * self.events_per_class
        return self.half_seconds - self.motif_seconds - (count - 1) * (self.motif_seconds + EVENT_GAP_SECONDS - 1)


@dataclass
class SyntheticHalf:
    rows: np.ndarray  # (N, width) float32
    row_times: np.ndarray  # (N,) seconds: row i is centred on (i + 0.5) / rate
    event_classes: np.ndarray
    event_seconds: np.ndarray


def make_motifs(rng: np.random.Generator, shape: SeasonShape):
    """(atoms (A, width), orders (classes, A)): each class's order is a distinct permutation of the atoms."""
    atoms = rng.standard_normal((shape.motif_seconds, shape.width))
    orders = []
    while len(orders) < shape.classes:
        order = rng.permutation(shape.motif_seconds)
        if not any(np.array_equal(order, o) for o in orders):
            orders.append(order)
    return atoms, np.array(orders)


def make_half(rng: np.random.Generator, shape: SeasonShape, atoms: np.ndarray, orders: np.ndarray) -> SyntheticHalf:
    motif = shape.motif_seconds
    slots = rng.integers(0, motif, size=shape.half_seconds)
    count = shape.classes * shape.events_per_class
    classes = rng.permutation(np.repeat(np.arange(shape.classes), shape.events_per_class))
    spacing = motif + EVENT_GAP_SECONDS
    free = np.sort(rng.choice(shape.slots_free(), size=count, replace=False)) if count else np.zeros(0, np.int64)
    event_slots = motif // 2 + free + np.arange(count) * (spacing - 1)
    for c, s in zip(classes, event_slots):
        slots[s - motif // 2:s + motif // 2] = orders[c]
    rows_count = int(round(shape.half_seconds * shape.rate))
    row_times = (np.arange(rows_count) + 0.5) / shape.rate
    rows = atoms[slots[np.minimum(row_times.astype(np.int64), shape.half_seconds - 1)]]
    rows = rows + shape.noise * rng.standard_normal(rows.shape)
    order = np.argsort(event_slots, kind="stable")
    return SyntheticHalf(rows.astype(np.float32), row_times, classes[order].astype(np.int64),
                         event_slots[order].astype(np.float64) + 0.5)


def make_season(shape: SeasonShape) -> list[tuple[str, list[SyntheticHalf]]]:
    """[(game name, [half 1, half 2])], the same for the same shape."""
    shape.check()
    rng = np.random.default_rng(shape.seed)
    atoms, orders = make_motifs(rng, shape)
    return [(f"synthetic/season/game {g + 1:03d}", [make_half(rng, shape, atoms, orders) for _ in (1, 2)])
            for g in range(shape.games)]


def per_row_targets(half: SyntheticHalf, classes: int) -> np.ndarray:
    """(N, classes + 1) one-hot: the class of an event within 1 s of the row, else background (last)."""
    targets = np.zeros((len(half.rows), classes + 1))
    targets[:, classes] = 1
    for c, t in zip(half.event_classes, half.event_seconds):
        near = np.abs(half.row_times - t) <= 1.0
        targets[near] = 0
        targets[near, c] = 1
    return targets


def per_row_logits(season, shape: SeasonShape) -> list[list[np.ndarray]]:
    """The logits of a softmax regression on single rows fitted to every half of the season, per half."""
    halves = [h for _, game in season for h in game]
    rows = np.concatenate([h.rows for h in halves]).astype(np.float64)
    targets = np.concatenate([per_row_targets(h, shape.classes) for h in halves])
    mean, std = rows.mean(axis=0), rows.std(axis=0) + 1e-9

    def design(x):
        return np.hstack([(x - mean) / std, np.ones((len(x), 1))])

    inputs = design(rows)
    weights = np.zeros((inputs.shape[1], shape.classes + 1))
    for _ in range(PER_ROW_STEPS):
        logits = inputs @ weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= PER_ROW_LEARNING_RATE * (inputs.T @ (p - targets) / len(inputs) + PER_ROW_L2 * weights)
    return [[(design(h.rows.astype(np.float64)) @ weights).astype(np.float32) for h in game] for _, game in season]


def heads_class_names(shape: SeasonShape) -> tuple[str, ...]:
    return shape.class_names + (BACKGROUND,)
