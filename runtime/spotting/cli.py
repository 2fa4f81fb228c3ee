"""`tsf-spot`: head outputs of whole games -> SoccerNet `results_spotting.json`, optionally scored.

A game is a folder holding the two halves' `tsf-extract --heads` output sets (`1_224p.*`,
`2_224p.*`, or `1_NAME.*`, `2_NAME.*` with `--name`), as `tsf-extract -o OUT/ ...` lays them out
when given SoccerNet's folders; they are read through runtime/outputs.py. Games are named by their path under the folder given on the command line
(SoccerNet's `league/season/game`), which is the `UrlLocal` written and the path looked up in
`--evaluate LABELS_ROOT`. click (a core dependency) parses the command line.
"""

from __future__ import annotations

import os

import click

from ... import __version__
from ..console import run_cli
from ..errors import InputError
from . import average_map
from ..outputs import find_game_folders, game_halves
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
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
@click.option("--nms-window", type=click.FloatRange(min=0), default=DEFAULT_NMS_WINDOW_S, show_default=True,
              help="Seconds; two events of one class are at least half of this apart.")
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
def cli(folders, name, half1, half2, game, output, classes_file, overwrite, labels_root, map_implementation, metrics_path,
        **spot_options):
    """Spot actions in games (folders of tsf-extract --heads outputs) and write SoccerNet results files.

    FOLDERS: game folders, or folders of games (every folder below holding a half's output set is a game,
    named by its path below FOLDER, e.g. league/season/game).
    """
    if metrics_path and not labels_root:
        raise InputError("--metrics needs --evaluate LABELS_ROOT")
    written = {}
    settings = SpotSettings(**spot_options)
    for game_name, halves, game_folder in _collect_games(folders, half1, half2, game, name):
        for missing in sorted({1, 2} - set(halves)) if folders else ():  # --half1/--half2 say what they give
            click.echo(f"warning: game {game_name!r} has no half {missing}", err=True)
        spots = []
        for half, path in sorted(halves.items()):
            spots += spot_half(load_half(path, classes_file), half, settings)
        target = os.path.join(output, game_name, RESULTS_FILE) if output else os.path.join(game_folder, RESULTS_FILE)
        write_json_atomically(results_document(game_name, spots), target, overwrite)
        written[game_name] = target
        click.echo(f"{game_name}: {len(spots)} events -> {target}")
    if labels_root:
        scores = average_map.evaluate_results(labels_root, written, implementation=map_implementation)
        for metric in average_map.TOLERANCES:
            s = scores[metric]
            click.echo(f"average-mAP {metric}: {s['a_mAP']:.4f} (visible {s['a_mAP_visible']:.4f}, "
                       f"unshown {s['a_mAP_unshown']:.4f})")
        click.echo(f"({scores['games']} games, {scores['implementation']} implementation; "
                   f"{scores['labelled_games_without_results']} labelled games had no results)")
        if metrics_path:
            write_json_atomically(scores, metrics_path, overwrite)


def main(argv=None) -> int:
    return run_cli(cli, "tsf-spot", argv)


if __name__ == "__main__":
    main()
