"""Errors a user can cause. Each message is one line naming the problem; the commands print it and
exit 2 (runtime/console.py), and `extras.require` words a missing optional package the same way.
The helpers below word what goes into such a line.
"""

import stat


class TsfError(Exception):
    """Base of every expected, user-facing failure."""


class InputError(TsfError):
    """A video, weights file or bundle that cannot be used."""


class OutputError(TsfError):
    """An output that cannot be written, or exists already without --overwrite."""


class BackendError(TsfError):
    """No inference backend or decoder that can run what was asked for."""


class EngineUnavailable(BackendError):
    """This engine (or decoder) cannot run here; the message says why. With `auto`, the chooser
    logs the reason and tries the next one; asked for by name, it is the error."""


# A word of an error line longer than this (a path near PATH_MAX, 4 KB) keeps its start and end.
LONGEST_WORD = 200


def one_line(message) -> str:
    """The message on one line, each over-long word (a path) shortened in its middle."""
    return " ".join(_shortened(word) for word in str(message).split())


def _shortened(word: str) -> str:
    if len(word) <= LONGEST_WORD:
        return word
    keep = (LONGEST_WORD - 3) // 2
    return f"{word[:keep]}...{word[-keep:]}"


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (libraries append tracebacks and advice), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def file_kind(mode: int) -> str | None:
    """What a path that is not a regular file or a directory is, in words (None for those two)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = [(stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((words for test, words in kinds if test(mode)), "not a regular file")
