"""What every tsf command does the same way: logging lines, one-line errors, Ctrl-C, and leaving.

Each console script is a click command run by `run_cli`; the exporter and the trainer hold Ctrl-C
during Paddle work with `DeferredInterrupt`. Only the standard library and click are needed.
"""

import logging
import signal
import sys
import threading

from .errors import TsfError, one_line
from .files import os_error_reason

log = logging.getLogger("tsf")


def setup_logging(quiet: bool = False) -> None:
    """tsf's messages as `info: ...` / `warning: ...` lines on stderr (warnings only with `quiet`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    handler.addFilter(_lowercase_level)
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _lowercase_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


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


def run_cli(command, prog_name: str, argv=None, *,
            interrupted: str = "interrupted; finished outputs are kept, and running it again redoes the rest"):
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
    except TsfError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        status = 2
    except OSError as exc:
        click.echo(f"error: {one_line(_os_error_line(exc))}", err=True)
        status = 2
    if argv is None:
        end_process(status)
    if status != 0:
        sys.exit(status)
    return 0


def _os_error_line(error: OSError) -> str:
    """An OSError as `path: reason`, without Python's `[Errno N]` and quotes."""
    reason = os_error_reason(error)
    reason = reason[:1].lower() + reason[1:]
    return reason if error.filename is None else f"{error.filename}: {reason}"


def end_process(status: int):
    """Exit with `status`. After OpenVINO ran, the process leaves once Python's own exit handlers
    have run, without the C++ static destructors: a race in their teardown (oneTBB's) could abort
    the process after its outputs were written (docs/toolchain.md). Ray workers leave through Ray's
    own exit path, deliberately not this one (docs/toolchain.md says why)."""
    if "openvino" in sys.modules:
        import atexit
        import os

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
