"""A job is one video and where its outputs go; `JobLoop` is the one policy for running a list of them.

The plain command, each Slurm share and the Ray driver run the same kind of list (built from the
inputs by `scale/inputs.py`) under the same rules, here:
- skip: a job whose output set is finished with these settings from this input is skipped (the
  `Extractor` decides, and says so in its outcome);
- fail: bad input (a TsfError) fails that video once, with its one-line error, and the rest go on;
  anything else is a bug, reported the same way, or re-raised where the caller wants to see it;
- retry: where a worker can be lost with its video (Ray), the video is tried again, `RETRIES` more
  times, then failed;
- record: every outcome reaches the run report as it happens; Ctrl-C stops everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .errors import TsfError

RETRIES = 2  # more tries for a video whose worker was lost (Ray)


@dataclass(frozen=True)
class Job:
    video: Path
    output: Path  # the output set's name: OUT.npy (or OUT); its other files sit beside it


@dataclass(frozen=True)
class Outcome:
    status: str  # "done", "skipped" or "failed"
    rows: int | None = None
    error: str | None = None  # the one-line error of a failed job
    seconds: float | None = None
    host: str | None = None  # where it ran, when not here (Ray)
    attempts: int | None = None  # tries it took, where a job can be retried (Ray)


def attempt(job: Job, process: Callable[[Job], Outcome], keep_going_on_bugs: bool = True) -> Outcome:
    """`process(job)`, timed; bad input becomes a failed outcome. Any other exception is a bug:
    a failed outcome naming it, or (`keep_going_on_bugs` False) raised for the caller to handle."""
    started = time.monotonic()
    try:
        outcome = process(job)
    except TsfError as e:
        return Outcome("failed", error=str(e), seconds=time.monotonic() - started)
    except Exception as e:
        if not keep_going_on_bugs:
            raise
        return Outcome("failed", error=f"{job.video}: internal error: {type(e).__name__}: {e}",
                       seconds=time.monotonic() - started)
    return replace(outcome, seconds=time.monotonic() - started)


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


class JobLoop:
    """Counts, reports and records each job's outcome (`finish`); `run` is the loop on one machine."""

    def __init__(self, report: Callable[[str], None], record: Callable[[Job, Outcome], None] | None = None):
        self.report = report
        self.record = record
        self.summary = Summary()

    def finish(self, job: Job, outcome: Outcome) -> None:
        if outcome.status == "failed":
            self.summary.failed.append((job, outcome.error or "failed"))
            self.report(f"error: {outcome.error}")
        else:
            getattr(self.summary, outcome.status).append(job)
        if self.record is not None:
            self.record(job, outcome)

    def run(self, jobs: list[Job], process: Callable[[Job], Outcome], keep_going_on_bugs: bool = True) -> Summary:
        """Each job in turn, here."""
        for job in jobs:
            self.finish(job, attempt(job, process, keep_going_on_bugs))
        return self.summary
