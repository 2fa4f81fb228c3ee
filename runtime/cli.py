"""`tsf-extract`: videos -> one feature row per second, with the lean, Paddle-free runtime.

click parses the command line (choices, paths, help); every expected failure is a TsfError printed
as one `error: ...` line (exit 2), warnings as `warning: ...` lines.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .. import __version__
from .bundle import default_bundle_dir, load_bundle
from .errors import run_cli
from .infer import select_backend
from .jobs import ExtractSettings, Job, expand_jobs, extract_to_outputs, run_jobs
from .probe import probe_video
from .progress import VideoProgress
from .ray_pool import run_on_ray
from .scale import RunReport, select_share, slurm_script_for
from .sample import plan_windows
from .write import check_outputs, is_complete

log = logging.getLogger("tsf")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    handler.addFilter(_lowercase_level)
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _lowercase_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("videos", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Features file (one video) or directory (several; outputs mirror the inputs' relative "
                   "paths). Default: beside each video.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), help="Text file with one video path per line.")
@click.option("--model", type=click.Path(path_type=Path),
              help=f"Model bundle directory from tsf-export. Default: {default_bundle_dir()}")
@click.option("--align", type=click.Choice(["center", "reference"]), default="center", show_default=True,
              help="center: ceil(duration) rows, row i centred on i + 0.5 s. reference: the reference's "
                   "int(L - 5) left-aligned rows and frame indices.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Windows per inference batch [default: per backend]")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True,
              help="auto: the bundle's TensorRT engine if it fits this GPU, else ONNX Runtime (CUDA, else CPU).")
@click.option("--decoder", type=click.Choice(["auto", "nvdec", "cpu"]), default="auto", show_default=True,
              help="auto: NVDEC (GPU) when PyNvVideoCodec and a GPU are present and inference runs there, else PyAV.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="cuda fails rather than fall back to the CPU; cpu never touches a GPU.")
@click.option("--heads", is_flag=True, help="Also write OUT.heads.npz with logits and event_times (N, classes).")
@click.option("--format", "fmt", type=click.Choice(["npy", "reference"]), default="npy", show_default=True,
              help="npy: float32 (N, width). reference: the reference's pickled dict (needs allow_pickle to load).")
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
                   "ADDRESS as for ray.init (default: $RAY_ADDRESS, else a local Ray). Write --ray=ADDRESS "
                   "or put --ray last, so that it does not take a video as its address.")
@click.option("--ray-cpus-per-worker", type=click.IntRange(min=1), default=4, show_default=True,
              help="CPUs (and ONNX Runtime threads) per Ray worker on clusters without GPUs.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append one JSON line per video (status, rows, seconds, error) to this file.")
@click.version_option(__version__, prog_name="tsf-extract")
def command(videos, output, list_file, model, align, batch_size, backend, decoder, device, heads, fmt,
            overwrite, allow_partial, quiet, shard, print_slurm_script, ray_address, ray_cpus_per_worker,
            report_path):
    """Extract one TimeSformer feature per second from each VIDEO (files or directories)."""
    _setup_logging(quiet)
    jobs = expand_jobs(videos, output, list_file)
    if print_slurm_script:
        if ray_address is not None:
            raise click.UsageError("--print-slurm-script and --ray are two ways to run; choose one")
        click.echo(slurm_script_for(click.get_current_context(), jobs, shard, report_path, device), nl=False)
        return 0
    all_jobs = len(jobs)
    jobs, share = select_share(jobs, shard)
    if share is not None:
        log.info("shard %d/%d: %d of %d videos", share[0], share[1], len(jobs), all_jobs)
    bundle = load_bundle(model if model is not None else default_bundle_dir())
    backend_cache = {}

    def get_backend():
        # Loaded on the first video that probes fine, so that a bad input costs no model load
        # and its error stays the only line printed.
        if "backend" not in backend_cache:
            if bundle.random_init:
                log.warning("model bundle %s has random weights (exported with --random-init): "
                            "the features are meaningless except for testing", bundle.dir)
            backend_cache["backend"] = select_backend(bundle, backend, device)
        return backend_cache["backend"]

    settings = ExtractSettings(str(bundle.dir), align, batch_size, backend, decoder, device, heads, fmt,
                               overwrite, allow_partial)

    def process(job: Job) -> None:
        check_outputs(job.output, heads, overwrite)
        # Bad input (unreadable, too short for the alignment) fails here, before a backend loads.
        plan = plan_windows(probe_video(job.video), align, frames=int(bundle.architecture["frames"]))
        chosen = get_backend()
        with VideoProgress(plan.rows, float(plan.stride_seconds), job.video.name, enabled=not quiet) as bar:
            result = extract_to_outputs(job, bundle, chosen, settings, progress=lambda rows, total: bar.update(rows))
        if result.stats.partial is not None:
            log.warning("%s: kept %d rows decoded before the break (%s)", job.video, result.rows, result.stats.partial)
        log.info("%s -> %s: %d rows x %d, %s, %s decoder, x%.1f real time", job.video, job.output,
                 result.rows, result.features.shape[1], result.backend, result.decoder,
                 result.timings.get("realtime_factor") or 0)

    def report(line: str) -> None:
        click.echo(line, err=True)

    def is_done(job: Job) -> bool:
        return not overwrite and is_complete(job.output, heads)

    run_report = RunReport(report_path, share)
    try:
        if ray_address is not None:
            summary = run_on_ray(jobs, settings, address=ray_address, is_done=is_done, report=report,
                                 record=run_report.record, cpus_per_worker=ray_cpus_per_worker)
        else:
            summary = run_jobs(jobs, process, is_done=is_done, report=report, record=run_report.record,
                               keep_going_on_bugs=len(jobs) > 1 and not os.environ.get("TSF_DEBUG"))
    finally:
        run_report.close()
    if len(jobs) > 1 or summary.skipped:
        if len(jobs) == 1 and summary.skipped:
            log.info("%s exists; skipped (use --overwrite to replace it)", jobs[0].output)
        else:
            log.info("tsf-extract: %s", summary.line())
    return 0 if summary.ok else 2


def main(argv=None) -> int:
    return run_cli(command, "tsf-extract", argv)
