"""Stage 7: an output set on disk, written so that it is either finished or visibly unfinished.

An output set is OUT.npy (features; OUT.pkl for the reference's format), OUT.json (metadata) and,
with `--heads`, OUT.heads.npz. The
JSON is the set's manifest: its "outputs" names every other file of the set with its size and
sha256 (and the Extractor adds the settings fingerprint). A set is finished when its JSON is
readable and every file it names exists and matches (docs/design.md, "Outputs").

Every file is written to a temporary name in its directory and fsynced; then the JSON is renamed
into place first and the other files after it. So whenever a run stops (Ctrl-C, SIGKILL, Slurm's
SIGTERM, a full disk), the set on disk is finished, absent, or debris: a manifest whose files are
missing or differ. Debris and stale temporaries are removed and redone, never an "exists" error;
files no manifest vouches for are replaced only with `--overwrite`. Only the standard library and
NumPy are needed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import sha256_file
from .errors import OutputError, file_kind

# The features file's name per format: plain float32 features, or the reference's dict of arrays
# saved by np.save as a pickle (docs/reference.md §5), named for what it is.
FEATURE_SUFFIXES = {"npy": ".npy", "reference": ".pkl"}
FORMATS = tuple(FEATURE_SUFFIXES)
MANIFEST = "outputs"  # OUT.json's key: kind -> {"file", "bytes", "sha256"} for every other file of the set

# What is on disk for an output set (`inspect_outputs`).
ABSENT, FINISHED, DEBRIS, FOREIGN = "absent", "finished", "debris", "foreign"

TEMPORARY_SUFFIX = ".part"
_TEMPORARY_RANDOM = 8  # characters tempfile.mkstemp puts between prefix and suffix
DEFAULT_NAME_MAX = 255


def output_paths(out: str | os.PathLike, heads: bool = False, fmt: str = "npy") -> dict[str, Path]:
    """features: OUT.npy (OUT.pkl for the reference format), metadata: OUT.json, heads: OUT.heads.npz
    (only with `heads`). OUT is `out` without a .npy or .pkl suffix."""
    out = Path(out)
    if out.suffix not in FEATURE_SUFFIXES.values():
        out = out.with_name(out.name + ".npy")
    paths = {"features": out.with_suffix(FEATURE_SUFFIXES[fmt]), "metadata": out.with_suffix(".json")}
    if heads:
        paths["heads"] = out.with_suffix(".heads.npz")
    return paths


def _every_output_path(out: str | os.PathLike) -> list[Path]:
    """Every file a set at `out` can have, whatever its format and heads."""
    return list(dict.fromkeys(p for fmt in FORMATS for p in output_paths(out, True, fmt).values()))


@dataclass(frozen=True)
class OutputSet:
    """What is on disk for one output set."""

    paths: dict[str, Path]  # every file the set may have, by kind
    state: str  # ABSENT, FINISHED, DEBRIS (a manifest that does not match its files) or FOREIGN
    metadata: dict | None = None  # the manifest JSON (FINISHED, DEBRIS)
    problem: str | None = None  # what makes it DEBRIS or FOREIGN, naming the file

    @property
    def kinds(self) -> set[str]:
        """The kinds of file the manifest vouches for (the JSON itself included)."""
        return {"metadata", *self.metadata[MANIFEST]} if self.metadata else set()


def inspect_outputs(out: str | os.PathLike) -> OutputSet:
    """The state of the set at `out` (reads and hashes the files its manifest names)."""
    paths = output_paths(out, heads=True)
    present = [p for p in _every_output_path(out) if os.path.lexists(p)]
    if not present:
        return OutputSet(paths, ABSENT)
    metadata = _read_manifest(paths["metadata"])
    if metadata is not None:  # the features file's name says its format
        named = metadata[MANIFEST].get("features")
        paths = next((candidate for candidate in (output_paths(out, heads=True, fmt=fmt) for fmt in FORMATS)
                      if isinstance(named, dict) and named.get("file") == candidate["features"].name), paths)
    if metadata is None:
        if paths["metadata"].is_file():
            problem = f"{paths['metadata']} exists and is not a tsf output manifest"
        else:
            problem = f"{present[0]} exists without the {paths['metadata'].name} that would vouch for it"
        return OutputSet(paths, FOREIGN, problem=problem)
    for kind, entry in metadata[MANIFEST].items():
        path = paths.get(kind)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return OutputSet(paths, FOREIGN, problem=f"{paths['metadata']} lists no checksums to check its set "
                                                     "against (written by an older tsf?)")
        if path is None or entry.get("file") != path.name:
            return OutputSet(paths, FOREIGN, problem=f"{paths['metadata']} describes another file as its {kind} "
                                                     f"({entry.get('file')!r})")
        if not path.is_file():
            return OutputSet(paths, DEBRIS, metadata, f"{path} is missing")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            return OutputSet(paths, DEBRIS, metadata, f"{path} does not match {paths['metadata'].name}")
    return OutputSet(paths, FINISHED, metadata)


def clear_unfinished(out: str | os.PathLike) -> OutputSet:
    """Remove what an interrupted run left of this set (debris, stale temporaries); the state after."""
    existing = inspect_outputs(out)
    for path in _every_output_path(out):
        for stale in _temporaries_of(path):
            _remove_quietly(stale)
    if existing.state == DEBRIS:
        for kind in existing.kinds:
            _remove_quietly(existing.paths[kind])
        existing = inspect_outputs(out)
    return existing


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(MANIFEST), dict):
        return None
    return metadata


def check_outputs(out: str | os.PathLike, heads: bool = False, fmt: str = "npy") -> dict[str, Path]:
    """Fail early (before any decoding) if the set's files or their temporaries cannot be created:
    a name too long for the file system, a directory that cannot be made or written, `out` naming
    a device or a pipe (`-o /dev/null`). Creates nothing."""
    kind = file_kind(os.stat(out).st_mode) if os.path.exists(out) else None
    if kind is not None:
        raise OutputError(f"cannot write an output set under {out}: it is {kind}, not a file name")
    paths = output_paths(out, heads, fmt)
    directory = paths["features"].parent
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write to {directory}: {existing} is not a directory")
    name_max = _name_max(existing)
    missing = directory.relative_to(existing).parts if existing != directory else ()
    for name in [*missing, *(p.name for p in paths.values())]:
        if len(os.fsencode(name)) > name_max:
            raise OutputError(f"cannot write {directory / name}: the name is {len(os.fsencode(name))} bytes, "
                              f"more than the {name_max} this file system allows")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to {directory}: {os_error_reason(e)}") from None
    return paths


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def os_error_reason(e: OSError) -> str:
    """An OSError's reason in words (Python's text for ENOSPC is the C library's, capitalised)."""
    return "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def _npy_bytes(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _heads_bytes(logits: np.ndarray, event_times: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, logits=logits, event_times=event_times)
    return buffer.getvalue()


