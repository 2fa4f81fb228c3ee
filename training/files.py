"""How training writes its files: whole or not at all, readable by others as the umask allows.

Every file `prepare` and `fit` leave (lists, clips, configs, checkpoints) is written to a temporary
file beside its final name and renamed into place once complete, so a reader (or a resumed run)
never sees half a file. `tempfile.mkstemp` creates its files readable by their owner only; the
finished file gets the mode `open()` would have given it (0666 less the umask), so a run folder on
a shared disk is usable by the group or everyone where the user's umask says so.

Dependencies: only the standard library (and the runtime's `usual_file_mode`, the one home of it).
"""

from __future__ import annotations

import os
import tempfile

from tsf.runtime.files import usual_file_mode


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
