"""Many videos: which output each input gets (files, directories, `--list`), as a list of jobs.

Every input given is either a job or named in a message (docs/design.md, "Many videos"): a video
file named on the command line or in a list is always a job, whatever its name; a directory is
walked for files whose suffix is a video container's (`VIDEO_SUFFIXES`), and the other files it
holds are counted by suffix in an info line. A folder that cannot be listed stops the run before
any work, so that every Slurm share sees the same list.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..errors import TsfError
from ..jobs import Job
from ..outputs import FORMATS, set_name

log = logging.getLogger("tsf")

# Containers FFmpeg demuxes that hold video: Matroska/WebM, MP4/MOV and their kin (3GPP, Motion
# JPEG 2000, F4V), AVI, Flash, ASF/WMV, MPEG program and transport streams (the broadcast suffixes
# included), MXF and GXF (broadcast archives), DV, NUT, Ogg video, RealMedia, Y4M and IVF. Audio-only
# and raw elementary-stream suffixes (.mp3, .ogg, .h264) are left out: a folder's audio files would
# otherwise each be a failed job, and raw streams carry no timestamps.
VIDEO_SUFFIXES = frozenset({
    ".mkv", ".mk3d", ".webm", ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mj2", ".f4v", ".avi", ".divx",
    ".flv", ".wmv", ".asf", ".ts", ".m2t", ".m2ts", ".mts", ".trp", ".tp", ".mpg", ".mpeg", ".mpe", ".m2v",
    ".vob", ".mxf", ".gxf", ".dv", ".dif", ".nut", ".ogv", ".ogm", ".rm", ".rmvb", ".y4m", ".ivf",
})


class JobError(TsfError):
    """The inputs and outputs given cannot be turned into a list of jobs (bad combination, collisions)."""


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


def find_videos(directory: Path) -> list[Path]:
    """Video files under `directory`, recursively, sorted; links to folders are followed, each real
    folder walked once. Hidden files and folders (names starting with a dot: tsf's own temporaries
    among them) are skipped; so are files without a video suffix, which are counted in an info line.
    Raises JobError when a folder cannot be listed."""
    found: list[Path] = []
    others: Counter = Counter()
    hidden = repeated = 0
    walked: set[str] = set()

    def unreadable(error: OSError) -> None:
        raise JobError(f"cannot list {error.filename}: {(error.strerror or str(error)).lower()} (nothing was "
                       f"extracted: every video under {directory} must be listable)")

    for root, dirs, files in os.walk(directory, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:  # a link back up the tree, or a second link to a folder already walked
            repeated += 1
            dirs[:] = []
            continue
        walked.add(real)
        hidden += sum(name.startswith(".") for name in dirs + files)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            if is_video_name(name):
                found.append(Path(root) / name)
            else:
                others[Path(name).suffix.lower() or "(no suffix)"] += 1
    skipped = [f"{sum(others.values())} other files ({', '.join(f'{n} {s}' for s, n in sorted(others.items()))})"
               if others else "", f"{hidden} hidden" if hidden else "",
               f"{repeated} links to folders already walked" if repeated else ""]
    skipped = [part for part in skipped if part]
    if skipped:
        log.info("%s: %d videos; skipped %s", directory, len(found), ", ".join(skipped))
    if not found:
        raise JobError(f"no video files under {directory}"
                       + (f" (skipped {', '.join(skipped)}; video suffixes: {' '.join(sorted(VIDEO_SUFFIXES))})"
                          if skipped else ""))
    return found


def read_list(list_file: Path) -> list[Path]:
    """One video path per line, UTF-8 with or without a byte-order mark; blank lines and lines
    starting with # are ignored. A relative path is relative to the list's own folder, so a list
    means the same files wherever the command runs (as FFmpeg's concat lists and playlists do)."""
    try:
        lines = Path(list_file).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read list {list_file}: {getattr(e, 'strerror', None) or e}") from None
    folder = Path(list_file).parent
    entries = [line.strip() for line in lines]
    return [folder / entry for entry in entries if entry and not entry.startswith("#")]


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
            groups.append((path, find_videos(path)))
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
