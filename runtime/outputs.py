"""Stage 7, and the one room every reader and writer of tsf's outputs goes through: the output set.

An output set is, for a name OUT: the features file (`OUT.npy`, or for the reference's format
`OUT.pkl`: one entry of `FORMATS` each), `OUT.json` (the metadata, which is also the set's
manifest) and, with `--heads`, `OUT.heads.npz`. This module owns their names, how each is written
and read back, and the rules of resume (docs/design.md, "Outputs"):

- **Finished** means the manifest lists every other file of the set with its size and sha256 and
  each one matches. A finished set is kept when it was made from the same input (size, and a
  fingerprint of its content where the modification time differs) with the same settings
  (`fingerprint`); anything else is one error line saying what differs, and `--overwrite`
  replaces it.
- **tsf deletes only what it can prove it wrote.** A file counts as tsf's when its sha256 is the
  one a tsf manifest recorded for it: the set's own, or the one the manifest says this set
  replaces (`replaces`, recorded before any rename, so that a run killed between its renames
  leaves files that are all provably tsf's). Such debris is redone. A file tsf cannot vouch for
  (edited after it was written, or not named by any manifest) is never deleted or replaced
  without `--overwrite`; the error names it.
- Every file is written to a temporary name and fsynced, then the manifest is renamed into place
  first and the other files after it: a set on disk is always finished, absent, or provable debris.

`read_outputs` is how `tsf-spot`, `tsf-plot`, the learned heads and users read a finished set back:
features, heads and each row's time as data. Only the standard library and NumPy are needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bundle import sha256_file
from .errors import InputError, OutputError, file_kind
from .files import (TEMPORARY_RANDOM, TEMPORARY_SUFFIX, name_max, os_error_reason, remove_quietly, temporary_prefix,
                    write_files_atomically)

log = logging.getLogger("tsf")

METADATA_SUFFIX = ".json"
HEADS_SUFFIX = ".heads.npz"
MANIFEST = "outputs"  # OUT.json's key: kind -> {"file", "bytes", "sha256"} for every other file of the set
REPLACES = "replaces"  # OUT.json's key: file name -> sha256 of the file this set replaces (tsf's own)

# SoccerNet names a game's halves 1_... and 2_... (1_224p.mkv, 2_720p.mkv; its loaders read
# os.path.join(game, "1_" + features)): the half is the leading digit before "_" or ".".
_HALF_PREFIX = re.compile(r"^([12])(?=[_.])")
# A content fingerprint of the input: this many bytes at its start, middle and end, and its size.
INPUT_SAMPLE_BYTES = 64 * 1024


# ------------------------------------------------------------------------------------ formats

class NpyFeatures:
    """`OUT.npy`: float32 (N, width), plain NumPy, no pickle."""

    suffix = ".npy"
    help = "npy: OUT.npy, float32 (N, width)."

    def encode(self, features, logits, event_times) -> bytes:
        return _npy_bytes(np.asarray(features, dtype=np.float32))

    def describe(self, features, logits, event_times) -> dict:
        return {"format": "npy", "shape": list(np.shape(features)), "dtype": "float32", "load": "np.load(path)"}

    def decode(self, path: Path):
        """(features, (logits, event_times) or None) from the file."""
        return np.load(path, allow_pickle=False), None


class ReferenceFeatures:
    """`OUT.pkl`: the reference's dict of float32 (N, 1, .) arrays (`features`, `cls_score_all`,
    `event_times`) saved by np.save as a pickle (docs/reference.md §5), named for what it is."""

    suffix = ".pkl"
    help = ("reference: OUT.pkl, the reference's pickled dict (np.load(OUT.pkl, allow_pickle=True).item()), "
            "heads included.")

    def payload(self, features, logits, event_times) -> dict:
        return {"features": np.asarray(features, dtype=np.float32)[:, None, :],
                "cls_score_all": np.asarray(logits, dtype=np.float32)[:, None, :],
                "event_times": np.asarray(event_times, dtype=np.float32)[:, None, :]}

    def encode(self, features, logits, event_times) -> bytes:
        return _npy_bytes(self.payload(features, logits, event_times), allow_pickle=True)

    def describe(self, features, logits, event_times) -> dict:
        payload = self.payload(features, logits, event_times)
        return {"format": "reference", "shape": list(payload["features"].shape), "dtype": "float32",
                "load": "np.load(path, allow_pickle=True).item()",
                "arrays": {name: list(array.shape) for name, array in payload.items()}}

    def decode(self, path: Path):
        # tsf wrote this pickle itself (the manifest's sha256 matched before it is read).
        payload = np.load(path, allow_pickle=True).item()
        return payload["features"][:, 0], (payload["cls_score_all"][:, 0], payload["event_times"][:, 0])


# --format value -> how its features file is written and read. Adding a format is one entry here.
FORMATS = {"npy": NpyFeatures(), "reference": ReferenceFeatures()}
FEATURE_SUFFIXES = tuple(f.suffix for f in FORMATS.values())
OUTPUT_SUFFIXES = (*FEATURE_SUFFIXES, HEADS_SUFFIX, METADATA_SUFFIX)


def _npy_bytes(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _heads_bytes(logits, event_times) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, logits=np.asarray(logits, dtype=np.float32), event_times=np.asarray(event_times, dtype=np.float32))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- names

def set_base(path: str | os.PathLike) -> Path:
    """OUT for any file of a set (OUT.npy, OUT.pkl, OUT.json, OUT.heads.npz) or OUT itself."""
    path = Path(path)
    for suffix in OUTPUT_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[:-len(suffix)])
    return path


def set_name(video: Path, name: str | None = None) -> str:
    """The set name (OUT, without suffix) of a video's outputs.

    Without `name`, the video's own stem (`match.mkv` -> `match`). With it, SoccerNet's convention:
    a half `1_224p.mkv` -> `1_NAME`, so that SoccerNet's loaders read `features="NAME.npy"` and
    several feature sets of one game sit side by side; other videos -> `STEM_NAME`."""
    if name is None:
        return video.stem
    name = name[:-len(".npy")] if name.endswith(".npy") else name
    half = half_number(video.name)
    return f"{half}_{name}" if half is not None else f"{video.stem}_{name}"


def half_number(file_name: str) -> int | None:
    """1 or 2 from SoccerNet-style names (`1_224p.mkv`, `2_tsf.npy`, `1.heads.npz`), else None."""
    match = _HALF_PREFIX.match(os.path.basename(file_name))
    return int(match.group(1)) if match else None


def valid_set_name(name: str) -> str:
    """`--name` as given, or a one-line error: it becomes part of file names."""
    if not name or name.strip() != name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise InputError(f"--name {name!r}: give a plain name for the feature files (e.g. tsf), no folders or spaces "
                         "around it")
    return name


# ------------------------------------------------------------------------------- the input

@dataclass(frozen=True)
class InputIdentity:
    """What makes an input the same input: its size and a fingerprint of its content (sha256 of its
    first, middle and last 64 KiB). The modification time is kept as a shortcut: an input with
    the size and time recorded is taken as unchanged without reading it."""

    size_bytes: int
    mtime: str
    sample_sha256: str | None

    def recorded(self, path: Path) -> dict:
        return {"path": str(path), "size_bytes": self.size_bytes, "mtime": self.mtime,
                "sample_sha256": self.sample_sha256}


def identify_input(path: str | os.PathLike, sample: bool = True) -> InputIdentity:
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({os_error_reason(e)})") from None
    mtime = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()
    return InputIdentity(stat.st_size, mtime, _sample_sha256(path, stat.st_size) if sample else None)


def _sample_sha256(path: Path, size: int) -> str | None:
    if not path.is_file():
        return None  # a FIFO or device has no content to fingerprint; the probe says what it is
    digest = hashlib.sha256(str(size).encode())
    try:
        with open(path, "rb") as f:
            for offset in sorted({0, max(0, size // 2 - INPUT_SAMPLE_BYTES // 2), max(0, size - INPUT_SAMPLE_BYTES)}):
                f.seek(offset)
                digest.update(f.read(INPUT_SAMPLE_BYTES))
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({os_error_reason(e)})") from None
    return digest.hexdigest()


def input_differences(recorded: dict, path: Path) -> list[str]:
    """How the input at `path` differs from the one a set `recorded` (OUT.json's `input`)."""
    if not isinstance(recorded, dict):
        return ["the set records no input"]
    now = identify_input(path, sample=False)
    if recorded.get("size_bytes") != now.size_bytes:
        return [f"input size {recorded.get('size_bytes')} bytes there, {now.size_bytes} here"]
    if recorded.get("mtime") == now.mtime:
        return []
    if recorded.get("sample_sha256") is None:  # a set from a tsf that did not fingerprint its input
        return [f"input modified {recorded.get('mtime')} there, {now.mtime} here"]
    if identify_input(path).sample_sha256 != recorded["sample_sha256"]:
        return ["input content differs (same size)"]
    return []


# ----------------------------------------------------------------------------- what is on disk

ABSENT, FINISHED, DEBRIS, EDITED, FOREIGN = "absent", "finished", "debris", "edited", "foreign"


@dataclass(frozen=True)
class OnDisk:
    """What is on disk for one set (`OutputSet.inspect`)."""

    state: str  # ABSENT, FINISHED, DEBRIS (unfinished, every file provably tsf's), EDITED, FOREIGN
    metadata: dict | None = None  # the manifest (FINISHED, DEBRIS, EDITED)
    problem: str | None = None  # what makes it DEBRIS, EDITED or FOREIGN, naming the file
    ours: dict[Path, str] = field(default_factory=dict)  # present files provably tsf's -> their sha256
    strays: tuple[Path, ...] = ()  # present files of the set's names that no manifest vouches for

    @property
    def kinds(self) -> set[str]:
        """The kinds of file the manifest lists (the metadata itself included)."""
        return {"metadata", *self.metadata[MANIFEST]} if self.metadata else set()


class OutputSet:
    """The files of one output set, named OUT (`set_base` of whatever path is given)."""

    def __init__(self, path: str | os.PathLike):
        self.base = set_base(path)

    @property
    def metadata_path(self) -> Path:
        return self._named(METADATA_SUFFIX)

    def paths(self, fmt: str = "npy", heads: bool = False) -> dict[str, Path]:
        """kind -> file of a set written in `fmt`, with heads or not."""
        paths = {"features": self._named(FORMATS[fmt].suffix), "metadata": self.metadata_path}
        if heads:
            paths["heads"] = self._named(HEADS_SUFFIX)
        return paths

    def _named(self, suffix: str) -> Path:
        return self.base.with_name(self.base.name + suffix)

    def _candidates(self) -> dict[Path, str]:
        """Every file a set of this name can have, whatever its format: path -> kind."""
        found = {self._named(f.suffix): "features" for f in FORMATS.values()}
        return {**found, self._named(HEADS_SUFFIX): "heads", self.metadata_path: "metadata"}

    def inspect(self) -> OnDisk:
        """The set's state; hashes the files that are present (once: decisions are made on this)."""
        candidates = self._candidates()
        present = [p for p in candidates if os.path.lexists(p)]
        if not present:
            return OnDisk(ABSENT)
        manifest = _read_manifest(self.metadata_path)
        if manifest is None:
            if self.metadata_path in present:
                return OnDisk(FOREIGN, problem=f"{self.metadata_path} exists and is not a tsf output manifest",
                              strays=tuple(present))
            return OnDisk(FOREIGN, problem=f"{present[0]} exists without the {self.metadata_path.name} that would "
                                           "vouch for it", strays=tuple(present))
        listed: dict[Path, dict] = {}
        for kind, entry in manifest[MANIFEST].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                return OnDisk(FOREIGN, problem=f"{self.metadata_path} lists no checksums to check its set against "
                                               "(written by an older tsf?)", strays=tuple(present))
            path = self.base.parent / str(entry.get("file"))
            if candidates.get(path) != kind:
                return OnDisk(FOREIGN, problem=f"{self.metadata_path} describes another file as its {kind} "
                                               f"({entry.get('file')!r})", strays=tuple(present))
            listed[path] = entry
        replaced = manifest.get(REPLACES) if isinstance(manifest.get(REPLACES), dict) else {}
        ours, strays = {self.metadata_path: sha256_file(self.metadata_path)}, []
        state, problem = FINISHED, None
        for path in candidates:
            if path == self.metadata_path:
                continue
            entry = listed.get(path)
            if not os.path.lexists(path):
                if entry is not None and state == FINISHED:
                    state, problem = DEBRIS, f"{path} is missing"
                continue
            digest = sha256_file(path) if path.is_file() else None
            if entry is not None and digest == entry["sha256"] and path.stat().st_size == entry.get("bytes"):
                ours[path] = digest
            elif digest is not None and replaced.get(path.name) == digest:
                ours[path] = digest  # the file this set replaces, left by a run stopped between its renames
                if entry is not None and state == FINISHED:
                    state, problem = DEBRIS, f"{path} is the file this set replaces"
            elif entry is not None:
                state, problem = EDITED, (f"{path} was changed after tsf wrote it (it differs from what "
                                          f"{self.metadata_path.name} records)")
            else:
                strays.append(path)
        return OnDisk(state, manifest, problem, ours, tuple(strays))

    # ----------------------------------------------------------------------------- resume

    def decide(self, expected: "Expected", overwrite: bool) -> "Decision":
        """Whether this run skips the set, writes it, or may not touch it (an OutputError naming why).
        Decided before any decoding, on one inspection that the write then reuses."""
        on_disk = self.inspect()
        if overwrite or on_disk.state == ABSENT:
            return Decision("write", on_disk)
        if on_disk.state in (FOREIGN, EDITED):
            raise OutputError(f"{on_disk.problem}; use --overwrite to replace it")
        if on_disk.state == FINISHED:
            settings, source = expected.differences(on_disk.metadata)
            if settings or source:
                what = " and ".join(w for w, found in (("from another input", source), ("with other settings", settings))
                                    if found)
                features = self.base.parent / on_disk.metadata[MANIFEST]["features"]["file"]
                raise OutputError(f"{features} was extracted {what} ({'; '.join(source + settings)}); use --overwrite "
                                  "to replace it")
            if not expected.heads or "heads" in on_disk.kinds:
                return Decision("skip", on_disk)
            # finished with these settings but without the heads asked for: written again with them
        written = set(self.paths(expected.fmt, expected.heads).values())
        blocking = [p for p in on_disk.strays if p in written]
        if blocking:
            raise OutputError(f"{blocking[0]} exists and {self.metadata_path.name} does not vouch for it; "
                              "use --overwrite to replace it")
        return Decision("write", on_disk)

    # ------------------------------------------------------------------------------ write

    def check_writable(self, fmt: str, heads: bool) -> None:
        """Fail early (before any decoding) if the set's files or their temporaries cannot be created:
        a name the file system cannot take, a directory that cannot be made or written, OUT naming
        a device or a pipe (`-o /dev/null`). Creates nothing."""
        kind = file_kind(os.stat(self.base).st_mode) if os.path.exists(self.base) else None
        if kind is not None:
            raise OutputError(f"cannot write an output set under {self.base}: it is {kind}, not a file name")
        paths = self.paths(fmt, heads)
        directory = self.base.parent
        existing = directory
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"cannot write to {directory}: {existing} is not a directory")
        longest = name_max(existing)
        missing = directory.relative_to(existing).parts if existing != directory else ()
        for name in [*missing, *(p.name for p in paths.values())]:
            if len(os.fsencode(name)) > longest:
                raise OutputError(f"cannot write {directory / name}: the name is {len(os.fsencode(name))} bytes, "
                                  f"more than the {longest} this file system allows")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            raise OutputError(f"cannot write to {directory}: {os_error_reason(e)}") from None

    def write(self, decision: "Decision", *, features, logits, event_times, metadata: dict, fmt: str = "npy",
              heads: bool = False) -> dict[str, Path]:
        """Write the set as `decision` allows: its files atomically, with the manifest naming them and
        the files of the set it replaces; then remove what the old set had and this one has not,
        where that is provably tsf's. Features or heads that are not finite are refused."""
        _refuse_nonfinite(self.base, features=features,
                          **({"logits": logits, "event_times": event_times} if logits is not None else {}))
        paths = self.paths(fmt, heads)
        data = {"features": FORMATS[fmt].encode(features, logits, event_times)}
        if heads:
            data["heads"] = _heads_bytes(logits, event_times)
        manifest = {kind: {"file": paths[kind].name, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                    for kind, b in data.items()}
        on_disk = decision.on_disk
        replaces = {p.name: digest for p, digest in on_disk.ours.items() if p != self.metadata_path}
        document = {**metadata, MANIFEST: manifest}
        if replaces:
            document[REPLACES] = replaces
        contents = {paths["metadata"]: (json.dumps(document, indent=2) + "\n").encode()}
        contents.update({paths[kind]: b for kind, b in reversed(data.items())})  # the manifest first, features last
        leftovers = [p for p in on_disk.ours if p not in contents]
        kept = [p for p in on_disk.strays if p not in contents]
        for stale in self._temporaries():
            remove_quietly(stale)
        write_files_atomically(contents, overwrite=True, remove_first=leftovers)
        if kept:
            log.warning("%s: left %s alone (no tsf manifest vouches for %s)", self.base,
                        ", ".join(p.name for p in kept), "it" if len(kept) == 1 else "them")
        return paths

    def _temporaries(self) -> list[Path]:
        """Temporaries an interrupted run left for this set's files (tsf's own naming)."""
        found = []
        for path in self._candidates():
            prefix = temporary_prefix(path)
            length = len(prefix) + TEMPORARY_RANDOM + len(TEMPORARY_SUFFIX)
            try:
                names = os.listdir(path.parent)
            except OSError:
                return []
            found += [path.parent / n for n in names
                      if n.startswith(prefix) and n.endswith(TEMPORARY_SUFFIX) and len(n) == length]
        return found


def write_outputs(path: str | os.PathLike, *, features, metadata: dict, logits=None, event_times=None,
                  fmt: str = "npy", overwrite: bool = False) -> dict[str, Path]:
    """Write a set made elsewhere than tsf-extract (a synthetic season, a conversion) under the same
    rules: `metadata` must say what readers need (`alignment`, `window`, `row_centre_seconds`,
    `bundle` with `id` and `class_names`); heads are written when `logits` is given. An existing
    set is replaced only with `overwrite` or when it is provable debris."""
    output_set = OutputSet(path)
    on_disk = output_set.inspect()
    if on_disk.state not in (ABSENT, DEBRIS) and not overwrite:
        raise OutputError(f"{output_set.base} exists ({on_disk.state}); use --overwrite to replace it")
    return output_set.write(Decision("write", on_disk), features=features, logits=logits, event_times=event_times,
                            metadata=metadata, fmt=fmt, heads=logits is not None)


@dataclass(frozen=True)
class Decision:
    action: str  # "skip" or "write"
    on_disk: OnDisk

    @property
    def skip(self) -> bool:
        return self.action == "skip"

    @property
    def rows(self) -> int | None:
        """The rows of the finished set being kept (for the run report)."""
        metadata = self.on_disk.metadata or {}
        rows = metadata.get("rows")
        return rows if isinstance(rows, int) else None


@dataclass(frozen=True)
class Expected:
    """What this run would write for one job, to compare with a finished set."""

    video: Path
    fingerprint: dict  # the settings that shape the numbers, without the precision
    precisions: frozenset[str]  # precisions this run accepts in a finished set
    fmt: str
    heads: bool
    allow_partial: bool

    def differences(self, metadata: dict) -> tuple[list[str], list[str]]:
        """(how the settings differ, how the input differs) from those a finished set records."""
        recorded = metadata.get("fingerprint") or {}
        found = [f"{key} {recorded.get(key)!r} there, {value!r} here" for key, value in self.fingerprint.items()
                 if recorded.get(key) != value]
        if recorded.get("precision") not in self.precisions:
            found.append(f"precision {recorded.get('precision')!r} there, "
                         f"{' or '.join(repr(p) for p in sorted(self.precisions))} here")
        if metadata.get("partial") and not self.allow_partial:
            found.append("partial there (--allow-partial), whole here")
        return found, input_differences(metadata.get("input"), self.video)


def fingerprint(bundle_id: str, window, stride_seconds, alignment: str, fmt: str, precision: str | None) -> dict:
    """The settings that shape the numbers of a set (OUT.json `fingerprint`); resume keeps a set
    only when they are this run's. Engine, device, batch size, threads and decoders change how fast
    the numbers come, not which numbers (within the precision), and are left out."""
    found = {"bundle_id": bundle_id, "alignment": alignment, "format": fmt,
             "window": {"frames": window.frames, "seconds": float(window.seconds),
                        "stride_seconds": float(stride_seconds)}}
    return found if precision is None else {**found, "precision": precision}


def metadata_document(result, bundle, backend, settings: dict, set_fingerprint: dict,
                      video_input: InputIdentity) -> dict:
    """`OUT.json` without its manifest: what produced the features, from which input, with which
    settings, and each row's time as data. `result` is the pipeline's Result of one video."""
    from .. import __version__

    info, plan, stats, partial = result.info, result.plan, result.stats, result.stats.partial
    return {
        "tsf_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": video_input.recorded(info.path),
        "video": {
            "container": info.container,
            "stream_index": info.stream_index,
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
            "fps": float(info.fps),
            "fps_exact": _fraction_text(info.fps),
            "start_time_seconds": float(info.start_time),
            "duration_seconds": float(info.duration),
            "rotation_degrees": info.rotation,
            "frames_decoded": stats.frames_decoded,
            "frames_preprocessed": stats.frames_preprocessed,
            "peak_frames_buffered": stats.peak_buffered_frames,
        },
        "rows": result.rows,
        "rows_per_second": float(plan.rate),
        "alignment": plan.align,
        "window": {"seconds": float(plan.window_seconds), "stride_seconds": float(plan.stride_seconds),
                   "frames": plan.frames_per_window},
        "frame_time_rule": plan.frame_time_rule,
        # Each row's window centre, in seconds from the start of the video; the row covers the
        # window's length around it (readers need not re-derive the alignment rule).
        "row_centre_seconds": [round(float(c), 6) for c in plan.row_centres[:result.rows]],
        "features": FORMATS[set_fingerprint["format"]].describe(result.features, result.logits, result.event_times),
        "bundle": {
            "id": bundle.bundle_id,
            "path": str(Path(bundle.dir).resolve()),
            "weights_sha256": bundle.meta.get("weights", {}).get("sha256"),
            "random_init": bundle.random_init,
            "class_names": list(bundle.class_names),
        },
        "settings": settings,
        "fingerprint": set_fingerprint,
        "backend": backend.name,
        "device": str(backend.device),
        "precision": backend.precision,
        "precision_reason": backend.precision_reason,
        "engine": backend.describe(),
        "decoder": result.decoder,
        "decoders": result.decoders,
        "batch_size": result.batch_size,
        "timings": result.timings,
        "partial": partial is not None,
        "partial_reason": str(partial) if partial is not None else None,
        "decoded_until_seconds": float(partial.at_time) if partial is not None else None,
    }


def _fraction_text(value) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)


