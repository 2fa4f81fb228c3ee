"""`python -m tsf.demo` as a newcomer meets it: `--small` keeps to its own folder (the full demo's
bundle and features stay), and the commands it prints for "your own video" and for spotting run
as printed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import numpy as np
import pytest

from runtime_helpers import video
from tsf import demo
from tsf.runtime.spotting.classes import SOCCERNET_V2_ACTIONS

pytestmark = pytest.mark.paddle  # the demo exports its bundle with tsf-export


def printed_command(out: str, *words: str) -> list[str]:
    line = next(line.strip() for line in out.splitlines()
                if all(w in line for w in words) and not line.strip().startswith("#"))
    return shlex.split(line)


def test_small_demo_keeps_its_own_folder_and_its_next_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    full = tmp_path / "demo-out"  # what `make demo` (the reference-sized model) left
    full.mkdir()
    (full / "features.npy").write_bytes(b"the full demo's features")

    assert demo.main(["--small"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(full)) == ["features.npy"]
    assert (full / "features.npy").read_bytes() == b"the full demo's features"
    assert np.load(tmp_path / "demo-out-small" / "features.npy").shape == (6, 128)
    assert "this takes about 10 seconds" in out.splitlines()[0] and "no GPU figure" in out.splitlines()[1]

    # "your own video": the printed line with a real path in place of the placeholder
    command = [str(video("short_5s.mkv")) if word == "PATH/TO/YOUR_VIDEO.mkv" else word
               for word in printed_command(out, "YOUR_VIDEO", "--model")]
    assert command[-2:] == ["--model", "demo-out-small/bundle"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "my_features.npy").shape == (5, 128)

    # events from the demo's heads, with no class or background flags
    done = subprocess.run(printed_command(out, "tsf-spot"), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # one video given as --half1: no "no half 2" noise
    results = json.loads((tmp_path / "demo-out-small" / "results_spotting.json").read_text())
    assert results["predictions"] and {p["label"] for p in results["predictions"]} <= set(SOCCERNET_V2_ACTIONS)
