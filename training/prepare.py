"""`tsf-train prepare`: annotated videos -> 10-s training clips, per-sample lists and a class map.

Output folder layout (the contract `tsf.training.dataset` reads):
    classes.json                  {"class_names": [...17 actions..., "background"], "background_index": 17}
    classes.txt                   the same names, one per line (for `tsf-export --classes`)
    train.jsonl valid.jsonl test.jsonl
                                  one sample per line: clip (path relative to this folder), label
                                  (class index), label_name, event_time (s inside the clip),
                                  clip_seconds, video (source), clip_start (s in the source)
    prepare.json                  what was done, and every video, game and event left out, with counts
    clips/<source id>/<NNNN>.mp4  clip NNNN covers [NNNN*10, NNNN*10 + 10) s of the source

Each source video is decoded once, in its own process (parallel over cores), and cut into
non-overlapping clips scaled to 456x256 at the native frame rate. Each clip is written to a temp
file and renamed when complete, so an existing clip is always whole: a rerun skips them (resume).
A video that cannot be read is reported and skipped; the rest goes on. Nothing is left out
silently: `left_out_lines` words every video, game and event that is not in a sample list, and
an empty training or validation split is refused (before any cutting where it can be foreseen)
unless asked for.

Dependencies: PyAV (decoding, scaling, encoding: FFmpeg without a subprocess).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

from tsf.runtime.spotting.labels import read_split_list, read_table

from .errors import TrainingError
from .files import finish, temporary_beside, write_text
from .labels import ClassMap, Event, soccernet_game_events

SPLITS = ("train", "valid", "test")
REQUIRED_SPLITS = ("train", "valid")  # what `fit` reads; an empty test split is only reported
CLIP_SECONDS = 10
CLIP_SIZE = (456, 256)


@dataclass
class SourceVideo:
    path: str
    source_id: str  # relative, "/"-separated; names the clip folder
    split: str | None
    events: list[Event] = field(default_factory=list)


# ---------------------------------------------------------------- discovery ---------------------

def hash_split(key: str, ratios: tuple[float, float, float]) -> str:
    """A stable split from a name, so a game never moves between splits when data is added."""
    u = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 0x100000000
    total = sum(ratios)
    if u < ratios[0] / total:
        return "train"
    if u < (ratios[0] + ratios[1]) / total:
        return "valid"
    return "test"


def _annotation_count(game_dir: str) -> int | None:
    try:
        with open(os.path.join(game_dir, "Labels-v2.json"), encoding="utf-8") as f:
            return len(json.load(f)["annotations"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def discover_soccernet(root: str, video_glob: str = "{half}_*.mkv", split_lists: dict[str, str] | None = None,
                       ratios=(0.8, 0.1, 0.1)) -> tuple[list[SourceVideo], dict]:
    """Games are folders holding `Labels-v2.json`; halves are `{1,2}_*.mkv` (pattern configurable).
    The notes name every game and half left out, and every listed game that is not there."""
    import fnmatch

    if not os.path.isdir(root):
        raise TrainingError(f"not a folder: {root}")
    game_split, listed_in = {}, {}
    for split, path in (split_lists or {}).items():
        if split not in SPLITS:
            raise TrainingError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
        for game in read_split_list(path):
            game_split[game], listed_in[game] = split, path
    notes = {"games": 0, "games_without_video": [], "halves_without_video": [], "games_not_in_split_lists": [],
             "split_list_games_not_found": []}
    videos, found = [], set()
    for directory, subdirs, files in sorted(os.walk(root)):
        subdirs.sort()
        if "Labels-v2.json" not in files:
            continue
        game = os.path.relpath(directory, root).replace(os.sep, "/")
        notes["games"] += 1
        found.add(game)
        if split_lists:
            split = game_split.get(game)
            if split is None:
                notes["games_not_in_split_lists"].append({"game": game, "events": _annotation_count(directory)})
                continue
        else:
            split = hash_split(game, ratios)
        by_half = {}
        for half in (1, 2):
            matches = sorted(f for f in files if fnmatch.fnmatch(f, video_glob.format(half=half)))
            if len(matches) > 1:
                raise TrainingError(
                    f"{game}: several videos for half {half} ({', '.join(matches)}); "
                    f"choose one with --video-glob, e.g. '{{half}}_720p.mkv'")
            if matches:
                by_half[half] = os.path.join(directory, matches[0])
        events, without_video = soccernet_game_events(directory, by_half)
        if not by_half:
            notes["games_without_video"].append({"game": game, "events": sum(without_video.values())})
            continue
        for half in sorted(set((1, 2)) - set(by_half)):
            notes["halves_without_video"].append({"game": game, "half": half, "events": without_video.get(half, 0)})
        for half, path in sorted(by_half.items()):
            source_id = f"{game}/{os.path.splitext(os.path.basename(path))[0]}"
            videos.append(SourceVideo(path, source_id, split, [e for e in events if e.video == path]))
    if notes["games"] == 0:
        raise TrainingError(f"no SoccerNet games (folders with Labels-v2.json) under {root}")
    notes["split_list_games_not_found"] = [{"game": game, "split": game_split[game], "list": listed_in[game]}
                                           for game in game_split if game not in found]
    return videos, notes


def discover_simple(annotation_file: str, ratios=(0.8, 0.1, 0.1)) -> tuple[list[SourceVideo], dict]:
    """Videos named in a CSV/JSON of (video, time_seconds, label[, split])."""
    rows = read_table(annotation_file)
    base = os.path.dirname(os.path.abspath(annotation_file))
    by_video: dict[str, SourceVideo] = {}
    for row in rows:
        video = row.video
        if row.split is not None and row.split not in SPLITS:
            raise TrainingError(f"{annotation_file}: unknown split {row.split!r} for {video}")
        source = by_video.get(video)
        if source is None:
            rel = os.path.relpath(video, base).replace(os.sep, "/")
            source_id = os.path.splitext(rel)[0].replace("../", "__/")
            split = row.split or hash_split(rel, ratios)
            source = by_video[video] = SourceVideo(video, source_id, split)
        elif row.split and row.split != source.split:
            raise TrainingError(f"{annotation_file}: {video} is given two splits ({source.split}, {row.split})")
        source.events.append(Event(video, row.time_ms, row.label))
    return list(by_video.values()), {"videos_annotated": len(by_video)}


# ---------------------------------------------------------------- cutting -----------------------

def clip_relpath(source_id: str, index: int) -> str:
    return f"clips/{source_id}/{index:04d}.mp4"


def _pick_codec(preferred: str) -> str:
    import av

    for name in (preferred, "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError / ValueError by version
            continue
    raise TrainingError(f"no usable video encoder ({preferred}, mpeg4) in this PyAV build")


class _ClipWriter:
    """One clip being encoded into a temp file next to its final path; renamed on `finish`."""

    def __init__(self, final_path: str, size: tuple[int, int], fps: Fraction, codec: str):
        import av

        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        self.tmp = temporary_beside(final_path, ".mp4")
        self.final_path = final_path
        self.fps = fps
        self.size = size
        self.container = av.open(self.tmp, "w", format="mp4")
        options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {"qscale": "3"}
        self.stream = self.container.add_stream(codec, rate=fps, options=options)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        # A keyframe every second keeps the sampler's seek to the window start cheap.
        self.stream.codec_context.gop_size = max(1, int(round(float(fps))))
        self.last_pts = -1

    def write(self, frame, seconds_into_clip: float):
        # pts on the 1/fps grid from the source timestamp: frame k of the clip shows at k/fps,
        # and a dropped source frame leaves a gap instead of shifting every later frame.
        pts = int(round(seconds_into_clip * self.fps))
        if pts <= self.last_pts:
            return
        out = frame.reformat(width=self.size[0], height=self.size[1], format="yuv420p")
        out.pts = pts
        out.time_base = 1 / self.fps
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self.last_pts = pts

    def finish(self):
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        finish(self.tmp, self.final_path)

    def discard(self):
        try:
            self.container.close()
        except Exception:  # closing a half-written file can fail; it is deleted anyway
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def cut_video(job: dict) -> dict:
    """Decode one source video once and write its missing clips. Runs in a worker process.

    Returns {"source_id", "clips": {index: relpath}, "expected": n, "error": str|None}.
    """
    import av

    out_dir, source_id, path = job["out_dir"], job["source_id"], job["path"]
    clip_ms = job["clip_seconds"] * 1000
    result = {"source_id": source_id, "path": path, "clips": {}, "expected": None, "error": None, "size": None}
    writer, writer_index = None, None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise TrainingError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            result["size"] = [stream.codec_context.width, stream.codec_context.height]
            fps = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = Fraction(fps)
            duration_s = container.duration / 1_000_000 if container.duration else None
            if duration_s is None and stream.duration is not None:
                duration_s = float(stream.duration * stream.time_base)
            if not duration_s:
                raise TrainingError("unknown duration")
            expected = int(duration_s * 1000) // clip_ms
            result["expected"] = expected
            done = {i for i in range(expected) if os.path.exists(os.path.join(out_dir, clip_relpath(source_id, i)))}
            result["clips"] = {i: clip_relpath(source_id, i) for i in sorted(done)}
            if len(done) == expected:
                return result
            origin = stream.start_time or 0
            frame_s = 1 / float(fps)
            last_t = None
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float((frame.pts - origin) * stream.time_base)
                last_t = t
                index = int(math.floor(t * 1000 / clip_ms + 1e-9))
                if index != writer_index and writer is not None:
                    writer.finish()  # a frame of a later clip arrived: the previous one is whole
                    result["clips"][writer_index] = clip_relpath(source_id, writer_index)
                    writer, writer_index = None, None
                if index < 0 or index >= expected or index in done:
                    continue
                if writer is None:
                    writer = _ClipWriter(os.path.join(out_dir, clip_relpath(source_id, index)),
                                         job["clip_size"], fps, job["codec"])
                    writer_index = index
                writer.write(frame, t - index * clip_ms / 1000)
            if writer is not None:
                # At the end of the file the last clip is whole only if the frames reach its end.
                if last_t is not None and last_t + 1.5 * frame_s >= (writer_index + 1) * clip_ms / 1000:
                    writer.finish()
                    result["clips"][writer_index] = clip_relpath(source_id, writer_index)
                else:
                    writer.discard()
                writer = None
            if last_t is None or last_t + 1.5 * frame_s < expected * clip_ms / 1000:
                # A truncated MKV raises nothing, it just ends early (docs/toolchain.md).
                decoded = 0.0 if last_t is None else last_t
                result["error"] = f"video ends early: decoded {decoded:.1f} s of {duration_s:.1f} s"
    except (av.error.FFmpegError, ValueError, OSError, TrainingError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result["error"] = f"{type(exc).__name__}: {message}"
        if writer is not None:
            writer.discard()
    result["clips"] = dict(sorted(result["clips"].items()))
    return result


# ---------------------------------------------------------------- samples -----------------------

def build_samples(video: SourceVideo, clips: dict[int, str], expected_clips: int | None, class_map: ClassMap,
                  clip_seconds: int, skipped: Counter) -> list[dict]:
    """One sample per (clip, event); one background sample per clip without events.

    Events outside the whole clips (before 0, in the trailing partial clip) and events in clips
    that could not be cut (`expected_clips` None: the video could not even be opened) are
    counted in `skipped`, not silently lost.
    """
    clip_ms = clip_seconds * 1000
    by_clip = defaultdict(list)
    for event in video.events:
        index = event.time_ms // clip_ms if event.time_ms >= 0 else -1
        label = class_map.index(event.label)
        if label is None:
            continue  # counted (or refused) before cutting
        if index not in clips:
            outside = expected_clips is not None and (index < 0 or index >= expected_clips)
            skipped["outside_clips" if outside else "clip_missing"] += 1
            continue
        by_clip[index].append((event.time_ms - index * clip_ms, label, event.label))
    samples = []
    for index, relpath in clips.items():
        base = {"clip": relpath, "clip_seconds": float(clip_seconds), "video": video.path,
                "clip_start": index * clip_seconds}
        events = sorted(by_clip.get(index, []))
        if not events:
            events = [(clip_ms // 2, class_map.background_index, class_map.names[class_map.background_index])]
        for ms, label, name in events:
            samples.append({**base, "label": label, "label_name": name, "event_time": ms / 1000})
    return samples


def _check_splits(counts: dict, what: str, allow_empty: bool, why) -> None:
    """Refuse an empty train or valid split (what `fit` reads) unless allowed; `why(split)` says why."""
    empty = [split for split in REQUIRED_SPLITS if not counts.get(split)]
    if empty and not allow_empty:
        reasons = "; ".join(f"the {split} split would have no {what} ({why(split)})" for split in empty)
        raise TrainingError(f"{reasons}; fit needs train and valid: fix the data or split lists, or pass "
                            f"--allow-empty-splits")


def _why_no_videos(split: str, split_lists: dict | None, notes: dict) -> str:
    if not split_lists:
        return "the stable hash split put nothing in it: too few games or videos for --split-ratios"
    if split not in split_lists:
        return f"no --split {split}=FILE was given"
    missing = [g["game"] for g in notes.get("split_list_games_not_found", []) if g["split"] == split]
    if missing:
        return f"{split_lists[split]} lists {len(missing)} game(s) not found: {', '.join(missing[:3])}"
    return f"{split_lists[split]} lists no game"


def _cut_all(jobs: list[dict], workers: int, progress) -> dict:
    """source id -> cut_video's result; `progress(done, total, result)` after each video."""
    results = {}
    with contextlib.ExitStack() as stack:
        if workers == 1:
            finished = map(cut_video, jobs)
        else:
            finished = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(cut_video, jobs)
        for done, result in enumerate(finished, start=1):
            results[result["source_id"]] = result
            if progress is not None:
                progress(done, len(jobs), result)
    return results