def _refuse_nonfinite(base: Path, **arrays) -> None:
    """NaN or inf never pass silently: a broken model or weights, named with the rows."""
    for name, array in arrays.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(array, dtype=np.float32)).all(axis=tuple(range(1, np.ndim(array)))))
        if bad.size:
            rows = ", ".join(str(r) for r in bad[:5]) + (f" and {bad.size - 5} more" if bad.size > 5 else "")
            raise OutputError(f"{base}: the model's {name} are not finite (NaN or inf) in rows {rows}; nothing was "
                              "written (broken weights or engine?)")


# ------------------------------------------------------------------------------- reading back

@dataclass
class FinishedOutputs:
    """A finished output set, read back (`read_outputs`)."""

    base: Path
    metadata: dict
    features: np.ndarray  # float32 (N, width)
    logits: np.ndarray | None  # float32 (N, classes), or None without heads
    event_times: np.ndarray | None
    row_times: np.ndarray  # float64 (N,): each row's window centre, in seconds from the start of the video

    @property
    def rows(self) -> int:
        return len(self.features)

    @property
    def width(self) -> int:
        return self.features.shape[1]

    @property
    def rate(self) -> float:
        """Rows per second."""
        return 1.0 / float(self.metadata["window"]["stride_seconds"])

    @property
    def window_seconds(self) -> float:
        return float(self.metadata["window"]["seconds"])

    @property
    def alignment(self) -> str:
        return str(self.metadata["alignment"])

    @property
    def bundle_id(self) -> str:
        return str(self.metadata["bundle"]["id"])

    @property
    def class_names(self) -> tuple[str, ...]:
        names = (self.metadata.get("bundle") or {}).get("class_names")
        if not isinstance(names, list):
            raise InputError(f"{self.metadata_path} records no class names; pass --classes FILE (one name per line)")
        return tuple(str(n) for n in names)

    @property
    def metadata_path(self) -> Path:
        return OutputSet(self.base).metadata_path

    @property
    def has_heads(self) -> bool:
        return self.logits is not None


