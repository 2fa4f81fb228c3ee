"""`tsf-export`: turn a `.pdparams` into a verified model bundle with one command.

click parses the command line into `ExportSettings` (which checks the rules between the options);
`write_bundle` does the work. Every expected failure (bad weights, bad class list, existing
output, failed parity gate) is one `error: ...` line on stderr and exit status 2, with nothing
written. `--arch` (hidden) shapes a small `--random-init` model for tests, demos and benchmarks,
e.g. `--arch depth=2,width=128,heads=2,frames=4`.
"""

from __future__ import annotations

import click

from tsf import __version__
from tsf.runtime.bundle import default_bundle_dir, load_bundle
from tsf.runtime.console import run_cli

from .bundle import write_bundle
from .parity import format_parity
from .settings import PRECISIONS, ExportSettings

HELP = f"""Export WEIGHTS (a reference-layout .pdparams) to a model bundle: model.onnx checked
against Paddle (ONNX Runtime CPU, batch 1 and 3, relative L2 error <= 1e-4 on every output),
bundle.json, and TensorRT engines where TensorRT and a GPU are usable. Each reduced CPU precision
that runs here (OpenVINO bf16 on a CPU with native BF16, INT8 with --int8) is compared with fp32
on a generated clip and recorded; tsf-extract refuses one whose worst row has cosine < 0.999.

WEIGHTS is a pickle, and loading a pickle runs code: only export weights from a source you trust.

Without -o the bundle goes to $TSF_HOME/bundles/default (TSF_HOME defaults to
${{XDG_DATA_HOME:-~/.local/share}}/tsf; here: {default_bundle_dir()}), which is where tsf-extract
looks when it is given no --model.

A checkpoint written by tsf-train records its architecture (the head count included) and its class
names, and they are used as recorded. For other weights (the reference's release), the
architecture comes from the tensor shapes and the head count is width / 64 (the reference's 12
for width 768) unless --heads says otherwise; a warning says so.

Class names come from --classes FILE (one per line, in index order) or --soccernet-classes (the
weights follow SoccerNet-v2's official action order plus background at 17), else from the
checkpoint's record; otherwise they are class_0, class_1, ... (an 18-class --random-init model
gets SoccerNet-v2's names: random weights have no class order to get wrong, and tsf-spot/tsf-plot
then take its heads as they are).
"""


def _say(message: str) -> None:
    # Progress goes to stdout so that a failure is exactly one line on stderr.
    click.echo(message)


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("weights", required=False, metavar="[WEIGHTS]")
@click.option("-o", "--output", metavar="BUNDLE_DIR",
              help="Bundle directory to create (default: see above).")
@click.option("--classes", metavar="FILE", help="Class names, one per line, in index order.")
@click.option("--soccernet-classes", is_flag=True,
              help="The weights' 18 classes are SoccerNet-v2's 17 actions in official order + background.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True,
              help="TensorRT engine precision (LayerNorm and Softmax stay FP32 in FP16 engines).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Largest batch the TensorRT engine accepts.")
@click.option("--engine/--no-engine", default=None,
              help="Require / skip the TensorRT engine (default: build it when TensorRT and a GPU are usable).")
@click.option("--int8", is_flag=True,
              help="Also write an INT8 model for ONNX Runtime on the CPU (tsf-extract --precision int8; "
                   "without it, tsf-extract builds one on first use). Kept only if it passes its fidelity gate.")
@click.option("--random-init", is_flag=True,
              help="No WEIGHTS: a randomly initialised reference-shaped model, for demos and tests. "
                   "The bundle says so and tsf-extract warns about it.")
@click.option("--heads", type=click.IntRange(min=1), metavar="N",
              help="Attention heads, for weights that do not record them (default: width / 64, the reference's "
                   "12 for width 768).")
@click.option("--overwrite", is_flag=True,
              help="Replace the bundle at the destination (only the files tsf wrote there; others are kept).")
@click.option("--arch", metavar="KEY=VALUE,...", hidden=True,
              help="With --random-init: architecture overrides, e.g. depth=2,width=128,heads=2,frames=4.")
@click.option("--seed", type=int, default=0, hidden=True, help="With --random-init: the initialisation seed.")
@click.version_option(__version__, prog_name="tsf-export")
def command(**options):
    options["engine"] = "auto" if options["engine"] is None else options["engine"]
    path = write_bundle(ExportSettings(**options), log=_say)

    bundle = load_bundle(path)  # write_bundle has logged the ONNX parity line already
    for entry in bundle.engines:
        figures = entry.get("parity") or {}
        line = f"engine {entry['file']}: {entry.get('precision')}, max batch {entry.get('max_batch')}"
        if all(isinstance(figures.get(name), dict) for name in ("features", "logits", "event_times")):
            reference = figures.get("reference", "ONNX Runtime")
            line += "; " + format_parity(figures, label=f"TensorRT vs {reference}")
        click.echo(line)
    if bundle.random_init:
        click.echo("warning: the weights are random (--random-init): for demos and tests, not features")
    click.echo(f"bundle {bundle.bundle_id} written to {path}")
    return 0


def main(argv=None) -> int:
    return run_cli(command, "tsf-export", argv, interrupted="interrupted; nothing was written")
