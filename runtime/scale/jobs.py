"""Many videos: which output each input gets, and running the list with resume and per-file failures.

The plain command, a Slurm share (--shard K/N) and the Ray pool all take the same expanded
(video, output) list; the plain command and each shard run it with `run_jobs`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..errors import TsfError

VIDEO_SUFFIXES = {".mkv", ".mp4", ".avi", ".mov", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".mts", ".m2ts",
                  ".flv", ".wmv"}


class JobError(TsfError):
    """The inputs and outputs given cannot be turned into a list of jobs (bad combination, collisions)."""


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


def find_videos(directory: Path) -> list[Path]:
    """Video files under `directory`, recursively, sorted (hidden files and folders skipped)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return found


def read_list(list_file: Path) -> list[Path]:
    """One video path per line; blank lines and lines starting with # are ignored."""
    try:
        lines = Path(list_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read list {list_file}: {getattr(e, 'strerror', None) or e}") from None
    return [Path(line.strip()) for line in lines if line.strip() and not line.strip().startswith("#")]


def features_name(video: Path) -> str:
    return video.stem + ".npy"


def expand_jobs(inputs: Iterable[str | os.PathLike], output: str | os.PathLike | None = None,
                list_file: str | os.PathLike | None = None) -> list[Job]:
    """(video, output) pairs.

    One video file: `output` is the features file (or, if it is an existing directory or ends with
    a slash, the directory to put it in). Several videos, a directory or a list: `output` is a
    directory and each output mirrors its video's path relative to the directory given (or, for
    files, to the deepest folder containing all of them), so SoccerNet's identically named halves
    (league/season/game/1_224p.mkv) do not collide. Without `output`, features go beside each video.
    """
    groups: list[tuple[Path, list[Path]]] = []  # (root to mirror from, videos)
    loose: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos = find_videos(path)
            if not videos:
                raise JobError(f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) under {path}")
            groups.append((path, videos))
        else:
            loose.append(path)
    if list_file is not None:
        loose += read_list(Path(list_file))
    if not groups and not loose:
        raise JobError("no input videos (give VIDEO..., a directory or --list FILE)")

    single = not groups and len(loose) == 1 and list_file is None
    out = Path(output) if output is not None else None
    if single:
        video = loose[0]
        if out is None:
            target = video.with_name(features_name(video))
        elif out.is_dir() or _names_a_directory(str(output)):
            target = out / features_name(video)
        else:
            target = out
        return [Job(video, target)]

    if out is not None and out.exists() and not out.is_dir():
        raise JobError(f"-o {out} must be a directory when there are several inputs")
    if loose:
        parents = [os.path.abspath(p.parent) for p in loose]
        groups.append((Path(os.path.commonpath(parents)), loose))
    jobs = []
    for root, videos in groups:
        for video in videos:
            if out is None:
                target = video.with_name(features_name(video))
            else:
                relative = Path(os.path.relpath(os.path.abspath(video), os.path.abspath(root)))
                target = out / relative.parent / features_name(video)
            jobs.append(Job(video, target))
    jobs = unique_jobs(jobs)
    _refuse_collisions(jobs)
    return jobs


def _names_a_directory(text: str) -> bool:
    """A trailing separator means a directory, whether it exists or not."""
    return text.endswith(os.sep) or bool(os.altsep and text.endswith(os.altsep))


def _refuse_collisions(jobs: list[Job]) -> None:
    seen: dict[str, Job] = {}
    for job in jobs:
        key = os.path.abspath(job.output)
        if key in seen and os.path.abspath(seen[key].video) != os.path.abspath(job.video):
            raise JobError(f"{seen[key].video} and {job.video} would both write {job.output}")
        seen[key] = job


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The same video listed twice is extracted once."""
    seen, out = set(), []
    for job in jobs:
        key = (os.path.abspath(job.video), os.path.abspath(job.output))
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


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
