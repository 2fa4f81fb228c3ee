"""`tsf-plot`: a picture of a match from its head outputs: when the model sees which action.

One panel per half: a heatmap of every action class's confidence (softmax over the heads'
logits, as `tsf-spot` computes it) over game time, the spotted events circled on it, and the
ground truth (a SoccerNet `Labels-v2.json`) marked with crosses when given.

matplotlib draws it (optional: the `plot` extra); it is imported only when a picture is
drawn, with its object-oriented API and the Agg canvas, so no display or global pyplot state is
involved. click parses the command line.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from ... import __version__
from ..console import run_cli
from ..errors import InputError, TsfError
from ..extras import require
from ..files import write_files_atomically
from ..outputs import game_halves, half_number, set_base
from .labels import annotation_event
from .spot import (DEFAULT_BACKGROUND, DEFAULT_NMS_WINDOW_S, RESULTS_FILE, HalfHeads, SpotSettings,
                   class_probabilities, load_half, spot_half)

DEFAULT_SIZE = (1600, 900)
MAX_SIDE = 8192  # pixels: an 8192 x 8192 picture is a 256 MiB canvas while it is drawn
DEFAULT_DPI = 100
DEFAULT_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class MarkedEvent:
    half: int
    seconds: float
    label: str
    confidence: float = 1.0
    visible: bool = True


def soccernet_events(document: dict) -> list[MarkedEvent]:
    """Events of a `Labels-v2.json` (`annotations`) or a `results_spotting.json` (`predictions`):
    both are SoccerNet annotations (gameTime, position, label), read by the one labels parser."""
    entries = document.get("annotations", document.get("predictions")) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InputError("neither 'annotations' (labels) nor 'predictions' (results) in the SoccerNet file")
    events = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise InputError(f"entry {number} is not an object")
        try:
            event = annotation_event(entry)
            confidence = float(entry.get("confidence", 1.0))
        except (InputError, TypeError, ValueError) as exc:
            raise InputError(f"entry {number}: {exc}") from None
        events.append(MarkedEvent(event.half, event.seconds, event.label, confidence, event.visible))
    return events


def _read_soccernet_file(path: str) -> list[MarkedEvent]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({exc})") from None
    try:
        return soccernet_events(document)
    except InputError as exc:
        raise InputError(f"{path} is not a SoccerNet labels or results file: {exc}") from None


def render_match(halves: dict[int, HalfHeads], spotted: list[MarkedEvent], truth: list[MarkedEvent] | None = None,
                 background: str = DEFAULT_BACKGROUND, title: str = "", size=DEFAULT_SIZE, dpi: int = DEFAULT_DPI) -> bytes:
    """The PNG bytes of the match picture, exactly size[0] x size[1] pixels."""
    require("matplotlib", "plot", "tsf-plot", TsfError)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    if not halves:
        raise InputError("nothing to plot: no halves")
    for heads in halves.values():
        if len(heads.logits) == 0:
            raise InputError(f"{heads.source}: the heads have no rows (a video shorter than one window?): "
                             "nothing to plot")
    first = next(iter(halves.values()))
    names = [n for n in first.class_names if n != background]
    if len(names) == len(first.class_names):
        raise InputError(f"no background class named {background!r} among the class names; pass --background NAME")
    longest_seconds = max(h.row_times[-1] + _half_step(h.row_times) for h in halves.values())
    unit_seconds, unit_name = (60, "minutes") if longest_seconds >= 180 else (1, "seconds")

    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(halves), 1, squeeze=False, sharex=True)[:, 0]
    image = None
    for ax, (half, heads) in zip(axes, sorted(halves.items())):
        if heads.class_names != first.class_names:
            raise InputError(f"{heads.source}: class names differ from the other half's")
        action_columns = [heads.class_names.index(n) for n in names]
        probabilities = class_probabilities(heads.logits)[:, action_columns]
        centres, half_step = heads.row_times, _half_step(heads.row_times)
        start, end = (centres[0] - half_step) / unit_seconds, (centres[-1] + half_step) / unit_seconds
        image = ax.imshow(probabilities.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                          extent=(start, end, len(names) - 0.5, -0.5))
        for events, style in ((spotted, dict(marker="o", s=70, facecolors="none", edgecolors="#ff3b30", linewidths=1.6)),
                              (truth or [], dict(marker="x", s=45, c="white", linewidths=1.4))):
            mine = [e for e in events if e.half == half and e.label in names]
            if mine:
                ax.scatter([e.seconds / unit_seconds for e in mine], [names.index(e.label) for e in mine], zorder=3, **style)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel(f"half {half}")
        ax.set_xlim(0, longest_seconds / unit_seconds)
    axes[-1].set_xlabel(f"game time ({unit_name} from the start of the half's video)")
    handles = [Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="#ff3b30",
                      markeredgewidth=1.6, label="spotted")]
    if truth is not None:
        handles.append(Line2D([], [], marker="x", linestyle="none", color="black", label="ground truth"))
    axes[0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(handles), fontsize=8,
                   frameon=False)
    if title:
        axes[0].set_title(title, loc="left", fontsize=11)
    figure.colorbar(image, ax=list(axes), label="confidence (softmax, background included)", shrink=0.9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _half_step(row_times) -> float:
    """Half the time between rows: how far each row's column reaches either side of its time."""
    return float(row_times[1] - row_times[0]) / 2 if len(row_times) > 1 else 0.5


