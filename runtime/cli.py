"""`tsf-extract`: videos -> one feature row per second, with the lean, Paddle-free runtime.

click parses the command line; the options that shape the features are `ExtractSettings` fields
of the same names, and an `Extractor` does the work. This module only chooses which videos run
where (all, a Slurm share, or on Ray) and reports. Every expected failure is one `error: ...` line
(exit 2), warnings are `warning: ...` lines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from .. import __version__
from .backends import BACKEND_CHOICES, MAX_THREADS, PRECISION_CHOICES
from .bundle import default_bundle_dir
from .console import run_cli, setup_logging
from .errors import TsfError
from .extractor import MAX_RATE, ExtractSettings, Extractor
from .jobs import JobLoop
from .outputs import FORMATS, OutputSet, valid_set_name
from .pipeline import DECODER_CHOICES
from .sample import ALIGNMENTS
from .scale.inputs import expand_jobs
from .scale.ray_pool import run_on_ray
from .scale.report import RunReport
from .scale.slurm import SLURM_ARRAY_MAX_DEFAULT, parse_shard, select_share, slurm_script

log = logging.getLogger("tsf")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("videos", nargs=-1, type=click.Path(path_type=Path))
# -o stays text: a Path would drop the trailing slash that marks a directory to create.
@click.option("-o", "--output", type=click.Path(),
              help="Features file (one video) or directory (an existing one, one ending with /, or several "
                   "videos; outputs mirror the inputs' relative paths). Default: beside each video.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), help="Text file with one video path per line.")
@click.option("--model", type=click.Path(path_type=Path),
              help=f"Model bundle directory from tsf-export. Default: {default_bundle_dir()}")
@click.option("--name", callback=lambda ctx, param, value: valid_set_name(value) if value is not None else None,
              help="Name the feature files SoccerNet's way: a half 1_224p.mkv gives 1_NAME.npy (its loaders then "
                   "read features=\"NAME.npy\"), other videos STEM_NAME.npy; several feature sets of one game "
                   "sit side by side. Default: the video's own name (1_224p.npy).")
@click.option("--align", type=click.Choice(ALIGNMENTS), default="center", show_default=True,
              help="center: one row per started 1/rate s, row i centred on (i + 0.5)/rate s. reference: the "
                   "reference's left-aligned rows and frame indices (int(L - 5) rows at one per second).")
@click.option("--rate", type=click.IntRange(1, MAX_RATE),
              help="Rows per second, each a real window through the model: 2 is SoccerNet's rate and twice the "
                   "model work of 1 (README, 'How long it takes'). [default: the bundle's, 1]")
@click.option("--batch-size", type=click.IntRange(min=1), help="Windows per inference batch [default: per engine]")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="The inference engine. auto: the fastest that runs here (on a GPU: the bundle's TensorRT "
                   "engine if it fits, else PyTorch, else ONNX Runtime CUDA; on the CPU: OpenVINO, else ONNX "
                   "Runtime).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
              help="cuda[:N] fails rather than fall back to the CPU; cpu never touches a GPU.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Arithmetic of the engine. auto: the engine's best that keeps the features faithful (on the "
                   "CPU: bf16 where the CPU has it natively and the bundle's fidelity gate passed, else fp32). "
                   "bf16 and int8 (opt-in) run on the CPU only after their gate: worst row cosine >= 0.999 "
                   "against fp32 (docs/precision.md).")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS),
              help="CPU threads for inference [default: SLURM_CPUS_PER_TASK, else the CPUs this process may use]")
@click.option("--decoder", type=click.Choice(DECODER_CHOICES), default="auto", show_default=True,
              help="auto: NVDEC (GPU) when PyNvVideoCodec and a GPU are present and inference runs there, else PyAV.")
@click.option("--decoders", type=click.IntRange(min=1), metavar="K",
              help="Decode each video with K decoders at once, each from its own keyframe (same features). "
                   "Default: the GPU's NVDEC engines, shared among the videos at once; on the CPU, the CPUs "
                   "that CPU inference leaves (usually 1).")
@click.option("--videos-at-once", type=click.IntRange(min=1), metavar="N",
              help="Process N videos at once, sharing one model. Default: with NVDEC, as many as the GPU has "
                   "NVDEC engines (up to the number of videos), else 1. With --ray: N workers per GPU, each "
                   "with 1/N of it.")
@click.option("--heads", is_flag=True, help="Also write OUT.heads.npz with logits and event_times (N, classes).")
@click.option("--format", type=click.Choice(FORMATS), default="npy", show_default=True,
              help=" ".join(f.help for f in FORMATS.values()))
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip finished videos).")
@click.option("--allow-partial", is_flag=True,
              help="On a truncated or corrupt video, keep the rows decoded before the break (marked in the metadata).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-video lines (errors and warnings still print).")
@click.option("--shard", metavar="K/N",
              help="Process only the K-th (counting from 0) of N disjoint shares of the videos. Default in a "
                   "Slurm job array: from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT.")
@click.option("--print-slurm-script", is_flag=True,
              help="Print an sbatch job-array script that runs this command in N shares (N from --shard K/N, "
                   "else one per video up to 100) and exit. Resubmitting it resumes.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run on Ray: one worker per GPU (per CPU slot without GPUs), each loading the model once. "
                   "ADDRESS as for ray.init (HOST:PORT, ray://HOST:PORT, auto: the cluster started on this "
                   "machine; default: $RAY_ADDRESS, else a new local Ray). Write --ray=ADDRESS or put --ray "
                   "last, so that it does not take a video as its address.")
@click.option("--ray-cpus-per-worker", type=click.IntRange(min=1), default=4, show_default=True,
              help="CPUs (and inference threads) per Ray worker on clusters without GPUs.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append one JSON line per video (status, rows, seconds, error) to this file.")
@click.version_option(__version__, prog_name="tsf-extract")
def command(videos, output, list_file, name, model, quiet, shard, print_slurm_script, ray_address,
            ray_cpus_per_worker, report_path, **extract_options):
    """Extract one TimeSformer feature per second (or --rate per second) from each VIDEO (files or directories)."""
    setup_logging(quiet)
    settings = ExtractSettings(**extract_options)
    jobs = expand_jobs(videos, output, list_file, name)
    if print_slurm_script:
        if ray_address is not None:
            raise click.UsageError("--print-slurm-script and --ray are two ways to run; choose one")
        shards = parse_shard(shard)[1] if shard is not None else min(len(jobs), SLURM_ARRAY_MAX_DEFAULT)
        options = [*(["--list", str(list_file)] if list_file else []), *(["-o", output] if output else []),
                   *(["--name", name] if name else []), *(["--model", str(model)] if model else []),
                   *(["-q"] if quiet else [])]
        click.echo(slurm_script([str(v) for v in videos], options, settings, shards, len(jobs), report_path), nl=False)
        return 0
    all_jobs = len(jobs)
    jobs, share = select_share(jobs, shard)
    if share is not None:
        log.info("shard %d/%d: %d of %d videos", share[0], share[1], len(jobs), all_jobs)
    model = model if model is not None else default_bundle_dir()
    extractor = Extractor(model, settings, show_progress=not quiet)

    run_report = RunReport(report_path, share)
    loop = JobLoop(report=lambda line: click.echo(line, err=True), record=run_report.record)
    try:
        if ray_address is not None:
            summary = run_on_ray(jobs, extractor, loop, address=ray_address, cpus_per_worker=ray_cpus_per_worker)
        else:
            at_once = extractor.share_among(_to_extract(extractor, jobs)) if len(jobs) > 1 else 1
            summary = loop.run(jobs, extractor.process,
                               keep_going_on_bugs=len(jobs) > 1 and not os.environ.get("TSF_DEBUG"), at_once=at_once)
    finally:
        run_report.close()
    if len(jobs) == 1 and summary.skipped:
        log.info("%s exists; skipped (use --overwrite to replace it)",
                 OutputSet(jobs[0].output).paths(settings.format)["features"])
    elif len(jobs) > 1:
        log.info("tsf-extract: %s", summary.line())
    return 0 if summary.ok else 2


def _to_extract(extractor: Extractor, jobs) -> int:
    """How many of `jobs` will be extracted: not finished already, nor refused before decoding."""
    count = 0
    for job in jobs:
        try:
            count += not extractor.check(job).skip
        except TsfError:
            pass
    return count


def main(argv=None) -> int:
    return run_cli(command, "tsf-extract", argv)
