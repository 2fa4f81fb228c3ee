"""`tsf.export.export_bundle`: the ONNX is the reference function, the bundle is complete and
written atomically.

The exported ONNX is run in ONNX Runtime and compared with the independent float64 NumPy forward
(tests/reference/numpy_timesformer.py, written from docs/reference.md), not only with Paddle:
the export's own parity gate compares against the model it exported, this checks the contract.
Weights are synthetic reference-layout .pdparams (tests/reference/pdparams.py)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from reference.numpy_timesformer import forward as numpy_forward
from reference.pdparams import reference_state, write_pdparams
from tsf.export import export_bundle
from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES
from tsf.export import bundle as bundle_module
from tsf.export.onnx_export import OnnxExportError, export_onnx
from tsf.export.parity import ParityError, check_parity
from tsf.runtime.backends.precision import native_bf16
from tsf.runtime.fidelity import MAX_REL_L2, compare
from tsf.runtime.bundle import VERIFIED_CACHE, load_bundle
from tsf.runtime.errors import InputError, OutputError

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

SMALL = dict(depth=2, width=128, frames=4, classes=18)
SMALL_ARCH = "depth=2,width=128,heads=2,frames=4"
NAMES = ("features", "logits", "event_times")
CONTRACT_TOLERANCE = 1e-5  # rel L2, float32 ONNX Runtime vs float64 NumPy (as the model fidelity tests)


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def random_video(rng, batch, frames, size=224, cell=32):
    """Coarse random blocks plus pixel noise in [0, 1], so samples differ in large-scale content."""
    coarse = rng.random((batch, 3, frames, size // cell, size // cell), dtype=np.float32)
    coarse = coarse.repeat(cell, axis=-2).repeat(cell, axis=-1)
    return 0.6 * coarse + 0.4 * rng.random((batch, 3, frames, size, size), dtype=np.float32)


def ort_session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def leftovers(directory: Path, name: str) -> list[str]:
    """Temporary or old copies an export may have left beside `name`."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


def test_onnx_matches_the_numpy_reference(small_export, small_state):
    out, _ = small_export
    session = ort_session(out / "model.onnx")
    for batch in (1, 3):
        video = random_video(np.random.default_rng(batch), batch, SMALL["frames"])
        ours = session.run(list(NAMES), {"video": video})
        expected = numpy_forward(small_state, video)
        for name, a, e in zip(NAMES, ours, expected):
            assert a.shape == e.shape, name
            assert rel_l2(a, e) < CONTRACT_TOLERANCE, f"{name} batch {batch}: {rel_l2(a, e):.2e}"


def test_onnx_interface(small_export):
    out, _ = small_export
    path = out / "model.onnx"
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    assert [(i.name, dims(i)) for i in inputs] == [("video", ["batch", 3, 4, 224, 224])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("features", ["batch", 128]), ("logits", ["batch", 18]), ("event_times", ["batch", 18])]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for v in list(inputs) + list(model.graph.output))
    # opset 17 keeps LayerNorm as one op: norm1, temporal_norm1, norm2 per block + the final norm
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 3 * SMALL["depth"] + 1
    # no softmax over the classes and no view averaging: logits are raw (checked numerically above)

    # dynamic batch: sizes never traced; every row equals that sample run alone
    session = ort_session(path)
    video = random_video(np.random.default_rng(9), 5, 4)
    batched = session.run(list(NAMES), {"video": video})
    assert [a.shape[0] for a in batched] == [5, 5, 5]
    for i in (0, 4):
        alone = session.run(list(NAMES), {"video": video[i:i + 1]})
        for a, b in zip(batched, alone):
            np.testing.assert_allclose(a[i:i + 1], b, rtol=1e-5, atol=1e-5)