def _halves_from(path: str, classes_file: str | None, name: str | None) -> tuple[dict[int, HalfHeads], str]:
    """{half: heads} and the folder that holds them, from a game folder or one output set."""
    if os.path.isdir(path):
        found = game_halves(path, name)
        if not found:
            raise InputError(f"no half's output set (1_..., 2_...) in {path} (run tsf-extract with --heads)")
        return {half: load_half(p, classes_file) for half, p in found.items()}, path
    base = set_base(path)
    return {half_number(base.name) or 1: load_half(base, classes_file)}, str(base.parent.absolute())


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT in pixels, e.g. 1600x900") from None
    if width < 200 or height < 150:
        raise click.BadParameter("the picture must be at least 200x150 pixels")
    if max(width, height) > MAX_SIDE:
        raise click.BadParameter(f"the picture can be at most {MAX_SIDE} pixels a side")
    return width, height


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("game", type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="PNG file to write.")
@click.option("--results", type=click.Path(dir_okay=False),
              help="results_spotting.json to mark [default: the game folder's, else spotted now].")
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels-v2.json: mark the ground truth too.")
@click.option("--name", help="In a game folder, the feature sets to draw (1_NAME, 2_NAME) [default: the one per half].")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False),
              help="Class names, one per line in logit order [default: from the metadata].")
@click.option("--background", default=DEFAULT_BACKGROUND, show_default=True)
@click.option("--nms-window", type=click.FloatRange(min=0), default=DEFAULT_NMS_WINDOW_S, show_default=True,
              help="Seconds, when spotting now (no results file).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=DEFAULT_MIN_CONFIDENCE, show_default=True,
              help="Mark spotted events at or above this confidence.")
@click.option("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", show_default=True, help="WIDTHxHEIGHT in pixels.")
@click.option("--dpi", type=click.IntRange(50, 600), default=DEFAULT_DPI, show_default=True)
@click.option("--title", help="[default: the game folder's name]")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@click.version_option(__version__, prog_name="tsf-plot")
def cli(game, output, results, labels, name, classes_file, background, nms_window, min_confidence, size, dpi, title,
        overwrite):
    """Draw a match timeline: per-class confidence over time, spotted events, optionally the ground truth.

    GAME: a game folder of tsf-extract --heads output sets (1_224p.*, 2_224p.*, ...) or one set
    (OUT.npy, OUT.json, OUT.heads.npz or OUT).
    """
    size = _parse_size(size)
    target = Path(output)
    if target.suffix.lower() != ".png":
        raise click.BadParameter(f"{output}: tsf-plot draws PNG pictures; give a name ending in .png",
                                 param_hint="'-o'")
    if target.exists() and not overwrite:
        raise TsfError(f"{target} exists (use --overwrite to replace it)")
    halves, folder = _halves_from(game, classes_file, name)
    if results is None and os.path.isfile(os.path.join(folder, RESULTS_FILE)):
        results = os.path.join(folder, RESULTS_FILE)
    if results is not None:
        spotted = _read_soccernet_file(results)
    else:
        spotted = [MarkedEvent(s.half, s.seconds, s.label, s.confidence) for half, heads in halves.items()
                   for s in spot_half(heads, half, SpotSettings(background, nms_window, min_confidence))]
    spotted = [e for e in spotted if e.confidence >= min_confidence]
    truth = _read_soccernet_file(labels) if labels else None
    png = render_match(halves, spotted, truth, background, title if title is not None else os.path.basename(os.path.abspath(folder)),
                       size, dpi)
    write_files_atomically({target: png}, overwrite=overwrite)
    click.echo(f"{target}: {size[0]}x{size[1]} px, {len(halves)} half(s), {len(spotted)} spotted events"
               + (f", {len(truth)} ground-truth events" if truth is not None else ""))


def main(argv=None) -> int:
    return run_cli(cli, "tsf-plot", argv)


if __name__ == "__main__":
    main()