def feature_payload(fmt: str, features, logits, event_times):
    """What the features file holds: float32 (N, width), or the reference's dict of float32 (N, 1, .) arrays."""
    features = np.asarray(features, dtype=np.float32)
    if fmt == "npy":
        return features
    if fmt == "reference":
        return {"features": features[:, None, :],
                "cls_score_all": np.asarray(logits, dtype=np.float32)[:, None, :],
                "event_times": np.asarray(event_times, dtype=np.float32)[:, None, :]}
    raise OutputError(f"unknown output format {fmt!r} ({' or '.join(FORMATS)})")


def feature_file_description(fmt: str, features, logits, event_times) -> dict:
    """OUT.json's `features`: the file as written (its format, what is in it, how to load it)."""
    payload = feature_payload(fmt, features, logits, event_times)
    if fmt == "npy":
        return {"format": fmt, "shape": list(payload.shape), "dtype": "float32", "load": "np.load(path)"}
    return {"format": fmt, "shape": list(payload["features"].shape), "dtype": "float32",
            "load": "np.load(path, allow_pickle=True).item()",
            "arrays": {name: list(array.shape) for name, array in payload.items()}}


def write_outputs(out: str | os.PathLike, *, features: np.ndarray, logits: np.ndarray, event_times: np.ndarray,
                  metadata: dict, heads: bool = False, fmt: str = "npy", replace: bool = False) -> dict[str, Path]:
    """Write the set; `fmt` "npy" = plain float32 [N, width], "reference" = the reference's pickled dict.

    `replace`: an existing set at `out` is replaced whole (its files that this set does not have
    are removed); without it, any existing file of the set is an error."""
    paths = output_paths(out, heads, fmt)
    payload = feature_payload(fmt, features, logits, event_times)
    data = {"features": _npy_bytes(payload, allow_pickle=fmt == "reference")}
    if heads:
        data["heads"] = _heads_bytes(np.asarray(logits, dtype=np.float32), np.asarray(event_times, dtype=np.float32))
    manifest = {kind: {"file": paths[kind].name, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                for kind, b in data.items()}
    contents = {paths["metadata"]: (json.dumps({**metadata, MANIFEST: manifest}, indent=2) + "\n").encode()}
    contents.update({paths[kind]: b for kind, b in reversed(data.items())})  # the manifest first, features last
    unwanted = [p for p in _every_output_path(out) if p not in paths.values()] if replace else []
    write_files_atomically(contents, overwrite=replace, remove_first=unwanted)
    return paths


def write_files_atomically(contents: dict[Path, bytes], overwrite: bool = False, remove_first=()) -> None:
    """All files or none: temporaries first, then (after removing `remove_first`) renames in order.

    A failure before the first rename removes the temporaries and changes nothing else; a failure
    after it removes every file of `contents`, so no half-replaced set is left. Directories made
    for the files are removed again on failure.
    """
    if not overwrite:
        existing = [p for p in contents if os.path.lexists(p)]
        if existing:
            raise OutputError(f"{existing[0]} exists (use --overwrite to replace it)")
    temporaries: dict[Path, str] = {}
    created: list[Path] = []
    renaming = False
    current = next(iter(contents))
    try:
        for path, data in contents.items():
            current = path
            created += make_directories(path.parent)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=TEMPORARY_SUFFIX)
            temporaries[path] = temporary
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        renaming = True
        for path in remove_first:
            current = path
            _remove_if_present(path)
        for path, temporary in temporaries.items():
            current = path
            os.replace(temporary, path)
        _fsync_directory(current.parent)
    except BaseException as e:
        for temporary in temporaries.values():
            _remove_quietly(temporary)
        if renaming:
            for path in contents:
                _remove_quietly(path)
        for directory in created:
            _remove_directory_quietly(directory)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {current}: {os_error_reason(e)}") from None
        raise