def prepare(out_dir: str, *, soccernet_root: str | None = None, annotations: str | None = None,
            video_glob: str = "{half}_*.mkv", split_lists: dict[str, str] | None = None,
            split_ratios=(0.8, 0.1, 0.1), class_map: ClassMap | None = None, skip_unknown_labels: bool = False,
            clip_seconds: int = CLIP_SECONDS, clip_size: tuple[int, int] = CLIP_SIZE, workers: int | None = None,
            codec: str = "libx264", allow_empty_splits: bool = False, progress=None) -> dict:
    """Run the whole preparation; returns (and writes) the report. `progress(done, total, result)` is
    called as each video is finished."""
    if (soccernet_root is None) == (annotations is None):
        raise TrainingError("give exactly one of a SoccerNet folder or an annotation file")
    class_map = class_map or ClassMap.soccernet_v2()
    if soccernet_root is not None:
        videos, notes = discover_soccernet(soccernet_root, video_glob, split_lists, split_ratios)
    else:
        videos, notes = discover_simple(annotations, split_ratios)

    unknown = Counter(e.label for v in videos for e in v.events if class_map.index(e.label) is None)
    if unknown and not skip_unknown_labels:
        where = {}
        for video in videos:
            for event in video.events:
                where.setdefault(event.label, video.source_id)
        listed = ", ".join(f"{name!r} ({count}, e.g. in {where[name]})" for name, count in unknown.most_common())
        raise TrainingError(f"labels not in the class map: {listed}; pass --skip-unknown-labels "
                            f"to skip (and count) them, or --classes FILE")
    _check_splits(Counter(v.split for v in videos), "videos", allow_empty_splits,
                  lambda split: _why_no_videos(split, split_lists, notes))

    os.makedirs(out_dir, exist_ok=True)
    jobs = [{"out_dir": out_dir, "source_id": v.source_id, "path": v.path, "clip_seconds": clip_seconds,
             "clip_size": tuple(clip_size), "codec": _pick_codec(codec)} for v in videos]
    results = _cut_all(jobs, max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1)), progress)

    skipped = Counter()
    samples = {s: [] for s in SPLITS}
    failed, events_left_out, upscaled = [], [], []
    for video in videos:
        result = results[video.source_id]
        left_out = Counter()
        samples[video.split].extend(
            build_samples(video, result["clips"], result["expected"], class_map, clip_seconds, left_out))
        skipped.update(left_out)
        if result["error"]:
            failed.append({"video": video.path, "error": result["error"], "events": left_out["clip_missing"]})
        if left_out["outside_clips"]:
            events_left_out.append({"video": video.path, "events": left_out["outside_clips"]})
        size = result["size"]
        if size and (size[0] < clip_size[0] or size[1] < clip_size[1]):
            upscaled.append({"video": video.path, "size": size})
    _check_splits({s: len(rows) for s, rows in samples.items()}, "samples", allow_empty_splits,
                  lambda split: "its videos failed or hold no whole clip: " + ", ".join(
                      f["video"] for f in failed if any(v.path == f["video"] and v.split == split for v in videos))[:300])

    write_text(os.path.join(out_dir, "classes.json"), json.dumps(class_map.to_json(), indent=1) + "\n")
    write_text(os.path.join(out_dir, "classes.txt"), class_map.to_text())
    for split, rows in samples.items():
        write_text(os.path.join(out_dir, f"{split}.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    background = class_map.background_index
    report = {
        "class_names": list(class_map.names),
        "clip_seconds": clip_seconds,
        "clip_size": list(clip_size),
        "videos": len(videos),
        "videos_failed": failed,
        "videos_upscaled": upscaled,
        "clips": sum(len(r["clips"]) for r in results.values()),
        "samples": {s: len(rows) for s, rows in samples.items()},
        "background_samples": {s: sum(r["label"] == background for r in rows) for s, rows in samples.items()},
        "skipped_events": {"unknown_label": dict(unknown), "outside_clips": skipped["outside_clips"],
                           "clip_missing": skipped["clip_missing"]},
        "events_outside_clips": events_left_out,
        **notes,
    }
    write_text(os.path.join(out_dir, "prepare.json"), json.dumps(report, indent=1) + "\n")
    return report


def left_out_lines(report: dict, limit: int = 10) -> list[str]:
    """One line for every video, game and event `prepare` left out (at most `limit` per kind; the
    report holds them all), and for every video it had to upscale."""
    clip = report["clip_seconds"]
    kinds = [
        ("videos_failed", lambda f: f"{f['video']}: {f['error']}; {f['events']} event(s) in clips it could "
                                    f"not give left out"),
        ("games_without_video", lambda g: f"{g['game']}: no video matches --video-glob; the game and its "
                                          f"{g['events']} event(s) left out"),
        ("halves_without_video", lambda h: f"{h['game']}: no video of half {h['half']} matches --video-glob; "
                                           f"its {h['events']} event(s) left out"),
        ("games_not_in_split_lists", lambda g: f"{g['game']}: in no split list; the game and its {g['events']} "
                                               f"event(s) left out"),
        ("split_list_games_not_found", lambda g: f"{g['list']} lists {g['game']} for {g['split']}, but no such "
                                                 f"game (a folder with Labels-v2.json) is there"),
        ("events_outside_clips", lambda e: f"{e['video']}: {e['events']} event(s) outside its whole {clip}-s clips "
                                           f"(before 0 s or in the trailing partial clip) left out"),
        ("videos_upscaled", lambda u: f"{u['video']} is {u['size'][0]}x{u['size'][1]}: its clips are upscaled "
                                      f"to {report['clip_size'][0]}x{report['clip_size'][1]} (the reference cut "
                                      f"them from 1080p; use higher-resolution sources where you have them)"),
    ]
    lines = []
    for key, describe in kinds:
        items = report.get(key, [])
        lines += [describe(item) for item in items[:limit]]
        if len(items) > limit:
            lines.append(f"... and {len(items) - limit} more like that, all listed in prepare.json ({key})")
    for label, count in report["skipped_events"]["unknown_label"].items():
        lines.append(f"{count} event(s) labelled {label!r} left out (not a class: --skip-unknown-labels)")
    return lines
