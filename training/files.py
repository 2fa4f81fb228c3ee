"""How training writes its files: whole or not at all, readable by others as the umask allows.

Every file `prepare` and `fit` leave (lists, clips, configs, checkpoints) is written to a temporary
file beside its final name and renamed into place once complete, so a reader (or a resumed run)
never sees half a file. `tempfile.mkstemp` creates its files readable by their owner only; the
finished file gets the mode `open()` would have given it (0666 less the umask), so a run folder on
a shared disk is usable by the group or everyone where the user's umask says so.

Dependencies: only the standard library.
"""

from __future__ import annotations

import os
import tempfile


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
    return 0o666 & ~umask()


def temporary_beside(path: str, suffix: str = "") -> str:
    """A new empty temporary file in `path`'s folder (named `.tmp-*`, so that it is never read as data)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    return tmp


def finish(tmp: str, path: str) -> None:
    """Give the temporary file the usual mode and rename it to `path`."""
    os.chmod(tmp, usual_file_mode())
    os.replace(tmp, path)


def write_atomically(path: str, write) -> None:
    """Run `write(temporary_path)`, then rename the result to `path`; on any failure remove it."""
    tmp = temporary_beside(path, os.path.splitext(path)[1])
    try:
        write(tmp)
        finish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomically(path, write)
