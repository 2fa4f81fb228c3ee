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
`write_season` lays a season out as tsf and SoccerNet do (output sets per half, Labels-v2.json per
game, split lists, the class list), each split a folder of games; `python -m tsf.runtime.spotting.synthetic FOLDER` runs it.
NumPy and click are needed.
"""

from __future__ import annotations

import math
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from ... import __version__
from ..console import run_cli
from ..errors import InputError
from ..files import write_files_atomically
from ..outputs import write_outputs
from ..sample import row_centres
from .classes import BACKGROUND, SOCCERNET_V2_ACTIONS
from .labels import LABELS_FILE

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

    @property
    def stride(self) -> Fraction:
        return 1 / Fraction(self.rate).limit_denominator(1000)

    @property
    def bundle_id(self) -> str:
        """What the rows mean (the atoms and motifs: seed, width, motif length, classes), as a feature bundle id."""
        meaning = {k: getattr(self, k) for k in ("seed", "width", "motif_seconds", "classes")}
        return "synthetic-" + hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:12]

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
    row_times: np.ndarray  # (N,) seconds: row i is centred on (i + 0.5) / rate, tsf's `center` rule
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
    rows_count = int(shape.half_seconds / shape.stride)
    row_times = np.array([float(t) for t in row_centres("center", rows_count, shape.stride, shape.stride)])
    rows = atoms[slots[np.minimum(row_times.astype(np.int64), shape.half_seconds - 1)]]
    rows = rows + shape.noise * rng.standard_normal(rows.shape)
    order = np.argsort(event_slots, kind="stable")
    return SyntheticHalf(rows.astype(np.float32), row_times, classes[order].astype(np.int64),
                         event_slots[order].astype(np.float64) + 0.5)


def make_season(shape: SeasonShape) -> list[list[SyntheticHalf]]:
    """Every game's [half 1, half 2], the same for the same shape."""
    shape.check()
    rng = np.random.default_rng(shape.seed)
    atoms, orders = make_motifs(rng, shape)
    return [[make_half(rng, shape, atoms, orders) for _ in (1, 2)] for _ in range(shape.games)]


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
    halves = [h for game in season for h in game]
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
    return [[(design(h.rows.astype(np.float64)) @ weights).astype(np.float32) for h in game] for game in season]


def heads_class_names(shape: SeasonShape) -> tuple[str, ...]:
    return shape.class_names + (BACKGROUND,)


# ---------------------------------------------------------------- on disk -----------------------

SET_NAME = "synthetic"


def labels_document(game: str, halves: list[SyntheticHalf], class_names) -> dict:
    annotations = []
    for number, half in enumerate(halves, start=1):
        for c, seconds in zip(half.event_classes, half.event_seconds):
            whole = int(seconds)
            annotations.append({"gameTime": f"{number} - {whole // 60:02d}:{whole % 60:02d}", "label": class_names[c],
                                "position": str(int(round(seconds * 1000))), "team": "not applicable",
                                "visibility": "visible"})
    return {"UrlLocal": game, "annotations": annotations}


def game_names(shape: SeasonShape, valid_games: int, test_games: int) -> list[str]:
    """`train/game 001`, ..., then `valid/...`, then `test/...`: each split is a folder of games."""
    if valid_games < 1 or test_games < 0 or valid_games + test_games >= shape.games:
        raise InputError(f"--valid and --test must leave at least one of the {shape.games} games to train on "
                         "(and --valid must be at least 1)")
    splits = ["train"] * (shape.games - valid_games - test_games) + ["valid"] * valid_games + ["test"] * test_games
    return [f"{split}/game {g + 1:03d}" for g, split in enumerate(splits)]


