"""Errors a user can cause. Each message is one line naming the problem; the CLIs print it and exit 2."""

import signal
import sys
import threading
from pathlib import Path


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


def install_hint(extra: str) -> str:
    """The command that adds an extra to this installation. tsf installs from its checkout (the PyPI
    package named "tsf" is another project), so the hint names this checkout and this Python."""
    checkout = Path(__file__).resolve().parents[1]  # runtime/ in an editable install of a checkout
    source = str(checkout) if (checkout / "setup.cfg").is_file() else "PATH/TO/YOUR/TSF/CHECKOUT"
    return f"{sys.executable} -m pip install -e '{source}[{extra}]'"


class DeferredInterrupt:
    """Holds Ctrl-C during Paddle work until a safe point: `check()`, or the end of the block.

    Paddle calls back into Python from C++ (`Tensor.numpy()` runs NumPy's version check, for one);
    a KeyboardInterrupt raised inside such a callback escapes as a C++ exception and aborts the
    process ("terminate called after throwing pybind11::error_already_set"), skipping every
    cleanup. So the first Ctrl-C is only noted and raised at the next `check()`, where no C++
    frame is below; a second one raises at once, for a user who will not wait. A block that fails
    after Ctrl-C (a child process got the same signal, say) ends in KeyboardInterrupt; one that
    finishes has done the work Ctrl-C was meant to stop, so callers check at their last safe
    point. Outside the main thread, where signals cannot be handled, it does nothing.
    """

    def __init__(self):
        self.pressed = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def check(self):
        if self.pressed:
            raise KeyboardInterrupt

    def __exit__(self, exc_type, exc, tb):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self.pressed and exc_type is not None and exc_type is not KeyboardInterrupt:
            raise KeyboardInterrupt
        return False


def one_line(message) -> str:
    return " ".join(str(message).split())


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (libraries append tracebacks and advice), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(command, prog_name: str, argv=None, *, interrupted: str = "interrupted; no partial output was left"):
    """Run a click command as a console script, the way every tsf command reports failures.

    Usage errors, TsfErrors and OS errors (a full disk, a read-only directory) become one
    `error: ...` line and exit 2; Ctrl-C exits 130. click's standalone mode would print usage
    errors in its own multi-line form and let our errors out as tracebacks. Success returns 0
    (console scripts exit with it), failure exits. `argv` None means a console script: the
    process ends here (`end_process`).
    """
    import click

    try:
        status = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
        status = status if isinstance(status, int) else 0
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        status = 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"error: {interrupted}", err=True)
        status = 130
    except (TsfError, OSError) as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        status = 2
    if argv is None:
        end_process(status)
    if status != 0:
        sys.exit(status)
    return 0


def end_process(status: int):
    """Exit with `status`. After OpenVINO ran, the process leaves once Python's own exit handlers
    have run, without the C++ static destructors: OpenVINO's CPU plugin corrupts the heap in
    them and the process could abort after its outputs were written (docs/toolchain.md)."""
    if "openvino" in sys.modules:
        import atexit
        import os

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
