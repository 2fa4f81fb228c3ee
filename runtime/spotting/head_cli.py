"""`tsf-spot train`: train a learned spotting head on tsf features (head_train.py does the work).

Needs torch and safetensors (the `torch` extra); imported only when the command runs, so that
`tsf-spot` without a head needs NumPy alone. click parses the command line.
"""

from __future__ import annotations

import os

import click

from ..console import setup_logging
from ..errors import InputError
from ..extras import require
from .head_targets import KINDS


def _pairs(values, what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {value!r}: write NAME=VALUE")
        if key.strip() in pairs:
            raise InputError(f"{what} {key.strip()} is given twice")
        pairs[key.strip()] = text.strip()
    return pairs


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("features", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True),
              help="SoccerNet's labels (a folder: LABELS/<game>/Labels-v2.json) or a label table "
                   "(video,time_seconds,label[,split] CSV, or a JSON list).")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="The run folder: run.json, checkpoint.pt, metrics.jsonl and head/ (the best head bundle).")
@click.option("--split", "split_lists", multiple=True, metavar="SPLIT=FILE",
              help="train=FILE and valid=FILE: one game (or table video) per line; FILE 'soccernet' takes "
                   "SoccerNet's official list. Without them, a table's split column.")
@click.option("--architecture", type=click.Choice(KINDS), default=KINDS[0], show_default=True,
              help="dense: dense anchors, confidence + displacement (spivak, compact); netvlad++: SoccerNet's baseline.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Change one of the head's settings (docs/spotting.md lists them), e.g. --set max_epochs=200.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False),
              help="The head's classes, one per line [default: SoccerNet's 17 actions for Labels-v2.json, "
                   "the table's labels for a table].")
@click.option("--name", help="The feature sets to read, as tsf-extract --name named them [default: the one per half].")
@click.option("--seed", type=int, default=0, show_default=True, help="Initial weights and data order.")
@click.option("--validate-every", type=click.IntRange(min=1), default=5, show_default=True,
              help="Epochs between scoring the validation games (tight average-mAP).")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Validations without a better score before training stops.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU 0 when there is one), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch [default: torch's, one per core]; "
                                                            "1 on a machine that others load.")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its last epoch.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings only; no progress bar.")
def train(features, labels, run_dir, split_lists, architecture, settings, classes_file, name, seed, validate_every,
          patience, device, threads, resume, quiet):
    """Train a spotting head on tsf features: FEATURES holds the output sets (FEATURES/<game>/1_NAME.*
    and 2_NAME.* for SoccerNet's games; FEATURES/<video path without its suffix> for a table).

    The best head by validation tight average-mAP is RUN/head; spot with it: tsf-spot FEATURES --head RUN/head.
    """
    setup_logging(quiet)
    torch = require("torch", "torch", "tsf-spot train")
    require("safetensors", "torch", "tsf-spot train")
    if threads:
        torch.set_num_threads(threads)
    from .head_train import Trainer, TrainSettings
    from .season import head_class_names, soccernet_season, split_games, table_season

    games = split_games(_pairs(split_lists, "--split")) if split_lists else None
    class_names = head_class_names(classes_file) if classes_file else None
    if os.path.isdir(labels):
        if games is None:
            raise InputError("SoccerNet labels need --split train=FILE --split valid=FILE (or =soccernet)")
        season = soccernet_season(features, labels, games, **({"class_names": class_names} if class_names else {}),
                                  name=name)
    else:
        season = table_season(features, labels, class_names, games, name)
    train_settings = TrainSettings(architecture, tuple(_pairs(settings, "--set").items()), seed, validate_every,
                                   patience, device)
    trainer = Trainer(run_dir, train_settings, season.class_names, season.features, season.halves["train"],
                      season.halves["valid"], progress=not quiet)
    summary = trainer.run(resume)
    click.echo(f"best validation tight average-mAP {summary['valid_tight_average_map']:.4f} at epoch "
               f"{summary['best_epoch']} of {summary['epochs']} -> {summary['head']}")
