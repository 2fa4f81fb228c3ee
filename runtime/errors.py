"""Errors a user can cause. Each message is one line naming the problem; the CLIs print it and exit 2."""


class TsfError(Exception):
    """Base of every expected, user-facing failure."""


class InputError(TsfError):
    """A video, weights file or bundle that cannot be used."""


class OutputError(TsfError):
    """An output that cannot be written, or exists already without --overwrite."""


class BackendError(TsfError):
    """No inference backend or decoder that can run what was asked for."""
