"""Installable the ways people install: the wheel built from this checkout, put into a fresh virtual
environment without network (its dependencies those of the test environment), runs tsf-extract."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime_helpers import small_bundle, video

CHECKOUT = Path(__file__).resolve().parents[1]
# Checkout folder -> the package it installs as (setup.cfg's package_dir).
PACKAGES = {"tsf": "tsf", "runtime": "tsf/runtime", "export": "tsf/export", "training": "tsf/training"}


def run(*command, cwd=None, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the checkout (building writes build/ and egg-info beside the sources)."""
    source = tmp_path_factory.mktemp("source") / "tsf"
    shutil.copytree(CHECKOUT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "demo-out*", ".device-check", "bench-out"))
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", dist, source)
    (built,) = dist.glob("tsf-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_packaged_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for folder, package in PACKAGES.items():
        for source in (CHECKOUT / folder).rglob("*.py"):
            assert f"{package}/{source.relative_to(CHECKOUT / folder).as_posix()}" in names, source
    assert "tsf/training/default_config.yaml" in names


@pytest.mark.slow
def test_the_wheel_installs_offline_and_runs(wheel, tmp_path):
    environment = tmp_path / "venv"
    run(sys.executable, "-m", "venv", environment)
    python = environment / "bin" / "python"
    # The dependencies already installed here stand in for an index: no network is needed.
    (Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
     / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", wheel)
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing is imported from its folders
    elsewhere.mkdir()
    where = run(python, "-c", "import tsf.runtime; print(tsf.runtime.__file__)", cwd=elsewhere).stdout.strip()
    assert Path(where).is_relative_to(environment), where
    env = {**os.environ, "TSF_HOME": str(tmp_path / "home")}
    run(environment / "bin" / "tsf-extract", video("short_5s.mkv"), "-o", elsewhere / "f.npy", "--model",
        small_bundle(4), "--device", "cpu", "-q", cwd=elsewhere, env=env)
    assert np.load(elsewhere / "f.npy").shape == (5, 128)
    assert json.loads((elsewhere / "f.json").read_text())["rows"] == 5
    for script in ("tsf-export", "tsf-spot", "tsf-plot", "tsf-train"):
        assert run(environment / "bin" / script, "--version", cwd=elsewhere).stdout.startswith(script)
    # The install hint of an installed wheel names what pip installed it from, never PyPI's "tsf".
    hint = run(python, "-c", "from tsf.runtime.extras import install_hint; print(install_hint('plot'))",
               cwd=elsewhere).stdout.strip()
    assert hint == f"{python} -m pip install '{wheel}[plot]'"
