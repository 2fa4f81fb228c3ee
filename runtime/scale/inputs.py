"""Many videos: which output each input gets (files, directories, `--list`), as a list of jobs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import TsfError
from ..jobs import Job
from ..outputs import FORMATS, set_name

VIDEO_SUFFIXES = {".mkv", ".mp4", ".avi", ".mov", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".mts", ".m2ts",
                  ".flv", ".wmv"}


class JobError(TsfError):
    """The inputs and outputs given cannot be turned into a list of jobs (bad combination, collisions)."""


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


def expand_jobs(inputs: Iterable[str | os.PathLike], output: str | os.PathLike | None = None,
                list_file: str | os.PathLike | None = None, name: str | None = None) -> list[Job]:
    """(video, output) pairs.

    One video file: `output` is the features file (or, if it is an existing directory or ends with
    a slash, the directory to put it in). Several videos, a directory or a list: `output` is a
    directory and each output mirrors its video's path relative to the directory given (or, for
    files, to the deepest folder containing all of them), so SoccerNet's identically named halves
    (league/season/game/1_224p.mkv) do not collide. Without `output`, features go beside each video.
    `name` names the feature sets SoccerNet's way (`outputs.set_name`: 1_224p.mkv -> 1_NAME.npy).
    """
    def features_file(video: Path) -> str:
        return set_name(video, name) + FORMATS["npy"].suffix

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
            target = video.with_name(features_file(video))
        elif out.is_dir() or _names_a_directory(str(output)):
            target = out / features_file(video)
        elif name is not None:
            raise JobError(f"--name names the feature files in a directory; -o {output} names the file itself "
                           "(give -o a directory, or leave out --name)")
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
                target = video.with_name(features_file(video))
            else:
                relative = Path(os.path.relpath(os.path.abspath(video), os.path.abspath(root)))
                target = out / relative.parent / features_file(video)
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
