"""Optional dependencies: importing one, and the one command that installs what is missing.

tsf's optional parts (engines, plots, Ray, the exporter) come with the extras of its setup.cfg.
Every optional import goes through `require`, so a missing package is always the same one line:
what needs it, and the command that adds it to this installation. tsf installs from its checkout
(the PyPI package named "tsf" is another project), so the hint is built from where this copy of
tsf came from: an editable checkout, a local folder, or a git URL (pip's `direct_url.json`).
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import EngineUnavailable
from .gpu import GPU_IMPORT_ERRORS

DISTRIBUTION = "tsf"


def _direct_url() -> dict:
    """pip's record of where the installed tsf came from (PEP 610), or {}."""
    for distribution in metadata.distributions(name=DISTRIBUTION):
        try:
            text = distribution.read_text("direct_url.json")
        except OSError:
            continue
        if text:
            try:
                return json.loads(text)
            except ValueError:
                return {}
    return {}


def install_hint(extra: str) -> str:
    """The command that adds `extra` to this installation of tsf, with this Python."""
    python = sys.executable
    checkout = Path(__file__).resolve().parents[1]  # runtime/ inside a checkout (an editable install)
    if (checkout / "setup.cfg").is_file():
        return f"{python} -m pip install -e '{checkout}[{extra}]'"
    source = _direct_url()
    url = source.get("url", "")
    vcs = source.get("vcs_info")
    if isinstance(vcs, dict) and url:
        commit = vcs.get("commit_id")
        requirement = f"{DISTRIBUTION}[{extra}] @ {vcs.get('vcs', 'git')}+{url}{'@' + commit if commit else ''}"
        return f"{python} -m pip install '{requirement}'"
    if url.startswith("file://"):
        return f"{python} -m pip install '{unquote(urlparse(url).path)}[{extra}]'"
    return f"{python} -m pip install 'PATH/TO/YOUR/TSF/CHECKOUT[{extra}]'"


def require(module: str, extra: str, needed_for: str, error: type[Exception] = EngineUnavailable):
    """`import module`, or raise `error` naming what it is needed for and the command that installs it.

    GPU libraries raise OSError or RuntimeError on machines without their drivers (gpu.py); those
    count as "cannot be used here" too, with the library's own first line as the reason.
    """
    try:
        return importlib.import_module(module)
    except GPU_IMPORT_ERRORS as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = isinstance(e, ImportError)
        raise error(f"{needed_for} needs {module}, which is {'not installed' if missing else 'unusable here'} "
                    f"({reason}); {install_hint(extra)}") from None
