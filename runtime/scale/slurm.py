"""Season-sized runs on Slurm: deterministic shares of the job list and the sbatch script.

No scheduler of our own: Slurm runs N copies of the same command and each takes its share of the
expanded (video, output) list with `--shard K/N` (or from SLURM_ARRAY_TASK_ID); because finished
outputs are skipped, a failed or pre-empted array is resumed by resubmitting it. Shares are
round-robin over the jobs sorted by output path, so every task computes the same split from the
same inputs, whatever order the list or the directory walk gave, and shares differ by at most
one video. Only the standard library is needed.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime, timezone

from ..errors import InputError
from ..extractor import ExtractSettings
from ..jobs import Job

SLURM_ARRAY_MAX_DEFAULT = 100  # shards in a printed script when --shard does not say


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (K counts from 0, as Slurm array indices usually do)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(f"--shard {text!r} is not K/N (e.g. 0/8 for the first of 8 shares)") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text}: need 0 <= K < N")
    return index, count


def shard_from_environment(environ=os.environ) -> tuple[int, int] | None:
    """(K, N) of this Slurm array task, or None outside a job array.

    K = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP, so arrays written as
    1-10 or 0-90:10 work too; N = SLURM_ARRAY_TASK_COUNT.
    """
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return None
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1)) or 1
    except ValueError:
        raise InputError("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not integers") from None
    index = (task - first) // step
    if count < 1 or not 0 <= index < count:
        raise InputError(f"Slurm array task {task} is not one of the array's {count} tasks "
                         f"(min {first}, step {step}); pass --shard K/N")
    return index, count


def shard_jobs(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The index-th of count disjoint shares that together cover `jobs`."""
    ordered = sorted(jobs, key=lambda job: (str(job.output), str(job.video)))
    return ordered[index::count]


def select_share(jobs: list[Job], shard: str | None, environ=os.environ) -> tuple[list[Job], tuple[int, int] | None]:
    """This run's share of the jobs: --shard K/N, else the Slurm array task's, else all of them."""
    share = parse_shard(shard) if shard is not None else shard_from_environment(environ)
    if share is None:
        return jobs, None
    return shard_jobs(jobs, *share), share


def _double_quoted(text: str) -> str:
    return '"' + "".join("\\" + ch if ch in '"$`\\' else ch for ch in text) + '"'


def report_path_for_task(path: str) -> str:
    """A per-task report file name for the shell: many tasks appending to one file on a shared
    file system (NFS, Lustre) can interleave or lose lines."""
    stem, suffix = os.path.splitext(path)
    return _double_quoted(stem)[:-1] + '.${SLURM_ARRAY_TASK_ID}' + _double_quoted(suffix or ".jsonl")[1:]


def slurm_script(videos: list[str], options: list[str], settings: ExtractSettings, shards: int, jobs: int,
                 report: str | os.PathLike | None, cpus_per_task: int = 8) -> str:
    """An sbatch script running tsf-extract on `videos` with `options` (the list, outputs, model, as
    words) and `settings`, as a job array of `shards` tasks, one share each."""
    words = [*options, *settings.as_options()]
    command = [shlex.quote(sys.executable), "-m", "tsf.runtime"] + [shlex.quote(w) for w in words]
    command += ["--shard", '"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}/' + str(shards) + '"']
    if report is not None:
        command += ["--report", report_path_for_task(str(report))]
    if videos:
        command += ["--"] + [shlex.quote(v) for v in videos]
    lines = [
        "#!/bin/bash",
        f"# tsf-extract as a Slurm job array: {jobs} videos in {shards} shares, one per array task.",
        f"# Written by tsf-extract --print-slurm-script on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "# Submit with: sbatch [--partition=... --time=... --account=...] THIS_FILE",
        "# (sbatch options on its command line override the #SBATCH lines below.)",
        "# Resubmitting resumes: every task skips the outputs that are already complete.",
        "#SBATCH --job-name=tsf-extract",
        f"#SBATCH --array=0-{shards - 1}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
    ]
    if settings.device != "cpu":
        lines.append("#SBATCH --gres=gpu:1")
    lines += [
        "#SBATCH --output=tsf-extract-%A_%a.log",
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        "exec " + " ".join(command),
        "",
    ]
    return "\n".join(lines)
