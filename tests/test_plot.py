"""tsf-plot: a non-empty PNG of the requested size, with the spotted events drawn on it."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

from runtime_helpers import run_cli
from spot_data import planted_logits, write_heads
from tsf.runtime.spotting.plot import main, soccernet_events

pytest.importorskip("matplotlib")

EVENTS = {"Goal": [(100, 12.0)], "Corner": [(50, 11.0), (300, 10.0)]}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (PNG spec, section 11.2.2)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def marker_red_pixels(path) -> int:
    """Pixels in the spotted-marker red (#ff3b30); viridis, the heatmap's map, has no such colour."""
    from matplotlib.image import imread

    rgb = (imread(path)[..., :3] * 255).astype(int)
    return int(np.sum((rgb[..., 0] > 200) & (rgb[..., 1] < 110) & (rgb[..., 2] < 110)))


@pytest.fixture
def game(tmp_path):
    folder = tmp_path / "league" / "season" / "game"
    write_heads(str(folder / "1_224p"), planted_logits(600, EVENTS))
    write_heads(str(folder / "2_224p"), planted_logits(540, {"Penalty": [(20, 12.0)]}, seed=1))
    return folder


def test_plot_renders_a_png_of_the_requested_size(game, tmp_path, capsys):
    out = tmp_path / "match.png"
    main([str(game), "-o", str(out), "--size", "900x600"])
    data = out.read_bytes()
    assert png_size(data) == (900, 600)
    assert len(data) > 10_000
    assert "4 spotted events" in capsys.readouterr().out
    # Same picture with no event confident enough: only the legend's marker is red.
    bare = tmp_path / "bare.png"
    main([str(game), "-o", str(bare), "--size", "900x600", "--min-confidence", "1.0"])
    assert "0 spotted events" in capsys.readouterr().out
    assert marker_red_pixels(out) > marker_red_pixels(bare) + 4 * 40


def test_plot_uses_results_and_labels_files(game, tmp_path, capsys):
    results = {"UrlLocal": "g", "predictions": [
        {"gameTime": "1 - 01:40", "label": "Goal", "position": "100500", "half": "1", "confidence": "0.9"}]}
    (game / "results_spotting.json").write_text(json.dumps(results))
    labels = tmp_path / "Labels-v2.json"
    labels.write_text(json.dumps({"annotations": [
        {"gameTime": "1 - 01:40", "label": "Goal", "position": "100000", "visibility": "visible"},
        {"gameTime": "2 - 00:20", "label": "Penalty", "visibility": "not shown"}]}))
    out = tmp_path / "one-half.png"
    main([str(game / "1_224p.heads.npz"), "-o", str(out), "--labels", str(labels), "--size", "640x360"])
    assert png_size(out.read_bytes()) == (640, 360)
    assert "1 half(s), 1 spotted events, 2 ground-truth events" in capsys.readouterr().out


def test_soccernet_events_reads_labels_and_results():
    events = soccernet_events({"annotations": [
        {"gameTime": "2 - 10:05", "label": "Foul", "visibility": "not shown"},
        {"gameTime": "1 - 00:01", "label": "Goal", "position": "1500"}]})
    assert [(e.half, e.seconds, e.label, e.visible) for e in events] == [(2, 605, "Foul", False), (1, 1.5, "Goal", True)]


def test_plot_errors_are_one_line(game, tmp_path, capsys, monkeypatch):
    out = tmp_path / "match.png"
    out.write_bytes(b"not mine")
    with pytest.raises(SystemExit) as exit_info:
        main([str(game), "-o", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ") and out.read_bytes() == b"not mine"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were missing
    with pytest.raises(SystemExit):
        main([str(game), "-o", str(tmp_path / "other.png")])
    err = capsys.readouterr().err
    assert err.startswith("error: tsf-plot needs matplotlib") and "Traceback" not in err
    with pytest.raises(SystemExit):
        main([str(game), "-o", str(tmp_path / "x.png"), "--size", "big"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def run_plot(capsys, args) -> tuple[int, str]:
    return run_cli(capsys, args, main)


def test_heads_without_rows_are_one_line(tmp_path, capsys):
    """A video shorter than one window gives heads with 0 rows (an IndexError before)."""
    heads = write_heads(str(tmp_path / "short"), np.zeros((0, 18), dtype=np.float32))
    code, err = run_plot(capsys, [heads, "-o", tmp_path / "short.png"])
    assert code == 2 and err == f"error: {tmp_path / 'short'}: the heads have no rows (a video shorter than one " \
                                "window?): nothing to plot\n"
    assert not (tmp_path / "short.png").exists()


def test_a_picture_too_big_to_draw_is_refused_before_drawing(game, tmp_path, capsys):
    """100000 x 100000 pixels would be a 40 GB canvas (a MemoryError before)."""
    code, err = run_plot(capsys, [game, "-o", tmp_path / "huge.png", "--size", "100000x100000"])
    assert code == 2 and err.count("\n") == 1 and "at most 8192 pixels a side" in err, err
    assert not (tmp_path / "huge.png").exists()


def test_a_heads_file_that_is_not_an_archive_is_one_line_without_numpy_advice(tmp_path, capsys):
    """NumPy reads a file that is not an archive as a pickle, and its refusal advises allow_pickle."""
    heads = write_heads(str(tmp_path / "game"), planted_logits(60, {}))
    with open(heads, "wb") as f:
        f.write(b"not an archive, just bytes\n" * 40)
    code, err = run_plot(capsys, [heads, "-o", tmp_path / "garbage.png"])
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'game'}") and heads in err
    assert "allow_pickle" not in err and not (tmp_path / "garbage.png").exists()


def test_only_png_names_are_written(game, tmp_path, capsys):
    """`-o out.xyz` wrote a PNG under the name .xyz."""
    code, err = run_plot(capsys, [game, "-o", tmp_path / "out.xyz"])
    assert code == 2 and err.count("\n") == 1 and "tsf-plot draws PNG pictures; give a name ending in .png" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "league"]
