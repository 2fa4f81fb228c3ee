"""A job is one video and where its outputs go; `run_jobs` is the policy for running a list of them.

The plain command, each Slurm share and the Ray driver run the same kind of list (built from the
inputs by `scale/inputs.py`) with the same rules: finished outputs are skipped, a failing video
is reported and the rest go on, Ctrl-C stops everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from .errors import TsfError


@dataclass(frozen=True)
class Job:
    video: Path
    output: Path  # the features .npy; sidecars sit beside it


@dataclass
class Summary:
    done: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped (already extracted), {len(self.failed)} failed"


class Outcome(Protocol):
    rows: int


def run_jobs(jobs: list[Job], process: Callable[[Job], Outcome], *, is_done: Callable[[Job], bool],
             report: Callable[[str], None], keep_going_on_bugs: bool = True,
             record: Callable[..., None] | None = None) -> Summary:
    """Run `process` on each job not already done; a failing job is reported and the rest go on.

    `process` raises TsfError for bad input; any other exception is a bug, reported the same way
    (one line) unless `keep_going_on_bugs` is False. KeyboardInterrupt stops everything.
    `record(job, status, seconds=, error=, rows=)`, if given, hears every job's outcome ("done",
    "skipped", "failed") as it happens (the run report).
    """
    summary = Summary()
    for job in jobs:
        if is_done(job):
            summary.skipped.append(job)
            if record:
                record(job, "skipped")
            continue
        started = time.monotonic()
        try:
            outcome = process(job)
        except Exception as e:
            if not isinstance(e, TsfError) and not keep_going_on_bugs:
                raise
            message = str(e) if isinstance(e, TsfError) else f"{job.video}: internal error: {type(e).__name__}: {e}"
            summary.failed.append((job, message))
            report(f"error: {message}")
            if record:
                record(job, "failed", seconds=time.monotonic() - started, error=message)
            continue
        summary.done.append(job)
        if record:
            record(job, "done", seconds=time.monotonic() - started, rows=outcome.rows)
    return summary
