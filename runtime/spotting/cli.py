"""`tsf-spot`: head outputs of whole games -> SoccerNet `results_spotting.json`, optionally scored.

A game is a folder holding the two halves' `tsf-extract --heads` output sets (`1_224p.*`,
`2_224p.*`, or `1_NAME.*`, `2_NAME.*` with `--name`), as `tsf-extract -o OUT/ ...` lays them out
when given SoccerNet's folders; they are read through runtime/outputs.py. Games are named by their path under the folder given on the command line
(SoccerNet's `league/season/game`), which is the `UrlLocal` written and the path looked up in
`--evaluate LABELS_ROOT`. click (a core dependency) parses the command line.

With `--head HEAD`, a learned spotting head (`tsf-spot train`, head_cli.py) spots the events from
the features instead: the sets need no heads then, and torch is needed (the `torch` extra).
`tsf-spot train ...` is the training command; every other command line is tsf-spot's own.
"""

from __future__ import annotations

import os
import sys

import click
from click.core import ParameterSource

from ... import __version__
from ..console import run_cli
from ..errors import InputError
from . import average_map
from ..extras import require
from ..outputs import find_game_folders, game_halves, read_outputs
from .head_cli import train
from .spot import (DEFAULT_BACKGROUND, DEFAULT_NMS_WINDOW_S, DEFAULT_THRESHOLD, RESULTS_FILE, SpotSettings, load_half,
                   results_document, spot_half, write_json_atomically)


def _game_name(game_folder: str, root: str) -> str:
    relative = os.path.relpath(game_folder, root)
    if relative == ".":
        relative = os.path.basename(os.path.abspath(game_folder))
    return relative.replace(os.sep, "/")


def _collect_games(folders, half1, half2, game, name) -> list[tuple[str, dict, str]]:
    """[(game name, {half: output set}, default output folder)]."""
    if half1 or half2:
        if folders:
            raise InputError("give game folders or --half1/--half2, not both")
        halves = {h: p for h, p in ((1, half1), (2, half2)) if p}
        anchor = os.path.dirname(os.path.abspath(half1 or half2))
        return [(game or os.path.basename(anchor), halves, anchor)]
    if game:
        raise InputError("--game names the game given by --half1/--half2")
    if not folders:
        raise InputError("give a game folder (or a folder of games), or --half1/--half2")
    games = []
    for root in folders:
        if not os.path.isdir(root):
            raise InputError(f"folder not found: {root}")
        found = find_game_folders(root, name)
        if not found:
            named = f"1_{name} or 2_{name}" if name else "1_... or 2_..."
            raise InputError(f"no output sets named {named} under {root} (run tsf-extract with --heads)")
        games += [(_game_name(str(folder), root), game_halves(folder, name), str(folder)) for folder in found]
    names = [name for name, _, _ in games]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"several folders give the game name {repeated[0]!r}")
    return games


class SpotCommand(click.Command):
    """tsf-spot itself, except that `tsf-spot train ...` runs the train command."""

    def main(self, args=None, prog_name=None, **extra):
        args = list(sys.argv[1:] if args is None else args)
        if args[:1] == ["train"]:
            return train.main(args[1:], prog_name=f"{prog_name or 'tsf-spot'} train", **extra)
        return super().main(args, prog_name, **extra)


HEAD_ONLY_OPTIONS = ("classes_file", "background", "event_times")  # per-window heads' options: not with --head


@click.command(cls=SpotCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Train a head for --head: tsf-spot train --help.")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--head", "head_path", type=click.Path(exists=True, file_okay=False),
              help="Spot with this learned head (tsf-spot train's RUN/head) from the features, instead of the "
                   "model's per-window heads.")
@click.option("--name", help="The feature sets to read, as tsf-extract --name named them (1_NAME, 2_NAME) "
                             "[default: the one set per half in each game folder].")
@click.option("--half1", type=click.Path(dir_okay=False), help="First half's OUT (.heads.npz, .json or prefix), instead of folders.")
@click.option("--half2", type=click.Path(dir_okay=False), help="Second half's OUT, with --half1.")
@click.option("--game", help="Game name (UrlLocal) for --half1/--half2 [default: their folder's name].")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Write OUTPUT/<game>/results_spotting.json [default: into each game folder].")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False),
              help="Class names, one per line in logit order (or a JSON list) [default: from the metadata].")
