"""Stage 7: features and metadata on disk, atomically, never clobbering without `overwrite`.

Every file is written to a temporary file in its target directory, fsynced, then moved into place
with os.replace (atomic on POSIX within one file system). The features file goes last, so its
presence means the whole set is complete; an interruption (Ctrl-C, a full disk) removes the
temporary files and any sidecar already moved, leaving no partial output.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import OutputError

# The features file's name per format: plain float32 features, or the reference's dict of arrays
# saved by np.save as a pickle (docs/reference.md §5), named for what it is.
FEATURE_SUFFIXES = {"npy": ".npy", "reference": ".pkl"}
FORMATS = tuple(FEATURE_SUFFIXES)


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


def is_complete(out: str | os.PathLike, heads: bool = False, fmt: str = "npy") -> bool:
    """True when a previous run left every output of this set (the features file is written last)."""
    return all(p.is_file() for p in output_paths(out, heads, fmt).values())


def check_outputs(out: str | os.PathLike, heads: bool = False, overwrite: bool = False,
                  fmt: str = "npy") -> dict[str, Path]:
    """Fail early (before any decoding) if the outputs exist or their directory is not writable."""
    paths = output_paths(out, heads, fmt)
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise OutputError(f"{existing[0]} exists (use --overwrite to replace it)")
    directory = paths["features"].parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to {directory}: {e.strerror or e}") from None
    return paths


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
                  metadata: dict, heads: bool = False, fmt: str = "npy", overwrite: bool = False) -> dict[str, Path]:
    """Write the set; `fmt` "npy" = plain float32 [N, width], "reference" = the reference's pickled dict."""
    paths = output_paths(out, heads, fmt)
    payload = feature_payload(fmt, features, logits, event_times)
    feature_bytes = _npy_bytes(payload, allow_pickle=fmt == "reference")
    contents = {"metadata": (json.dumps(metadata, indent=2, sort_keys=False) + "\n").encode()}
    if heads:
        contents["heads"] = _heads_bytes(np.asarray(logits, dtype=np.float32),
                                         np.asarray(event_times, dtype=np.float32))
    contents["features"] = feature_bytes  # last: its presence marks a complete set
    write_files_atomically({paths[k]: v for k, v in contents.items()}, overwrite=overwrite)
    return paths


def write_files_atomically(contents: dict[Path, bytes], overwrite: bool = False) -> None:
    """All files or none: temporaries first, then renames in order, undone on any failure."""
    temporaries: dict[Path, str] = {}
    placed: list[Path] = []
    try:
        for path, data in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            temporaries[path] = temporary
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, temporary in temporaries.items():
            if not overwrite and path.exists():
                raise OutputError(f"{path} exists (use --overwrite to replace it)")
            os.replace(temporary, path)
            placed.append(path)
        _fsync_directory(next(iter(contents)).parent)
    except BaseException as e:
        for temporary in temporaries.values():
            _remove_quietly(temporary)
        for path in placed:
            _remove_quietly(path)
        if isinstance(e, OSError):
            reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise OutputError(f"cannot write {e.filename or next(iter(contents))}: {reason}") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
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
