"""`tsf-train`: prepare data, fine-tune, plot curves.

    tsf-train prepare OUT --soccernet ROOT [--split train=train.txt ...]   clips + lists + class map
    tsf-train prepare OUT --annotations labels.csv                           the same from a CSV/JSON
    tsf-train config > my.yaml                                              the default config
    tsf-train fit --config my.yaml [-o RUN_DIR] [--set key=value ...]       train; checkpoints each epoch
    tsf-train fit --resume -o RUN_DIR                                       go on, with the run's own settings
    tsf-train plot RUN_DIR                                                  metrics.jsonl -> PNG curves
    tsf-export RUN_DIR/best.pdparams -o BUNDLE                              then export (heads, classes: from the checkpoint)

Multi-GPU: python -m paddle.distributed.launch --gpus 0,1,2,3 "$(command -v tsf-train)" fit --config my.yaml

Dependencies: click (the command line).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import warnings

import click

from tsf import __version__

from .errors import TrainingError


def _user_errors(fn):
    """Bad input ends in one `error:` line and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ValueError as exc:
            # WeightsError lives in a module that imports Paddle; if that module was never
            # loaded, the error cannot be one, and `prepare`/`plot` stay Paddle-free.
            weights = sys.modules.get(f"{__package__}.weights")
            if weights is not None and isinstance(exc, weights.WeightsError):
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            raise

    return wrapper


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT") from None
    return width, height


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tsf-train")
def cli():
    """Fine-tune the ppTimeSformer in Paddle (SoccerNet or any labelled video)."""


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--soccernet", "soccernet_root", type=click.Path(exists=True, file_okay=False),
              help="SoccerNet-style tree: league/season/game/{1,2}_*.mkv + Labels-v2.json [+ video.ini].")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False),
              help="CSV (header video,time_seconds,label[,split]) or JSON list of the same.")
@click.option("--video-glob", default="{half}_*.mkv", show_default=True,
              help="Half videos inside a game folder; {half} is 1 or 2.")
@click.option("--split", "splits", multiple=True, metavar="NAME=FILE",
              help="Official split list (one game path per line, or a JSON list); NAME is train, valid or test.")
@click.option("--split-ratios", default="0.8,0.1,0.1", show_default=True,
              help="train,valid,test shares for a stable hash split when no split lists are given.")
@click.option("--classes", "classes_file", type=click.Path(exists=True, dir_okay=False),
              help="Action names, one per line (background is appended). Default: the 17 SoccerNet-v2 actions.")
@click.option("--skip-unknown-labels", is_flag=True, help="Skip (and count) events whose label is not a class.")
@click.option("--clip-seconds", default=10, show_default=True, type=click.IntRange(min=6))
@click.option("--clip-size", default="456x256", show_default=True, help="WIDTHxHEIGHT of the clips.")
@click.option("--workers", type=click.IntRange(min=1), help="Videos cut in parallel [default: CPU cores].")
@click.option("--codec", default="libx264", show_default=True, help="Clip encoder (falls back to mpeg4).")
@click.option("--allow-empty-splits", is_flag=True,
              help="Write the lists even when the train or valid split has no samples (fit needs both).")