@click.option("--background", default=DEFAULT_BACKGROUND, show_default=True, help="Name of the background class.")
@click.option("--nms-window", type=click.FloatRange(min=0), default=None,
              help=f"Seconds; two events of one class are at least half of this apart [default: {DEFAULT_NMS_WINDOW_S:g}; "
                   "with --head, the head's own].")
@click.option("--threshold", type=click.FloatRange(0, 1), default=DEFAULT_THRESHOLD, show_default=True,
              help="Lowest confidence kept (average-mAP rewards keeping low ones).")
@click.option("--event-times/--no-event-times", default=False, show_default=True,
              help="Place events inside their window with the event_times head (untrained in the published weights).")
@click.option("--overwrite", is_flag=True, help="Replace existing results files.")
@click.option("--evaluate", "labels_root", type=click.Path(file_okay=False),
              help="Score the results against LABELS_ROOT/<game>/Labels-v2.json (SoccerNet average-mAP).")
@click.option("--map-implementation", type=click.Choice(["auto", "builtin", "soccernet"]), default="auto", show_default=True,
              help="auto: the SoccerNet package's evaluation where installed, else tsf's re-implementation.")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False), help="Also write the scores as JSON here.")
@click.version_option(__version__, prog_name="tsf-spot")
def cli(folders, head_path, name, half1, half2, game, output, classes_file, overwrite, labels_root, map_implementation,
        metrics_path, **spot_options):
    """Spot actions in games (folders of tsf-extract --heads outputs) and write SoccerNet results files.

    FOLDERS: game folders, or folders of games (every folder below holding a half's output set is a game,
    named by its path below FOLDER, e.g. league/season/game).
    """
    if metrics_path and not labels_root:
        raise InputError("--metrics needs --evaluate LABELS_ROOT")
    written = {}
    head = _load_head(head_path) if head_path else None
    if spot_options["nms_window"] is None:
        spot_options["nms_window"] = head.nms_window_seconds if head else DEFAULT_NMS_WINDOW_S
    settings = SpotSettings(**spot_options)
    spotted_classes = head.class_names if head else None  # what the scores average over
    for game_name, halves, game_folder in _collect_games(folders, half1, half2, game, name):
        for missing in sorted({1, 2} - set(halves)) if folders else ():  # --half1/--half2 say what they give
            click.echo(f"warning: game {game_name!r} has no half {missing}", err=True)
        spots = []
        for half, path in sorted(halves.items()):
            if head:
                spots += _spot_with_head(head, path, half, settings)
            else:
                heads = load_half(path, classes_file)
                spots += spot_half(heads, half, settings)
                spotted_classes = spotted_classes or tuple(n for n in heads.class_names if n != settings.background)
        target = os.path.join(output, game_name, RESULTS_FILE) if output else os.path.join(game_folder, RESULTS_FILE)
        write_json_atomically(results_document(game_name, spots), target, overwrite)
        written[game_name] = target
        click.echo(f"{game_name}: {len(spots)} events -> {target}")
    if labels_root:
        scores = average_map.evaluate_results(labels_root, written, **({"class_names": spotted_classes} if spotted_classes else {}),
                                              implementation=map_implementation)
        for metric in average_map.TOLERANCES:
            s = scores[metric]
            click.echo(f"average-mAP {metric}: {s['a_mAP']:.4f} (visible {s['a_mAP_visible']:.4f}, "
                       f"unshown {s['a_mAP_unshown']:.4f})")
        click.echo(f"({scores['games']} games, {scores['implementation']} implementation; "
                   f"{scores['labelled_games_without_results']} labelled games had no results)")
        if metrics_path:
            write_json_atomically(scores, metrics_path, overwrite)


def _load_head(path: str):
    context = click.get_current_context()
    given = [f"--{p.replace('_file', '').replace('_', '-')}" for p in HEAD_ONLY_OPTIONS
             if context.get_parameter_source(p) == ParameterSource.COMMANDLINE]
    if given:
        raise InputError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the model's per-window "
                         "heads, not to --head")
    require("torch", "torch", "tsf-spot --head")
    require("safetensors", "torch", "tsf-spot --head")
    from .head_bundle import load_head

    return load_head(path)


def _spot_with_head(head, path, half: int, settings: SpotSettings):
    from .season import feature_kind

    finished = read_outputs(path)
    head.check_features(feature_kind(finished), str(finished.base))
    return head.spot(finished.features, finished.row_times, half, settings.nms_window, settings.threshold)


def main(argv=None) -> int:
    return run_cli(cli, "tsf-spot", argv)


if __name__ == "__main__":
    main()