def test_bundle_json_is_complete(small_export):
    out, weights = small_export
    bundle = load_bundle(out)
    meta = json.loads((out / "bundle.json").read_text())
    assert bundle.meta == meta
    assert meta["format"] == "tsf-bundle" and meta["format_version"] == 1
    assert meta["architecture"] == {"frames": 4, "depth": 2, "width": 128, "heads": 2, "classes": 18,
                                    "image_size": 224, "patch_size": 16, "mlp_ratio": 4}
    assert meta["preprocessing"] == {
        "channel_order": "RGB", "value_scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1],
        "short_side": 224, "resize": "bilinear-half-pixel-no-antialias", "crop": "center",
        "crop_size": 224, "crop_offset_rounding": "half-even", "layout": "NCTHW"}
    assert meta["window"] == {"frames": 4, "seconds": 5.0, "stride_seconds": 1.0}
    assert meta["class_names"] == list(SOCCERNET_V2_CLASS_NAMES)
    assert meta["class_names"][17] == "background" and meta["class_names"][0] == "Penalty"
    assert meta["weights"] == {"file": "small.pdparams", "random_init": False,
                               "sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
                               "architecture_from": "tensor shapes, heads = width / 64"}
    onnx_sha = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert meta["onnx"]["sha256"] == onnx_sha and meta["onnx"]["file"] == "model.onnx"
    assert meta["onnx"]["opset"] == 17
    assert meta["bundle_id"] == bundle.bundle_id  # what the exporter writes is what the runtime computes
    assert set(meta["versions"]) == {"tsf", "paddle", "paddle2onnx", "onnx", "onnxruntime", "safetensors"}
    assert all(meta["versions"].values())
    assert meta["versions"]["onnx"] == onnx.__version__
    parity = meta["parity"]["onnxruntime-cpu"]
    assert parity["batch_sizes"] == [1, 3]
    for name in NAMES:
        assert parity[name]["rel_l2"] <= MAX_REL_L2
        assert parity[name]["cosine"] > 0.99999
        assert 0 <= parity[name]["max_abs"] < 1e-3
    assert meta["engines"] == []
    assert sorted(p.name for p in out.iterdir()) == [VERIFIED_CACHE, "bundle.json", "model.onnx", "weights.safetensors"]
    assert leftovers(out.parent, out.name) == []


def test_weights_safetensors_is_the_state_the_onnx_came_from(small_export, small_state):
    """Every tensor under its reference name and layout (docs/reference.md §2), float32, bit for bit."""
    from safetensors.numpy import load_file

    out, _ = small_export
    entry = load_bundle(out).meta["safetensors"]
    path = out / "weights.safetensors"
    assert entry == {"file": "weights.safetensors", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "size_bytes": path.stat().st_size, "tensors": len(small_state)}
    stored = load_file(str(path))
    assert sorted(stored) == sorted(small_state)
    for name, array in small_state.items():
        assert stored[name].dtype == np.float32 and stored[name].shape == array.shape, name
        np.testing.assert_array_equal(stored[name], array, err_msg=name)
    assert load_bundle(out).weights_path == path


def test_random_init_is_seeded_and_flagged(tmp_path):
    first = export_bundle(tmp_path / "a", random_init=True, arch=SMALL_ARCH, seed=5)
    meta = load_bundle(first).meta
    assert meta["weights"] == {"file": None, "sha256": None, "random_init": True, "seed": 5}
    assert load_bundle(first).random_init is True
    # random weights have no class order to get wrong: an 18-class one carries SoccerNet's names,
    # so tsf-spot and tsf-plot work on a demo's heads without flags
    assert meta["class_names"] == list(SOCCERNET_V2_CLASS_NAMES)
    # the same seed gives the same function (a demo bundle is reproducible)
    second = export_bundle(tmp_path / "b", random_init=True, arch=SMALL_ARCH, seed=5)
    video = random_video(np.random.default_rng(0), 1, 4)
    a = ort_session(first / "model.onnx").run(["features"], {"video": video})[0]
    b = ort_session(second / "model.onnx").run(["features"], {"video": video})[0]
    np.testing.assert_array_equal(a, b)
    assert not (first / ".random-init.pdparams").exists()


@pytest.fixture
def existing_bundle(tmp_path):
    out = export_bundle(tmp_path / "bundle", random_init=True, arch=SMALL_ARCH, seed=1)
    return out, (out / "bundle.json").read_bytes()


def test_existing_bundle_is_kept_without_overwrite(existing_bundle):
    out, before = existing_bundle
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=2)
    assert (out / "bundle.json").read_bytes() == before
    assert leftovers(out.parent, out.name) == []


def test_overwrite_replaces_a_bundle(existing_bundle):
    out, before = existing_bundle
    old_id = load_bundle(out).bundle_id
    export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=2, overwrite=True)
    assert load_bundle(out).bundle_id != old_id
    assert load_bundle(out).meta["weights"]["seed"] == 2
    assert leftovers(out.parent, out.name) == []


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_overwrite_never_replaces_something_that_is_not_a_bundle(tmp_path, kind):
    target = tmp_path / "precious"
    if kind == "directory":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    else:
        target.write_text("years of work")
    with pytest.raises(OutputError, match="not a tsf bundle"):
        export_bundle(target, random_init=True, arch=SMALL_ARCH, overwrite=True)
    assert (target / "thesis.tex" if kind == "directory" else target).read_text() == "years of work"


