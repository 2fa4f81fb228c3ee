"""`tsf-export`: turn a `.pdparams` into a verified model bundle with one command.

click parses the command line; all the work is `tsf.export.export_bundle`. Every expected failure
(bad weights, bad class list, existing output, failed parity gate) is one `error: ...` line on
stderr and exit status 2, with nothing written. `--arch` (hidden) shapes a small `--random-init`
model for tests, demos and benchmarks, e.g. `--arch depth=2,width=128,heads=2,frames=4`.
"""

from __future__ import annotations


import click

from tsf import __version__
from tsf.runtime.bundle import default_bundle_dir
from tsf.runtime.console import run_cli
from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES

from .bundle import PRECISIONS, export_bundle
from .classes import read_class_names
from .parity import format_parity

HELP = f"""Export WEIGHTS (a reference-layout .pdparams) to a model bundle: model.onnx checked
against Paddle (ONNX Runtime CPU, batch 1 and 3, relative L2 error <= 1e-4 on every output),
bundle.json, and TensorRT engines where TensorRT and a GPU are usable. Each reduced CPU precision
that runs here (OpenVINO bf16 on a CPU with native BF16, INT8 with --int8) is compared with fp32
on a generated clip and recorded; tsf-extract refuses one whose worst row has cosine < 0.999.

WEIGHTS is a pickle, and loading a pickle runs code: only export weights from a source you trust.

Without -o the bundle goes to $TSF_HOME/bundles/default (TSF_HOME defaults to
${{XDG_DATA_HOME:-~/.local/share}}/tsf; here: {default_bundle_dir()}), which is where tsf-extract
looks when it is given no --model.

Class names come from --classes FILE (one per line, in index order) or --soccernet-classes (the
weights follow SoccerNet-v2's official action order plus background at 17); otherwise they are
class_0, class_1, ... (an 18-class --random-init model gets SoccerNet-v2's names: random weights
have no class order to get wrong, and tsf-spot/tsf-plot then take its heads as they are).
"""


def _say(message: str) -> None:
    # Progress goes to stdout so that a failure is exactly one line on stderr.
    click.echo(message)


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("weights", required=False, metavar="[WEIGHTS]")
@click.option("-o", "--output", "bundle_dir", metavar="BUNDLE_DIR",
              help="Bundle directory to create (default: see above).")
@click.option("--classes", "classes_file", metavar="FILE", help="Class names, one per line, in index order.")
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
              help="Attention heads (default: width / 64, the reference's 12 for width 768).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at the destination.")
@click.option("--arch", metavar="KEY=VALUE,...", hidden=True,
              help="With --random-init: architecture overrides, e.g. depth=2,width=128,heads=2,frames=4.")
@click.option("--seed", type=int, default=0, hidden=True, help="With --random-init: the initialisation seed.")
@click.version_option(__version__, prog_name="tsf-export")
def command(weights, bundle_dir, classes_file, soccernet_classes, precision, max_batch, engine, int8,
            random_init, heads, overwrite, arch, seed):
    if classes_file and soccernet_classes:
        raise click.UsageError("--classes and --soccernet-classes exclude each other")
    if weights is None and not random_init:
        raise click.UsageError("give a WEIGHTS file (or --random-init for an untrained demo model)")
    if weights is not None and random_init:
        raise click.UsageError("--random-init takes no WEIGHTS file")
    if arch is not None and not random_init:
        raise click.UsageError("--arch only applies to --random-init")
    class_names, class_names_source = None, "class_names"
    if classes_file:
        class_names, class_names_source = read_class_names(classes_file), classes_file
    elif soccernet_classes:
        class_names, class_names_source = list(SOCCERNET_V2_CLASS_NAMES), "--soccernet-classes"

    path = export_bundle(
        bundle_dir, weights=weights, random_init=random_init, arch=arch, class_names=class_names,
        heads=heads, engine="auto" if engine is None else engine, precision=precision,
        max_batch=max_batch, overwrite=overwrite, seed=seed, log=_say, class_names_source=class_names_source,
        int8=int8,
    )

    from tsf.runtime.bundle import load_bundle

    bundle = load_bundle(path)  # export_bundle has logged the ONNX parity line already
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