def make_directories(directory: Path) -> list[Path]:
    """mkdir -p, returning the directories it created, innermost first (the order to remove them in)."""
    created = []
    for parent in [directory, *directory.parents]:
        if parent.exists():
            break
        created.append(parent)
    for parent in reversed(created):
        try:
            parent.mkdir()
        except FileExistsError:
            pass  # made meanwhile by another process: not ours to remove
        except OSError as exc:
            raise OutputError(f"cannot create {parent}: {os_error_reason(exc)}") from None
    return created


def _temporary_prefix(path: Path) -> str:
    """`.NAME.`, with NAME cut so that the temporary's name fits where the output's own does."""
    room = DEFAULT_NAME_MAX - len(".." + TEMPORARY_SUFFIX) - _TEMPORARY_RANDOM
    return "." + os.fsdecode(os.fsencode(path.name)[:room]) + "."


def _temporaries_of(path: Path) -> list[Path]:
    prefix = _temporary_prefix(path)
    length = len(prefix) + _TEMPORARY_RANDOM + len(TEMPORARY_SUFFIX)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return [path.parent / n for n in names if n.startswith(prefix) and n.endswith(TEMPORARY_SUFFIX) and len(n) == length]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_if_present(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_directory_quietly(directory: Path) -> None:
    try:
        directory.rmdir()  # only if still empty
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    # Makes the renames themselves durable; not supported everywhere (e.g. some network file systems).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