def test_default_location(tmp_path, monkeypatch):
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    out = export_bundle(random_init=True, arch=SMALL_ARCH)
    assert out == tmp_path / "home" / "bundles" / "default"
    assert load_bundle(out).random_init


@pytest.mark.parametrize("failure", [ParityError("gate failed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_export_leaves_nothing(tmp_path, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(bundle_module, "check_parity", fail)
    target = tmp_path / "new" / "nested" / "bundle"
    with pytest.raises(type(failure)):
        export_bundle(target, random_init=True, arch=SMALL_ARCH)
    assert list(tmp_path.iterdir()) == []  # not even the parent directories it created


def test_a_failed_replacement_keeps_the_old_bundle(existing_bundle, monkeypatch):
    out, before = existing_bundle
    monkeypatch.setattr(bundle_module, "check_parity", lambda figures: (_ for _ in ()).throw(ParityError("no")))
    with pytest.raises(ParityError):
        export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=3, overwrite=True)
    assert (out / "bundle.json").read_bytes() == before
    assert leftovers(out.parent, out.name) == []


def test_parity_gate():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(1000)
    exact = compare(reference, reference)
    assert exact == {"max_abs": 0.0, "rel_l2": 0.0, "cosine": pytest.approx(1.0)}  # one-dimensional: no rows
    noise = rng.standard_normal(1000)
    noisy = reference + 1e-3 * noise
    figures = compare(reference, noisy)
    assert figures["max_abs"] == pytest.approx(1e-3 * np.abs(noise).max())
    assert figures["rel_l2"] == pytest.approx(1e-3 * np.linalg.norm(noise) / np.linalg.norm(reference))
    assert compare(reference, -reference)["cosine"] == pytest.approx(-1.0)

    good = {name: {"max_abs": 0, "rel_l2": 5e-5, "cosine": 1} for name in NAMES}
    check_parity(good)
    for bad_value in (2e-4, float("nan")):
        bad = dict(good, logits={"max_abs": 1, "rel_l2": bad_value, "cosine": 0.9})
        with pytest.raises(ParityError, match="logits"):
            check_parity(bad)


def test_conversion_failure_is_one_line(tmp_path, small_state):
    """The child process refuses weights that do not fit the config; the parent reports one line."""
    weights = write_pdparams(small_state, tmp_path / "w.pdparams")
    config = {"frames": 4, "depth": 3, "width": 128, "heads": 2, "image_size": 224, "patch_size": 16,
              "num_classes": 18, "mlp_ratio": 4}
    with pytest.raises(OnnxExportError) as info:
        export_onnx(weights, config, tmp_path / "model.onnx")
    assert "\n" not in str(info.value)
    assert "backbone.blocks.2" in str(info.value)  # names the missing keys
    assert not (tmp_path / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pdparams"]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(), "give a WEIGHTS file (or --random-init"),
    (dict(random_init=True, weights="x.pdparams"), "--random-init takes no WEIGHTS file"),
    (dict(weights="x.pdparams", arch="depth=2"), "--arch only applies"),
    (dict(random_init=True, arch="depth=2,colour=3"), "unknown architecture key 'colour'"),
    (dict(random_init=True, arch="depth=two"), "not an integer"),
    (dict(random_init=True, arch="width=100,heads=3"), "invalid architecture"),
    (dict(random_init=True, arch=SMALL_ARCH, heads=4), "contradicts"),
    (dict(random_init=True, precision="int8"), "precision"),
    (dict(random_init=True, max_batch=0), "--max-batch"),
    (dict(random_init=True, arch=SMALL_ARCH, classes=["a", "b"]), "2 class names"),
    (dict(random_init=True, arch=SMALL_ARCH, classes=["a"] * 18), "repeats class names: a"),
    (dict(random_init=True, classes=["a"] * 18, soccernet_classes=True), "exclude each other"),
    (dict(weights="does/not/exist.pdparams"), "weights file not found"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, expected):
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        export_bundle(tmp_path / "out" / "bundle", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_strict_weights_errors_write_nothing(tmp_path, small_state):
    state = dict(small_state)
    del state["backbone.blocks.1.mlp.fc2.bias"]
    state["backbone.blocks.0.extra.weight"] = np.zeros(3, np.float32)
    weights = write_pdparams(state, tmp_path / "bad.pdparams")
    with pytest.raises(InputError) as info:
        export_bundle(tmp_path / "bundle", weights=weights)
    assert "backbone.blocks.1.mlp.fc2.bias" in str(info.value)
    assert "backbone.blocks.0.extra.weight" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pdparams"]


@pytest.mark.slow
@pytest.mark.full_model
def test_full_reference_sized_export(full_reference_bundle, full_reference_pdparams, full_reference_state):
    """The reference architecture (12 x 768, 16 frames, 18 classes): conversion, checker, parity
    gate at batch 1 and 3 inside the export, interface, metadata; then one clip against the NumPy
    reference. The export is the session fixture `full_reference_bundle`."""
    bundle = load_bundle(full_reference_bundle)
    meta = bundle.meta
    assert meta["architecture"] == {"frames": 16, "depth": 12, "width": 768, "heads": 12, "classes": 18,
                                    "image_size": 224, "patch_size": 16, "mlp_ratio": 4}
    assert meta["weights"]["sha256"] == hashlib.sha256(Path(full_reference_pdparams).read_bytes()).hexdigest()
    assert meta["safetensors"]["tensors"] == len(full_reference_state) == 227
    for name in NAMES:
        assert meta["parity"]["onnxruntime-cpu"][name]["rel_l2"] <= MAX_REL_L2
    print("full export:", json.dumps(meta["parity"]), f"onnx {meta['onnx']['size_bytes'] / 2**20:.0f} MiB")
    if native_bf16():  # the reference-sized model's BF16 gate, measured by the export on this CPU
        gate = meta["fidelity"]["openvino"]["bf16"]
        assert gate["passed"] and gate["min_row_cosine"] >= 0.999 and len(gate["row_cosines"]) == 6, gate

    onnx.checker.check_model(str(bundle.onnx_path))  # by path: no 2 GB protobuf limit
    session = ort_session(bundle.onnx_path)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("video", ["batch", 3, 16, 224, 224])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("features", ["batch", 768]), ("logits", ["batch", 18]), ("event_times", ["batch", 18])]

    video = random_video(np.random.default_rng(2), 1, 16)
    ours = session.run(list(NAMES), {"video": video})
    for name, a, e in zip(NAMES, ours, numpy_forward(full_reference_state, video)):
        assert rel_l2(a, e) < CONTRACT_TOLERANCE, f"{name}: {rel_l2(a, e):.2e}"


def test_missing_export_toolchain_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "paddle2onnx" else real_find_spec(name, *a))
    with pytest.raises(bundle_module.BackendError, match=r"needs paddle2onnx: .*python.* -m pip install -e '.*\[export\]'"):
        export_bundle(tmp_path / "bundle", random_init=True, arch=SMALL_ARCH)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_with_the_same_onnx_keeps_engines_of_other_gpus(existing_bundle):
    """Re-exporting the same weights on a second GPU machine must add, not drop, engines: the ONNX
    is byte-identical, so engines built elsewhere stay valid and are carried over."""
    out, _ = existing_bundle
    meta = json.loads((out / "bundle.json").read_text())
    (out / "engines").mkdir()
    (out / "engines" / "other-gpu.engine").write_bytes(b"plan for another GPU")
    (out / "engines" / "other-gpu.cache").write_bytes(b"its timing cache")
    entry = {"file": "engines/other-gpu.engine", "timing_cache": "engines/other-gpu.cache",
             "precision": "fp16", "gpu_name": "Another GPU", "compute_capability": "8.9",
             "tensorrt_version": "10.13.0", "min_batch": 1, "opt_batch": 16, "max_batch": 32}
    meta["engines"] = [entry]
    (out / "bundle.json").write_text(json.dumps(meta))

    export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=1, overwrite=True)  # same model
    bundle = load_bundle(out)
    assert bundle.engines == [entry]
    assert (out / "engines" / "other-gpu.engine").read_bytes() == b"plan for another GPU"
    assert (out / "engines" / "other-gpu.cache").read_bytes() == b"its timing cache"

    export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=2, overwrite=True)  # another model
    assert load_bundle(out).engines == []
    assert not (out / "engines").exists()


# -- what the model was trained as: the checkpoint's record, the run folder, or a named guess ---------

def _trained_like(tmp_path, record: bool, heads=2):
    """A width-64 model with `heads` heads (width / 64 would say 1) saved as tsf-train saves it."""
    import paddle

    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import ModelRecord, save_pdparams

    config = TimeSformerConfig(frames=2, depth=1, width=64, heads=heads, num_classes=3)
    paddle.seed(11)
    model = PPTimeSformer(config)
    model.eval()
    path = tmp_path / "epoch.pdparams"
    save_pdparams(model, path, ModelRecord(config, ("run", "jump", "background")) if record else None)
    return model, path


def _paddle_features(model, video):
    import paddle

    with paddle.no_grad():
        return model(paddle.to_tensor(video))[0].numpy()


def test_a_checkpoint_exports_as_it_was_trained(tmp_path):
    """heads 2 at width 64: the record, not width / 64, says what the model is; the ONNX computes the
    trained model's function."""
    model, weights = _trained_like(tmp_path, record=True)
    lines = []
    out = export_bundle(tmp_path / "bundle", weights=weights, log=lines.append)
    bundle = load_bundle(out)
    assert bundle.architecture["heads"] == 2
    assert bundle.class_names == ("run", "jump", "background")
    assert bundle.meta["weights"]["architecture_from"] == "the checkpoint's model record"
    assert not any(line.startswith("warning:") for line in lines), lines
    video = random_video(np.random.default_rng(4), 2, 2)
    onnx_features = ort_session(out / "model.onnx").run(["features"], {"video": video})[0]
    assert rel_l2(onnx_features, _paddle_features(model, video)) <= 1e-5

    with pytest.raises(InputError, match="--heads 1 contradicts the checkpoint's model record: the model was "
                                         "trained with 2 heads"):
        export_bundle(tmp_path / "other", weights=weights, heads=1)
    assert not (tmp_path / "other").exists()


def test_a_checkpoint_without_a_record_is_read_with_its_run_folder(tmp_path):
    """Checkpoints of runs made before checkpoints carried their record: the run's config.yaml."""
    from tsf.training.config import dump_config, load_config
    from tsf.training.labels import ClassMap

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model, weights = _trained_like(tmp_path, record=False)
    weights.rename(run / "checkpoints" / "epoch_0001.pdparams")
    (run / "checkpoints" / "epoch_0001.pdopt").write_bytes(b"")
    (run / "checkpoints" / "epoch_0001.json").write_text('{"state": {}}')
    settings = [f"{k}={v}" for k, v in {"data.dir": "x", "model.frames": 2, "model.depth": 1, "model.width": 64,
                                         "model.heads": 2, "optimizer.warmup_epochs": 1}.items()]
    (run / "config.yaml").write_text(dump_config(load_config(None, settings)))
    (run / "classes.json").write_text(json.dumps(ClassMap(("run", "jump", "background")).to_json()))

    out = export_bundle(tmp_path / "bundle", weights=run / "checkpoints" / "epoch_0001.pdparams")
    bundle = load_bundle(out)
    assert bundle.architecture["heads"] == 2 and bundle.class_names == ("run", "jump", "background")
    assert bundle.meta["weights"]["architecture_from"] == "the run folder's config.yaml"
    video = random_video(np.random.default_rng(5), 1, 2)
    onnx_features = ort_session(out / "model.onnx").run(["features"], {"video": video})[0]
    assert rel_l2(onnx_features, _paddle_features(model, video)) <= 1e-5


def test_the_head_count_guess_is_never_silent(tmp_path):
    _, weights = _trained_like(tmp_path, record=False, heads=1)
    lines = []
    out = export_bundle(tmp_path / "bundle", weights=weights, log=lines.append)
    assert load_bundle(out).architecture["heads"] == 1
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "does not record its head count" in warnings[0] and "--heads N" in warnings[0]
    assert load_bundle(out).meta["weights"]["architecture_from"] == "tensor shapes, heads = width / 64"


# -- what an export may replace, and who may read what it writes -------------------------------------

def test_overwrite_replaces_only_what_tsf_wrote(existing_bundle, tmp_path):
    """The bundle folder also holds the weights being exported, notes and a folder: all are kept."""
    out, _ = existing_bundle
    weights = write_pdparams(reference_state(np.random.default_rng(6), depth=1, width=64, frames=2),
                             out / "my_weights.pdparams")
    (out / "NOTES.txt").write_text("what I did")
    (out / "runs").mkdir()
    (out / "runs" / "log.txt").write_text("a log")
    old_onnx = (out / "model.onnx").read_bytes()
    lines = []
    export_bundle(out, weights=weights, overwrite=True, log=lines.append)
    bundle = load_bundle(out)
    assert bundle.architecture["depth"] == 1 and (out / "model.onnx").read_bytes() != old_onnx
    assert (out / "NOTES.txt").read_text() == "what I did" and (out / "runs" / "log.txt").read_text() == "a log"
    assert (out / "my_weights.pdparams").is_file()
    assert "kept what tsf did not write in" in lines[-1] and "NOTES.txt, my_weights.pdparams, runs" in lines[-1]
    assert leftovers(out.parent, out.name) == []


def test_overwrite_refuses_a_bundle_file_someone_changed(existing_bundle):
    out, before = existing_bundle
    (out / "model.onnx").write_bytes(b"my own model")
    with pytest.raises(OutputError, match=r"model.onnx was not written by tsf \(or has changed since\)"):
        export_bundle(out, random_init=True, arch=SMALL_ARCH, seed=2, overwrite=True)
    assert (out / "model.onnx").read_bytes() == b"my own model" and (out / "bundle.json").read_bytes() == before
    assert leftovers(out.parent, out.name) == []


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_bundle_files_are_readable_as_the_umask_allows(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        out = export_bundle(tmp_path / "bundle", random_init=True, arch="depth=1,width=64,frames=2")
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes == {".": folder_mode, **{name: file_mode for name in modes if name != "."}}, modes
    assert "weights.safetensors" in modes


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_another_user_loads_a_read_only_bundle(tmp_path):
    """As another user, without write permission: load_bundle reads (hashes) every file."""
    shared = Path(tempfile.mkdtemp(prefix="tsf-shared-"))
    try:
        shared.chmod(0o755)
        previous = os.umask(0o022)
        try:
            out = export_bundle(shared / "bundle", random_init=True, arch="depth=1,width=64,frames=2")
        finally:
            os.umask(previous)
        home = shared / "home"
        home.mkdir()
        os.chown(home, 65534, 65534)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become "nobody", load, report, leave without running the parent's cleanup
            status = 1
            try:
                os.close(read)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.environ["TSF_HOME"] = str(home)
                os.write(write, load_bundle(out).bundle_id.encode())
                status = 0
            except BaseException as exc:
                os.write(write, f"{type(exc).__name__}: {exc}".encode())
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as answer:
            message = answer.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, message
        assert message == load_bundle(out).bundle_id
    finally:
        shutil.rmtree(shared, ignore_errors=True)


SITECUSTOMIZE = '''
import atexit, os, sys


def _record_maps():
    with open(os.path.join(os.environ["TSF_TEST_MAPS"], f"{os.getpid()}.maps"), "w") as out:
        out.write(" ".join(sys.argv) + "\\n")
        with open("/proc/self/maps") as maps:
            out.write(maps.read())


if os.environ.get("TSF_TEST_MAPS"):
    atexit.register(_record_maps)
'''


def test_the_cpu_gates_run_where_paddle_is_not_loaded(tmp_path, monkeypatch):
    """Each child records the libraries it had mapped as it exits: the ONNX conversion's has Paddle's,
    the fidelity gate's has none of them (and runs ONNX Runtime's INT8 gate, and OpenVINO where BF16 is native)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    maps = tmp_path / "maps"
    maps.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TSF_TEST_MAPS", str(maps))
    out = export_bundle(tmp_path / "bundle", random_init=True, arch="depth=1,width=64,frames=2", int8=True)

    children = {}
    for path in maps.iterdir():
        argv, _, mapped = path.read_text().partition("\n")
        children[argv.split()[0]] = {line.split()[-1] for line in mapped.splitlines() if len(line.split()) >= 6}
    gate = next(libraries for argv, libraries in children.items() if argv.endswith("cpu_gate.py"))
    conversion = next(libraries for argv, libraries in children.items() if argv.endswith("onnx_export.py"))
    assert any(f"{os.sep}paddle{os.sep}" in library for library in conversion)  # the measure sees Paddle where it is
    assert not [library for library in gate if f"{os.sep}paddle{os.sep}" in library]
    assert any("onnxruntime" in library for library in gate)
    fidelity = load_bundle(out).meta["fidelity"]
    assert "int8" in fidelity["onnxruntime"]
    if "openvino" in fidelity:
        assert any("libopenvino" in library for library in gate)
