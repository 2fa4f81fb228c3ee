"""Where SoccerNet users live: feature files their loaders read as they are, two rows per second,
row times as data, and the Python API exactly as the README shows it."""
from __future__ import annotations

import json
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from runtime_helpers import run_cli, small_bundle, video
from tsf.runtime.bundle import Window
from tsf.runtime.outputs import read_outputs
from tsf.runtime.sample import reference_indices

README = Path(__file__).resolve().parents[1] / "README.md"
GAME = "england_epl/2015-2016/2015-08-08 - 19-30 Chelsea 2 - 2 Swansea"


def soccernet_tree(root: Path) -> Path:
    """SoccerNet's layout: league/season/game/{1,2}_224p.mkv (links to generated clips)."""
    game = root / GAME
    game.mkdir(parents=True)
    os.link(video("h264_25fps.mkv"), game / "1_224p.mkv")  # 8 s
    os.link(video("short_5s.mkv"), game / "2_224p.mkv")  # 5 s
    return root


def soccernet_loader(path: str, game: str, features: str) -> tuple[np.ndarray, np.ndarray]:
    """What SoccerNet's feature datasets do (sn-spotting's TemporallyAwarePooling and CALF, ASTRA):
    np.load(os.path.join(path, game, "1_" + features)), reshaped to (-1, width), and "2_" likewise."""
    halves = []
    for half in ("1_", "2_"):
        feat = np.load(os.path.join(path, game, half + features))
        halves.append(feat.reshape(-1, feat.shape[-1]))
    return halves[0], halves[1]


def test_a_soccernet_tree_extracted_by_name_at_two_rows_per_second_reads_with_soccernets_own_line(tmp_path, capsys):
    data = soccernet_tree(tmp_path / "SoccerNet")
    features = tmp_path / "features"
    common = [data, "-o", features, "--model", small_bundle(4), "--device", "cpu", "-q"]
    code, err = run_cli(capsys, common + ["--name", "tsf", "--rate", "2", "--heads"])
    assert code == 0, err
    first, second = soccernet_loader(str(features), GAME, "tsf.npy")
    assert first.shape == (16, 128) and second.shape == (10, 128)  # ceil(8 x 2), ceil(5 x 2)
    meta = json.loads((features / GAME / "1_tsf.json").read_text())
    assert meta["rows_per_second"] == 2.0 and meta["window"]["stride_seconds"] == 0.5
    assert meta["row_centre_seconds"] == [(i + 0.5) / 2 for i in range(16)]
    assert read_outputs(features / GAME / "2_tsf.npy").rate == 2.0

    # A second feature set of the same game (another rate) sits beside the first; nothing collides.
    code, err = run_cli(capsys, common + ["--name", "tsf1"])
    assert code == 0, err
    assert sorted(p.name for p in (features / GAME).iterdir()) == sorted(
        f"{h}_{n}{s}" for h in "12" for n, suffixes in (("tsf", (".npy", ".json", ".heads.npz")),
                                                        ("tsf1", (".npy", ".json"))) for s in suffixes)
    assert soccernet_loader(str(features), GAME, "tsf1.npy")[0].shape == (8, 128)
    # Running the first again resumes (every set finished): the rate is part of what is compared.
    code, err = run_cli(capsys, common + ["--name", "tsf", "--rate", "2", "--heads"])
    assert code == 0 and not err
    code, err = run_cli(capsys, common + ["--name", "tsf", "--heads"])
    assert code == 2 and "stride_seconds': 0.5" in err and "--overwrite" in err


def test_a_name_with_a_single_output_file_is_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "x.npy", "--name", "tsf",
                                 "--model", small_bundle(4), "-q"])
    assert code == 2 and err.count("\n") == 1 and "--name names the feature files in a directory" in err
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "x.npy", "--rate", "0"])
    assert code == 2 and "--rate" in err


def test_reference_alignment_keeps_its_meaning_per_row_at_two_rows_per_second():
    """Row i covers [i / 2, i / 2 + 5] s: every second row is the reference's own row, index for index."""
    window = Window.reference(16)
    at_one = reference_indices(60, Fraction(25), 1500, window, Fraction(1))
    at_two = reference_indices(60, Fraction(25), 1500, window, Fraction(1, 2))
    assert len(at_one) == 55 and len(at_two) == 109 and at_two[::2] == at_one
    assert at_two[1] == tuple(int(v) for v in np.linspace(12, 137, 16).astype(int))  # 0.5 s: floor(12.5), floor(137.5)


def readme_python_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_runs_exactly_as_the_readme_shows_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_bundle(4), tmp_path / "demo-out" / "bundle")
    shutil.copy(video("h264_25fps.mkv"), tmp_path / "match.mkv")
    exec(compile(readme_python_block(), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["(16, 128)", "[0.25 0.75 1.25]", "(16, 18)"]
    assert sorted(p.name for p in tmp_path.glob("match_tsf*")) == ["match_tsf.heads.npz", "match_tsf.json",
                                                                   "match_tsf.npy"]


def test_the_python_api_reports_bad_input_as_tsf_errors(tmp_path):
    from tsf import Extractor, TsfError

    extractor = Extractor(small_bundle(4), device="cpu")
    with pytest.raises(TsfError, match="no such file"):
        extractor.extract(tmp_path / "missing.mkv")
    with pytest.raises(TypeError, match="unknown Extractor option"):
        Extractor(small_bundle(4), rows_per_second=2)
    with pytest.raises(TsfError, match="rows per second must be a whole number"):
        Extractor(small_bundle(4), rate=0)
