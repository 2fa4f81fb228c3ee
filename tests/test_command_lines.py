"""What every tsf command line shares: `--version`, answered the same way by each console script."""

from __future__ import annotations

import importlib

import pytest

from tsf import __version__

# console script -> the module whose `main` setup.cfg's entry point calls
COMMANDS = {
    "tsf-export": "tsf.export.cli",
    "tsf-extract": "tsf.runtime.cli",
    "tsf-spot": "tsf.runtime.spotting.cli",
    "tsf-plot": "tsf.runtime.spotting.plot",
    "tsf-train": "tsf.training.cli",
}


def test_every_console_script_is_listed():
    import configparser
    from pathlib import Path

    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].strip().splitlines())
    assert {name: target.split(":")[0] for name, target in scripts.items()} == COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_version(name, capsys):
    assert importlib.import_module(COMMANDS[name]).main(["--version"]) == 0
    assert capsys.readouterr().out == f"{name}, version {__version__}\n"


def test_install_hints_name_this_checkout_and_this_python():
    """The PyPI package called "tsf" is another project: hints never say `pip install 'tsf[...]'`."""
    import sys
    from pathlib import Path

    from tsf.runtime.extras import install_hint

    checkout = Path(__file__).resolve().parents[1]
    assert install_hint("plot") == f"{sys.executable} -m pip install -e '{checkout}[plot]'"
