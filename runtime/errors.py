"""Errors a user can cause. Each message is one line naming the problem; the commands print it and
exit 2 (runtime/console.py), and `extras.require` words a missing optional package the same way.
"""


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


def one_line(message) -> str:
    return " ".join(str(message).split())


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (libraries append tracebacks and advice), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
