"""A job is one video and where its outputs go; `run_jobs` is the policy for running a list of them.

The plain command, each Slurm share and the Ray driver run the same kind of list (built from the
inputs by `scale/inputs.py`) with the same rules: finished outputs are skipped, a failing video
is reported and the rest go on, Ctrl-C stops everything. `run_jobs` can run several videos at
once, each in a thread of its own (the Extractor decides how many, `Extractor.share_among`).
"""

from __future__ import annotations

import threading
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
             record: Callable[..., None] | None = None, at_once: int = 1) -> Summary:
    """Run `process` on each job not already done; a failing job is reported and the rest go on.

    `process` raises TsfError for bad input; any other exception is a bug, reported the same way
    (one line) unless `keep_going_on_bugs` is False. KeyboardInterrupt stops everything.
    `record(job, status, seconds=, error=, rows=)`, if given, hears every job's outcome ("done",
    "skipped", "failed") as it happens (the run report). With `at_once` > 1, that many jobs run
    at once, in threads that each take the next job when theirs is done.
    """
    summary = Summary()
    telling = threading.Lock()  # one outcome at a time into the summary, the report and the record

    def run(job: Job) -> None:
        if is_done(job):
            with telling:
                summary.skipped.append(job)
                if record:
                    record(job, "skipped")
            return
        started = time.monotonic()
        try:
            outcome = process(job)
        except Exception as e:
            if not isinstance(e, TsfError) and not keep_going_on_bugs:
                raise
            message = str(e) if isinstance(e, TsfError) else f"{job.video}: internal error: {type(e).__name__}: {e}"
            with telling:
                summary.failed.append((job, message))
                report(f"error: {message}")
                if record:
                    record(job, "failed", seconds=time.monotonic() - started, error=message)
            return
        with telling:
            summary.done.append(job)
            if record:
                record(job, "done", seconds=time.monotonic() - started, rows=outcome.rows)

    if at_once <= 1:
        for job in jobs:
            run(job)
        return summary
    _in_threads(jobs, run, at_once)
    return summary


def _in_threads(jobs: list[Job], run: Callable[[Job], None], count: int) -> None:
    """`run` on every job from `count` threads. Daemon threads, so that Ctrl-C (which reaches the
    main thread only) ends the process without waiting for the videos in flight; their unfinished
    outputs are debris the next run removes (docs/design.md, "Outputs")."""
    todo = iter(jobs)
    taking = threading.Lock()
    raised: list[BaseException] = []

    def worker() -> None:
        while not raised:
            with taking:
                job = next(todo, None)
            if job is None:
                return
            try:
                run(job)
            except BaseException as e:  # a bug with keep_going_on_bugs False: stop taking jobs
                raised.append(e)

    threads = [threading.Thread(target=worker, name=f"tsf-video-{i}", daemon=True) for i in range(min(count, len(jobs)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if raised:
        raise raised[0]
