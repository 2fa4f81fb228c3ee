"""Files written whole or not at all, with the mode a new file gets: what every writer of tsf shares.

Every file tsf leaves (output sets, results, pictures, bundle caches, training's files) is written
to a temporary name beside its final one, fsynced, and renamed into place, so a reader never sees
half a file. `tempfile.mkstemp` makes files readable by their owner only; the finished file gets
the mode `open()` would have given it (0666 less the umask), so a folder shared with a group or a
cluster is usable by others where the user's umask says so. Only the standard library is needed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError

TEMPORARY_SUFFIX = ".part"
TEMPORARY_RANDOM = 8  # characters tempfile.mkstemp puts between prefix and suffix
DEFAULT_NAME_MAX = 255


def umask() -> int:
    """The process's umask, read without changing it where Linux reports it (since 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back (not thread-safe, but nothing else is)
    os.umask(mask)
    return mask


def usual_file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask."""
    return 0o666 & ~umask()


def write_files_atomically(contents: dict[Path, bytes], overwrite: bool = False, remove_first=()) -> None:
    """All files or none: temporaries first, then (after removing `remove_first`) renames in order.

    A failure before the first rename removes the temporaries and changes nothing else; a failure
    after it removes every file of `contents`, so no half-replaced set is left. Directories made
    for the files are removed again on failure. New files get the usual mode (0666 less the umask).
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
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX)
            temporaries[path] = temporary
            os.chmod(temporary, usual_file_mode())  # mkstemp makes 0600 files
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        renaming = True
        for path in remove_first:
            current = path
            remove_if_present(path)
        for path, temporary in temporaries.items():
            current = path
            os.replace(temporary, path)
        fsync_directory(current.parent)
    except BaseException as e:
        for temporary in temporaries.values():
            remove_quietly(temporary)
        if renaming:
            for path in contents:
                remove_quietly(path)
        for directory in created:
            remove_directory_quietly(directory)
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


def os_error_reason(e: OSError) -> str:
    """An OSError's reason in words (Python's text for ENOSPC is the C library's, capitalised)."""
    return "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def temporary_prefix(path: Path) -> str:
    """`.NAME.`, with NAME cut so that the temporary's name fits where the output's own does."""
    room = DEFAULT_NAME_MAX - len(".." + TEMPORARY_SUFFIX) - TEMPORARY_RANDOM
    return "." + os.fsdecode(os.fsencode(path.name)[:room]) + "."


def remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_if_present(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_directory_quietly(directory: Path) -> None:
    try:
        directory.rmdir()  # only if still empty
    except OSError:
        pass


def fsync_directory(directory: Path) -> None:
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