def write_season(folder, shape: SeasonShape, valid_games: int, test_games: int, heads: bool = True,
                 overwrite: bool = False) -> dict:
    """FOLDER/features/<split>/<game>/{1,2}_synthetic.* (output sets), FOLDER/labels/<split>/<game>/Labels-v2.json,
    FOLDER/train.txt, valid.txt and test.txt (the split lists), FOLDER/classes.txt."""
    names = game_names(shape, valid_games, test_games)
    folder = Path(folder)
    season = make_season(shape)
    logits = per_row_logits(season, shape) if heads else None
    rows_per_half = len(season[0][0].rows)
    metadata = {"alignment": "center", "rows": rows_per_half, "rows_per_second": shape.rate,
                "window": {"frames": 1, "seconds": float(shape.stride), "stride_seconds": float(shape.stride)},
                "bundle": {"id": shape.bundle_id, "class_names": list(heads_class_names(shape))},
                "synthetic": dataclasses.asdict(shape), "tsf_version": __version__}
    for g, (game, halves) in enumerate(zip(names, season)):
        for number, half in enumerate(halves, start=1):
            write_outputs(folder / "features" / game / f"{number}_{SET_NAME}.npy", features=half.rows,
                          metadata={**metadata, "row_centre_seconds": [round(float(t), 6) for t in half.row_times]},
                          logits=logits[g][number - 1] if heads else None,
                          event_times=np.full((rows_per_half, shape.classes + 1), 0.5, np.float32) if heads else None,
                          overwrite=overwrite)
    files = {folder / "labels" / game / LABELS_FILE:
             json.dumps(labels_document(game, halves, shape.class_names), indent=1).encode()
             for game, halves in zip(names, season)}
    for split in ("train", "valid", "test"):
        files[folder / f"{split}.txt"] = "".join(n + "\n" for n in names if n.startswith(split + "/")).encode()
    files[folder / "classes.txt"] = "".join(c + "\n" for c in shape.class_names).encode()
    write_files_atomically(files, overwrite=overwrite)
    return {"games": len(names), "train": len(names) - valid_games - test_games, "valid": valid_games,
            "test": test_games, "rows_per_half": rows_per_half}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--games", type=click.IntRange(min=2), default=SeasonShape.games, show_default=True)
@click.option("--valid", "valid_games", type=click.IntRange(min=1), default=4, show_default=True,
              help="Games of the validation split (after the training games).")
@click.option("--test", "test_games", type=click.IntRange(min=0), default=4, show_default=True,
              help="Games of the test split (last).")
@click.option("--classes", type=click.IntRange(1, len(SOCCERNET_V2_ACTIONS)), default=SeasonShape.classes,
              show_default=True, help="The first CLASSES of SoccerNet's actions.")
@click.option("--width", type=click.IntRange(min=1), default=SeasonShape.width, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=SeasonShape.rate, show_default=True,
              help="Rows per second.")
@click.option("--half-minutes", type=click.FloatRange(min=1), default=SeasonShape.half_seconds / 60, show_default=True)
@click.option("--events-per-class", type=click.IntRange(min=0), default=SeasonShape.events_per_class, show_default=True,
              help="Per half.")
@click.option("--motif-seconds", type=click.IntRange(min=2), default=SeasonShape.motif_seconds, show_default=True)
@click.option("--noise", type=click.FloatRange(min=0), default=SeasonShape.noise, show_default=True)
@click.option("--seed", type=int, default=SeasonShape.seed, show_default=True)
@click.option("--heads/--no-heads", default=True, show_default=True,
              help="Also write per-row heads (a softmax regression on single rows) for tsf-spot without a head.")
@click.option("--overwrite", is_flag=True)
@click.version_option(__version__, prog_name="tsf synthetic season")
def cli(folder, games, valid_games, test_games, classes, width, rate, half_minutes, events_per_class, motif_seconds, noise, seed,
        heads, overwrite):
    """Write a synthetic season to FOLDER: events visible only as patterns over several seconds."""
    shape = SeasonShape(games, classes, width, rate, int(round(half_minutes * 60)), events_per_class, motif_seconds,
                        noise, seed)
    written = write_season(folder, shape, valid_games, test_games, heads, overwrite)
    click.echo(f"{written['games']} games ({written['train']} train, {written['valid']} valid, {written['test']} test), "
               f"{written['rows_per_half']} rows per half -> {folder}")


def main(argv=None) -> int:
    return run_cli(cli, "python -m tsf.runtime.spotting.synthetic", argv)


if __name__ == "__main__":
    main()