def read_outputs(path: str | os.PathLike) -> FinishedOutputs:
    """A finished set (any of its file names, or OUT), verified against its manifest; every
    problem is one InputError line naming the file."""
    output_set = OutputSet(path)
    on_disk = output_set.inspect()
    if on_disk.state == ABSENT:
        raise InputError(f"{output_set.base}: no tsf output set there ({output_set.metadata_path.name} and its files "
                         "are missing)")
    if on_disk.state != FINISHED:
        raise InputError(f"{output_set.base} is not a finished tsf output set: {on_disk.problem}")
    metadata = on_disk.metadata
    files = {kind: output_set.base.parent / entry["file"] for kind, entry in metadata[MANIFEST].items()}
    fmt = next((name for name, f in FORMATS.items() if files["features"].name.endswith(f.suffix)), None)
    try:
        features, heads = FORMATS[fmt].decode(files["features"])
        if "heads" in files:
            with np.load(files["heads"]) as npz:
                heads = (npz["logits"], npz["event_times"])
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        raise InputError(f"{output_set.base}: its files cannot be read ({e})") from None
    features = np.asarray(features, dtype=np.float32)
    logits, event_times = (np.asarray(a, dtype=np.float32) for a in heads) if heads else (None, None)
    try:
        _refuse_nonfinite(output_set.base, features=features,
                          **({"logits": logits, "event_times": event_times} if heads else {}))
    except OutputError as e:
        raise InputError(str(e).replace("nothing was written", "re-extract it")) from None
    return FinishedOutputs(output_set.base, metadata, features, logits, event_times,
                           _row_times(metadata, len(features)))


