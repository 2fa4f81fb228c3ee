"""`tsf-export` as a user meets it: one-line errors with exit 2 and nothing written, the parity
line, class names, --overwrite, the default location. Runs the click command in-process
(`tsf.export.cli.main`), which is what the console script calls."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from reference.pdparams import reference_state, write_pdparams
from tsf.export.cli import main
from tsf.runtime.gpu import GPU_IMPORT_ERRORS
from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES
from tsf.runtime.bundle import load_bundle

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

SMALL_ARCH = "depth=2,width=128,heads=2,frames=4"


def run(capsys, *argv):
    try:
        code = main(list(map(str, argv)))
    except SystemExit as exit_:  # failures exit; success returns 0 for the console script
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def small_weights(tmp_path):
    return write_pdparams(reference_state(np.random.default_rng(4), depth=1, width=64, frames=2),
                          tmp_path / "weights.pdparams")


def test_export_prints_parity_and_writes_the_bundle(tmp_path, capsys, small_weights):
    code, out, err = run(capsys, small_weights, "-o", tmp_path / "b", "--no-engine", "--soccernet-classes")
    assert code == 0, err
    parity_lines = [line for line in out.splitlines() if line.startswith("parity (ONNX Runtime CPU vs Paddle")]
    assert len(parity_lines) == 1
    for name in ("features", "logits", "event_times"):
        assert f"{name} rel_l2" in parity_lines[0]
    bundle = load_bundle(tmp_path / "b")
    assert f"bundle {bundle.bundle_id} written to {tmp_path / 'b'}" in out
    assert bundle.class_names == SOCCERNET_V2_CLASS_NAMES
    assert bundle.architecture["width"] == 64 and bundle.architecture["heads"] == 1
    assert not bundle.random_init and "random" not in out


def test_class_names_file(tmp_path, capsys):
    names = [f"action {i}" for i in range(5)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n")
    code, _, err = run(capsys, "--random-init", "--arch", SMALL_ARCH + ",classes=5", "--classes",
                       tmp_path / "names.txt", "-o", tmp_path / "b", "--no-engine")
    assert code == 0, err
    assert list(load_bundle(tmp_path / "b").class_names) == names


def test_random_init_to_the_default_location(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    code, out, err = run(capsys, "--random-init", "--arch", SMALL_ARCH, "--no-engine")
    assert code == 0, err
    target = tmp_path / "home" / "bundles" / "default"
    bundle = load_bundle(target)
    # random weights have no class order to get wrong: SoccerNet's names, so tsf-spot takes the heads as they are
    assert bundle.random_init and bundle.class_names == SOCCERNET_V2_CLASS_NAMES
    assert "--random-init" in out and str(target) in out
    # a second run refuses to clobber it; --overwrite replaces it
    before = (target / "bundle.json").read_bytes()
    code, _, err = run(capsys, "--random-init", "--arch", SMALL_ARCH, "--no-engine", "--seed", "1")
    assert_one_line_error(code, err, str(target), "--overwrite")
    assert (target / "bundle.json").read_bytes() == before
    code, _, err = run(capsys, "--random-init", "--arch", SMALL_ARCH, "--no-engine", "--seed", "1", "--overwrite")
    assert code == 0, err
    assert load_bundle(target).meta["weights"]["seed"] == 1


def test_help_warns_about_pickles_and_names_the_default_location(capsys, monkeypatch, tmp_path):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "trust" in text and "pickle" in text
    assert "$TSF_HOME/bundles/default" in text and "XDG_DATA_HOME" in text


def _wrong_keys(tmp_path):
    state = reference_state(np.random.default_rng(1), depth=1, width=64, frames=2)
    del state["head.fc.bias"]
    state["head.fc.scale"] = np.ones(18, np.float32)
    return write_pdparams(state, tmp_path / "wrong_keys.pdparams")


def _wrong_shape(tmp_path):
    state = reference_state(np.random.default_rng(1), depth=1, width=64, frames=2)
    state["backbone.blocks.0.mlp.fc1.bias"] = np.zeros(100, np.float32)
    return write_pdparams(state, tmp_path / "wrong_shape.pdparams")


def _wrong_rank(key, value):
    def make(tmp_path):
        state = reference_state(np.random.default_rng(1), depth=1, width=64, frames=2)
        state[key] = value
        return write_pdparams(state, tmp_path / "wrong_rank.pdparams")
    return make


def _garbage(tmp_path):
    path = tmp_path / "garbage.pdparams"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    return path


def _not_a_dict(tmp_path):
    path = tmp_path / "list.pdparams"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    return path


@pytest.mark.parametrize("make_weights, fragments", [
    (lambda tmp: tmp / "missing.pdparams", ["not found", "missing.pdparams"]),
    (_garbage, ["not a .pdparams weights pickle"]),
    (_not_a_dict, ["not a .pdparams weights pickle"]),
    (_wrong_keys, ["missing head.fc.bias", "unexpected head.fc.scale"]),
    (_wrong_shape, ["backbone.blocks.0.mlp.fc1.bias", "expected [256]"]),
    (_wrong_rank("backbone.cls_token", np.float32(0.5)), ["backbone.cls_token has shape [], expected [1, 1, width]"]),
    (_wrong_rank("backbone.pos_embed", np.zeros(17, np.float32)),
     ["backbone.pos_embed has shape [17], expected [1, 1 + patches, width]"]),
    (_wrong_rank("head.fc.weight", np.zeros(18, np.float32)), ["head.fc.weight has shape [18], expected [width, classes]"]),
])
def test_bad_weights_exit_2_with_one_line_and_nothing_written(tmp_path, capsys, make_weights, fragments):
    weights = make_weights(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, weights, "-o", tmp_path / "out" / "bundle", "--no-engine")
    assert_one_line_error(code, err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("argv, fragments", [
    ([], ["WEIGHTS", "--random-init"]),
    (["--random-init", "w.pdparams"], ["--random-init takes no WEIGHTS"]),
    (["w.pdparams", "--arch", "depth=2"], ["--arch only applies to --random-init"]),
    (["--random-init", "--classes", "n.txt", "--soccernet-classes"], ["exclude each other"]),
    (["--random-init", "--precision", "int8"], ["int8"]),
    (["--random-init", "--max-batch", "0"], ["--max-batch"]),
    (["--random-init", "--arch", SMALL_ARCH, "--classes", "absent.txt"], ["class names file not found"]),
    (["--random-init", "--arch", SMALL_ARCH + ",classes=5", "--soccernet-classes"],
     ["18 class names from --soccernet-classes", "5 classes"]),
    (["--random-init", "--arch", "depth=2,hue=1"], ["unknown architecture key 'hue'"]),
    (["--random-init", "--no-such-option"], ["--no-such-option"]),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "-o", tmp_path / "bundle")
    assert_one_line_error(code, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_engine_required_without_tensorrt_is_an_error(tmp_path, capsys):
    """Here (no TensorRT or no GPU) `--engine` must fail cleanly; where both exist the GPU test
    in test_export_engine.py covers the build."""
    try:
        from tsf.export import tensorrt_engine
        if tensorrt_engine.engine_support() is None:
            pytest.skip("TensorRT and a GPU are usable here")
    except GPU_IMPORT_ERRORS:
        pass
    code, _, err = run(capsys, "--random-init", "--arch", SMALL_ARCH, "--engine", "-o", tmp_path / "b")
    assert_one_line_error(code, err, "TensorRT")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_leaves_nothing(tmp_path):
    """SIGINT while the bundle is being assembled (model loaded, conversion under way): exit 130,
    no bundle, no temporary directory."""
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-c", "from tsf.export.cli import main; main()", "--random-init",
               "--arch", "depth=1,width=64,frames=2", "--no-engine", "-o", str(tmp_path / "b")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not list(tmp_path.glob(".b.tmp-*")) and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_weights_with_nan_name_the_tensor(tmp_path, capsys):
    state = reference_state(np.random.default_rng(1), depth=1, width=64, frames=2)
    state["backbone.blocks.0.attn.qkv.weight"][3, 5] = np.nan
    state["head.fc.bias"][0] = np.inf
    weights = write_pdparams(state, tmp_path / "diverged.pdparams")
    code, _, err = run(capsys, weights, "-o", tmp_path / "b", "--no-engine")
    assert_one_line_error(code, err, "2 tensor(s) hold values that are not finite numbers",
                          "backbone.blocks.0.attn.qkv.weight (1 NaN, 0 inf)", "head.fc.bias (0 NaN, 1 inf)")
    assert "parity" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged.pdparams"]


def test_a_directory_is_named_as_one(tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    code, _, err = run(capsys, folder, "-o", tmp_path / "b", "--no-engine")
    assert_one_line_error(code, err, f"{folder} is a directory, not a .pdparams weights file")

    run_folder = tmp_path / "run"
    (run_folder / "checkpoints").mkdir(parents=True)
    (run_folder / "config.yaml").write_text("seed: 0\n")
    for suffix in ("pdparams", "pdopt", "json"):
        (run_folder / "checkpoints" / f"epoch_0002.{suffix}").write_text("")
    (run_folder / "best.pdparams").write_text("")
    code, _, err = run(capsys, run_folder, "-o", tmp_path / "b", "--no-engine")
    assert_one_line_error(code, err, f"{run_folder} is a tsf-train run folder, not a weights file: export "
                                     f"{run_folder / 'best.pdparams'} or "
                                     f"{run_folder / 'checkpoints' / 'epoch_0002.pdparams'}")
    assert not (tmp_path / "b").exists()