@_user_errors
def prepare(out_dir, soccernet_root, annotations, video_glob, splits, split_ratios, classes_file,
            skip_unknown_labels, clip_seconds, clip_size, workers, codec, allow_empty_splits):
    """Cut 10-s clips and write train/valid/test sample lists and the class map into OUT_DIR."""
    from .labels import ClassMap
    from .prepare import left_out_lines
    from .prepare import prepare as run_prepare

    split_lists = {}
    for item in splits:
        name, _, path = item.partition("=")
        if not path:
            raise click.BadParameter(f"{item!r} is not NAME=FILE", param_hint="--split")
        split_lists[name] = path
    try:
        ratios = tuple(float(v) for v in split_ratios.split(","))
        assert len(ratios) == 3 and all(r >= 0 for r in ratios) and sum(ratios) > 0
    except (ValueError, AssertionError):
        raise click.BadParameter(f"{split_ratios!r} is not three non-negative numbers", param_hint="--split-ratios") from None
    with _cutting_progress() as progress:
        report = run_prepare(
            out_dir, soccernet_root=soccernet_root, annotations=annotations, video_glob=video_glob,
            split_lists=split_lists or None, split_ratios=ratios,
            class_map=ClassMap.load(classes_file) if classes_file else None,
            skip_unknown_labels=skip_unknown_labels, clip_seconds=clip_seconds, clip_size=_parse_size(clip_size),
            workers=workers, codec=codec, allow_empty_splits=allow_empty_splits, progress=progress)
    skipped = report["skipped_events"]
    click.echo(f"{report['clips']} clips; samples {report['samples']} "
               f"(background {report['background_samples']}); skipped events: "
               f"{sum(skipped['unknown_label'].values())} unknown label, {skipped['outside_clips']} outside "
               f"whole clips, {skipped['clip_missing']} in clips that could not be cut", err=True)
    for line in left_out_lines(report):
        click.echo(f"warning: {line}", err=True)
    click.echo(f"wrote {out_dir}/prepare.json", err=True)


@contextlib.contextmanager
def _cutting_progress():
    """A progress bar on a terminal; elsewhere (a batch job's log) one line per finished video."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = None

            def update(done, total, result):
                nonlocal bar
                bar = bar or tqdm(total=total, unit="video", desc="cutting clips", file=sys.stderr)
                bar.update()

            yield update
            if bar is not None:
                bar.close()
            return

    def line(done, total, result):
        click.echo(f"cut {done}/{total}: {result['path']} ({len(result['clips'])} clips"
                   f"{'; ' + result['error'] if result['error'] else ''})", err=True)

    yield line


@cli.command()
def config():
    """Print the default training config (YAML) to start your own from."""
    from .config import default_config_text

    click.echo(default_config_text(), nl=False)


@cli.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Run folder for checkpoints and metrics [default: the config's output_dir].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set optimizer.base_lr=0.005 (repeatable).")
@click.option("--resume", is_flag=True,
              help="Continue the run in the run folder with its own settings (its config.yaml), from its newest checkpoint.")
@click.option("--change-settings", is_flag=True,
              help="With --resume: train on with the --config/--set values that differ from the run's, "
                   "recorded in the run folder's changes.jsonl.")
@click.option("--stop-after", type=click.IntRange(min=1), help="Stop after this many epochs in this run.")
@_user_errors
def fit(config_path, output, overrides, resume, change_settings, stop_after):
    """Fine-tune; checkpoints every epoch into the run folder (-o, else the config's output_dir)."""
    if output is not None and re.match(r"[A-Za-z_][\w.]*=", output):
        raise click.UsageError(f"-o {output}: -o is the run folder; override a config key with --set KEY=VALUE")
    from .run import fit_settings
    from .train import Interrupted, fit as run_fit

    config, changes = fit_settings(config_path, overrides, output, resume, change_settings)
    try:
        summary = run_fit(config, resume=resume, changes=changes, stop_after_epochs=stop_after)
    except Interrupted as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(130)
    import paddle  # already loaded by the training run

    if paddle.distributed.get_rank() == 0:  # one summary, not one per GPU process
        click.echo(json.dumps(summary))


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Folder for the PNGs [default: RUN_DIR/plots].")
@click.option("--overwrite", is_flag=True, help="Replace existing plots.")
@_user_errors
def plot(run_dir, out_dir, overwrite):
    """Turn RUN_DIR/metrics.jsonl into PNG curves."""
    import os

    from .plot import plot_run

    for path in plot_run(os.path.join(run_dir, "metrics.jsonl"), out_dir or os.path.join(run_dir, "plots"), overwrite):
        click.echo(path)


def main(argv=None):
    # Importing Paddle warns that ccache (for compiling custom C++ ops, which we never do) is
    # missing; that line would precede every tsf-train message.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    # The shared console-script wrapper: usage errors as one `error:` line like every tsf command.
    from tsf.runtime.console import run_cli

    return run_cli(cli, "tsf-train", argv, interrupted="interrupted; finished clips are kept: run it again to resume")
