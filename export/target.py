"""Where a bundle goes, and what an export may replace there.

A bundle is built in a staging directory beside its target and moved into place only when whole.
A new target is the staging directory, renamed. An existing one (with `--overwrite`) must be empty
or hold a bundle, and there tsf replaces only what it can prove it wrote: bundle.json, the
runtime's `.tsf-verified.json`, every file bundle.json names with a sha256 that still matches, and
the engine files and timing caches it names under `engines/` (tsf's own folder). Everything else in
the folder (the weights being exported, notes, other folders) is kept and named; a new bundle file
that would land on a file tsf cannot vouch for is refused. The old files are first moved into a
hidden folder beside the target, so that a failure while moving puts them back.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from tsf.runtime.bundle import BUNDLE_FORMAT, BUNDLE_JSON, ENGINES_DIR, VERIFIED_CACHE, named_files, sha256_file
from tsf.runtime.errors import OutputError


def _relative_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _inside(name) -> bool:
    return isinstance(name, str) and bool(name) and not os.path.isabs(name) and ".." not in Path(name).parts


class BundleTarget:
    def __init__(self, path: Path, overwrite: bool):
        self.path = path
        self.overwrite = overwrite
        self.check()

    def exists(self) -> bool:
        return self.path.exists() or self.path.is_symlink()

    def check(self) -> None:
        if not self.exists():
            return
        if not self.overwrite:
            raise OutputError(f"{self.path} exists; pass --overwrite to replace it")
        if not self.path.is_dir() or (any(self.path.iterdir()) and not (self.path / BUNDLE_JSON).is_file()):
            raise OutputError(f"{self.path} exists and is not a tsf bundle; not replacing it")
        self._previous_meta()

    def _previous_meta(self) -> dict | None:
        json_path = self.path / BUNDLE_JSON
        if not json_path.is_file():
            return None
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise OutputError(f"{json_path} is not a bundle description tsf can read: not replacing {self.path}")
        return meta

    def owned(self) -> tuple[list[str], list[str]]:
        """(the files here tsf can prove it wrote, bundle.json first; files it names that have changed)."""
        meta = self._previous_meta()
        if meta is None:
            return [], []
        candidates = {BUNDLE_JSON: None, VERIFIED_CACHE: None, **named_files(meta)}
        engines = meta.get("engines")
        for entry in engines if isinstance(engines, list) else []:
            for key in ("file", "timing_cache"):
                name = entry.get(key) if isinstance(entry, dict) else None
                if _inside(name) and Path(name).parts[0] == ENGINES_DIR:
                    candidates.setdefault(name, None)
        owned, changed = [], []
        for name, digest in candidates.items():
            path = self.path / name
            if not _inside(name) or not path.is_file():
                continue
            if digest is not None and sha256_file(path) != digest:
                changed.append(name)
            else:
                owned.append(name)
        return owned, changed

    def commit(self, staging: Path, log) -> None:
        """Move the finished bundle in `staging` into place (see the module's docstring)."""
        self.check()  # again: something may have appeared while the bundle was built
        if not self.exists():
            os.rename(staging, self.path)
            return
        owned, changed = self.owned()
        new = _relative_files(staging)
        foreign = [name for name in new if (self.path / name).exists() and name not in owned]
        if foreign:
            raise OutputError(f"{self.path / foreign[0]} was not written by tsf (or has changed since): not "
                              f"replacing it; move it away, or export to another folder")
        engines_existed = (self.path / ENGINES_DIR).is_dir()
        aside = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
        moved_out = _move(self.path, aside, owned)
        moved_in: list[str] = []
        try:
            # bundle.json last: until it is in place, the folder is no bundle rather than a mixed one.
            _move(staging, self.path, [n for n in new if n != BUNDLE_JSON] + [BUNDLE_JSON], moved_in)
        except BaseException:
            _move(self.path, staging, list(reversed(moved_in)))
            _move(aside, self.path, moved_out)
            if not engines_existed:
                _remove_empty(self.path / ENGINES_DIR)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)  # only its emptied folders are left
        _remove_empty(self.path / ENGINES_DIR)
        ours = {Path(name).parts[0] for name in new}
        kept = sorted({p.name for p in self.path.iterdir()} - ours) + [
            name for name in _relative_files(self.path) if name.startswith(f"{ENGINES_DIR}/") and name not in new]
        if kept:
            log(f"kept what tsf did not write in {self.path}: {', '.join(kept)}")
        if changed:
            log(f"warning: left alone, changed since tsf wrote them: {', '.join(changed)}")


def _move(source: Path, destination: Path, names: list[str], moved: list[str] | None = None) -> list[str]:
    moved = [] if moved is None else moved
    for name in names:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source / name, destination / name)
        moved.append(name)
    return moved


def _remove_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # absent, or holds files