def _row_times(metadata: dict, rows: int) -> np.ndarray:
    times = metadata.get("row_centre_seconds")
    if isinstance(times, list) and len(times) == rows:
        return np.asarray(times, dtype=np.float64)
    # A set from a tsf that did not record its rows' times: the same rule the planner uses.
    from .sample import row_centres

    window = metadata.get("window", {})
    centres = row_centres(str(metadata.get("alignment")), rows, window.get("stride_seconds", 1.0),
                          window.get("seconds", 5.0))
    return np.asarray([float(c) for c in centres], dtype=np.float64)


def game_halves(folder: str | os.PathLike, name: str | None = None) -> dict[int, Path]:
    """{half: set base} of SoccerNet-style sets (1_..., 2_...) directly inside a game folder: those
    named `1_NAME`/`2_NAME` when `name` is given, else every set whose name starts with the half.
    Two sets for one half are an error naming both."""
    folder = Path(folder)
    halves: dict[int, Path] = {}
    for metadata in sorted(folder.glob("*" + METADATA_SUFFIX)):
        base = set_base(metadata)
        half = half_number(base.name)
        if half is None or (name is not None and base.name != f"{half}_{name}"):
            continue
        if _read_manifest(metadata) is None:
            continue
        if half in halves:
            raise InputError(f"{folder} holds two output sets for half {half}: {halves[half].name} and {base.name} "
                             "(say which with the feature name)")
        halves[half] = base
    return halves


def find_game_folders(root: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Every folder under `root` (root included) that holds a half's output set, sorted."""
    return sorted(Path(folder) for folder, _, _ in os.walk(root) if game_halves(folder, name))


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(MANIFEST), dict):
        return None
    return metadata
