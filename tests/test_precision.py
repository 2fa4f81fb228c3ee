"""Reduced precision on the CPU: the `--precision` policy, each precision's fidelity gate on the real
engines (OpenVINO BF16, ONNX Runtime INT8), refusals, the INT8 model built at export or cached on
first use, and the thread count every CPU engine takes from the allocation.

The refusals are real: a bundle exported from weights that reduced precision cannot carry (a
residual stream riding on a large common offset, which BF16's 8-bit mantissa loses; one outlier
activation channel, which squeezes every other channel of INT8's per-tensor activation scale to
zero) fails its gates on the real engines, and tsf-extract runs fp32 with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from reference.pdparams import reference_state, write_pdparams
from runtime_helpers import cosine_rows, run_cli, small_bundle, video, write_bundle
from tsf.runtime import backends
from tsf.runtime.backends import precision
from tsf.runtime import fidelity
from tsf.runtime.backends.precision import cpu_precision, native_bf16
from tsf.runtime.fidelity import MIN_ROW_COSINE, FidelityGate, measure_cpu_gate
from tsf.runtime.bundle import load_bundle
from tsf.runtime.errors import BackendError, EngineUnavailable, InputError

needs_native_bf16 = pytest.mark.skipif(native_bf16() is None, reason="this CPU has no native BF16")
SMALL = dict(depth=2, width=128, frames=4)


@pytest.fixture
def tsf_log(monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("tsf"), "propagate", True)  # the CLI, if run before, turned it off
    caplog.set_level(logging.INFO, logger="tsf")
    return caplog


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    """A TSF_HOME of this test's own: nothing measured or built by another test is found there."""
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """A small random bundle exported with --int8 (and, here, its BF16 gate)."""
    from tsf.export import export_bundle

    return export_bundle(tmp_path_factory.mktemp("int8") / "bundle", random_init=True, arch=SMALL, seed=0, int8=True)


@pytest.fixture(scope="module")
def fragile_state():
    """Weights that neither BF16 nor INT8 can carry (see the module docstring)."""
    state = reference_state(np.random.default_rng(31), **SMALL)
    state["backbone.blocks.0.mlp.fc2.bias"][:] = 100.0  # every channel +100: LayerNorm removes it, BF16 cannot
    for block in (0, 1):
        # Channel 0 of the MLP input 100x larger, its weights 100x smaller: the same function in FP32,
        # and an INT8 activation scale 100x too coarse for the 127 other channels.
        state[f"backbone.blocks.{block}.norm2.weight"][0] = 100.0
        state[f"backbone.blocks.{block}.mlp.fc1.weight"][0, :] /= 100.0
    return state


@pytest.fixture(scope="module")
def fragile_bundle(tmp_path_factory, fragile_state):
    """The fragile weights exported with --int8 (the exporter measures both gates)."""
    from tsf.export import export_bundle

    root = tmp_path_factory.mktemp("fragile")
    lines: list[str] = []
    bundle = export_bundle(root / "bundle", weights=write_pdparams(fragile_state, root / "fragile.pdparams"),
                           int8=True, log=lines.append)
    return bundle, lines


@pytest.fixture(scope="module")
def fragile_runtime_bundle(tmp_path_factory, fragile_state):
    """The fragile weights as a bundle without gate records: the runtime measures them on first use."""
    return write_bundle(tmp_path_factory.mktemp("fragile-runtime") / "bundle", fragile_state, heads=2)


# ---------------------------------------------------------------- the policy

def _record(passed: bool, cosine: float = 0.99999) -> dict:
    return {"passed": passed, "min_row_cosine": cosine, "rel_l2": 5e-3}


def test_auto_takes_bf16_on_a_native_bf16_cpu_once_the_gate_passed(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("avx512_bf16", "avx512_vnni"))
    asked = []
    chosen, why = cpu_precision("openvino", ("bf16", "fp32"), "auto", 2,
                                lambda engine, p, threads: asked.append((engine, p)) or _record(True))
    assert (chosen, asked) == ("bf16", [("openvino", "bf16")])
    assert why.startswith("auto: native BF16 (avx512_bf16), fidelity gate passed: worst row cos 0.999990")


def test_auto_stays_fp32_without_native_bf16_and_never_takes_int8(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("avx512_vnni", "avx_vnni"))
    def nothing_to_measure(*args):
        pytest.fail("nothing to measure")

    assert cpu_precision("openvino", ("bf16", "fp32"), "auto", 2, nothing_to_measure) == (
        "fp32", "auto: this CPU has no native BF16 (avx512_bf16 or amx_bf16)")
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("amx_bf16", "avx512_bf16", "avx512_vnni"))
    assert cpu_precision("onnxruntime", ("fp32", "int8"), "auto", 2, nothing_to_measure) == (
        "fp32", "auto: onnxruntime offers no bf16 (int8 is opt-in)")
    assert cpu_precision("openvino", ("bf16", "fp32"), "fp32", 2, nothing_to_measure) == ("fp32", "asked for")
    # Without the bundle's gate no reduced precision runs.
    assert cpu_precision("openvino", ("bf16", "fp32"), "auto", 2, None) == (
        "fp32", "auto: no fidelity gate was given to allow bf16")


def test_a_failed_gate_is_refused_with_a_warning_and_fp32_runs(monkeypatch, tsf_log):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("avx512_bf16",))
    for engine, offered, asked in (("openvino", ("bf16", "fp32"), "auto"), ("onnxruntime", ("fp32", "int8"), "int8")):
        chosen, why = cpu_precision(engine, offered, asked, 2, lambda *a: _record(False, 0.9871))
        candidate = "bf16" if asked == "auto" else asked
        assert chosen == "fp32" and why.startswith(f"{candidate} refused, fidelity gate failed: worst row cos 0.987100")
        assert any(r.levelname == "WARNING" and f"{engine} {candidate} refused (fidelity gate failed" in r.getMessage()
                   for r in tsf_log.records)


def test_bf16_asked_for_on_a_cpu_without_it_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ())
    with pytest.raises(EngineUnavailable, match="no native BF16"):
        cpu_precision("openvino", ("bf16", "fp32"), "bf16", 2, None)
    with pytest.raises(BackendError) as error:
        backends.select_backend(load_bundle(small_bundle(4)), "auto", "cpu", "bf16")
    assert "openvino: this CPU has no native BF16" in str(error.value)
    assert "onnxruntime: onnxruntime on cpu runs fp32, int8, not bf16" in str(error.value)


def test_cpu_flags_are_the_kernel_s():
    try:
        flags_line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    present = set(flags_line.split(":", 1)[1].split())
    assert set(precision.cpu_flags()) == present & set(precision.PRECISION_FLAGS)


# ---------------------------------------------------------------- the gates, on the real engines

@needs_native_bf16
@pytest.mark.parametrize("engine,reduced", [("openvino", "bf16"), ("onnxruntime", "int8")])
def test_the_gate_measures_what_the_features_are(engine, reduced, tmp_path):
    """The gate's per-row cosines are those of the features tsf-extract writes for the same clip."""
    from tsf.runtime.extractor import ExtractSettings, Extractor
    from tsf.runtime.pitch_clip import draw_pitch_clip

    bundle = load_bundle(small_bundle(4))
    record = measure_cpu_gate(bundle, engine, reduced, threads=2)
    assert record["passed"] and record["min_row_cosine"] >= MIN_ROW_COSINE and len(record["row_cosines"]) == 6
    assert record["cpu_flags"] == list(precision.cpu_flags()) and record["reference"] == f"{engine} fp32"

    clip = tmp_path / "pitch.mkv"
    draw_pitch_clip(clip, fidelity.GATE_SECONDS, crf=0)
    features = {p: Extractor(bundle, ExtractSettings(backend=engine, device="cpu", precision=p)).extract(clip).features
                for p in ("fp32", reduced)}
    cosines = cosine_rows(features["fp32"], features[reduced])
    np.testing.assert_allclose(record["row_cosines"], cosines, rtol=0, atol=1e-6)
    assert 0 < record["rel_l2"] < 0.05  # reduced, and not exact


@needs_native_bf16
@pytest.mark.paddle
def test_export_records_each_gate_and_the_int8_model(int8_bundle):
    bundle = load_bundle(int8_bundle)
    entry = bundle.meta["quantized"]["int8"]
    assert entry["file"] == "model.int8.onnx" and entry["source_sha256"] == bundle.meta["onnx"]["sha256"]
    assert entry["sha256"] == hashlib.sha256(bundle.path(entry["file"]).read_bytes()).hexdigest()
    for engine, reduced in (("openvino", "bf16"), ("onnxruntime", "int8")):
        record = bundle.meta["fidelity"][engine][reduced]
        assert record["passed"] and record["min_row_cosine"] >= MIN_ROW_COSINE


@needs_native_bf16
@pytest.mark.paddle
def test_bundle_int8_model_runs_without_building_anything(int8_bundle, own_cache):
    bundle = load_bundle(int8_bundle)
    backend = backends.select_backend(bundle, "auto", "cpu", "int8", gate=FidelityGate(bundle))
    assert (backend.name, backend.precision) == ("onnxruntime", "int8")
    assert backend.precision_reason.startswith("asked for, fidelity gate passed")
    assert backend.describe()["model"] == str(Path(int8_bundle) / "model.int8.onnx")
    assert not own_cache.exists()  # the bundle's own records and model: nothing measured or cached


@needs_native_bf16
@pytest.mark.paddle
def test_fragile_weights_fail_both_gates_at_export(fragile_bundle):
    path, lines = fragile_bundle
    bundle = load_bundle(path)
    for engine, reduced in (("openvino", "bf16"), ("onnxruntime", "int8")):
        record = bundle.meta["fidelity"][engine][reduced]
        assert not record["passed"] and record["min_row_cosine"] < MIN_ROW_COSINE, record
        assert any(line.startswith(f"{engine} {reduced} fidelity gate") and "FAILED" in line for line in lines)
    # The refused INT8 model is not shipped; its record says why.
    assert "quantized" not in bundle.meta and not (Path(path) / "model.int8.onnx").exists()


@needs_native_bf16
@pytest.mark.parametrize("asked,engine", [("auto", "openvino"), ("int8", "onnxruntime")])
def test_tsf_extract_refuses_a_failed_precision_and_runs_fp32(asked, engine, fragile_runtime_bundle, tmp_path, capsys):
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", fragile_runtime_bundle,
                                 "--device", "cpu", "--precision", asked])
    assert code == 0, err
    reduced = "bf16" if asked == "auto" else asked
    assert f"warning: {engine} {reduced} refused (fidelity gate failed" in err
    meta = json.loads((tmp_path / "f.json").read_text())
    assert (meta["backend"], meta["precision"]) == (engine, "fp32")
    assert meta["precision_reason"].startswith(f"{reduced} refused, fidelity gate failed: worst row cos 0.")


def test_int8_on_first_use_is_built_gated_and_cached_outside_the_bundle(own_cache, monkeypatch, tsf_log):
    from tsf.runtime.backends import quantize

    bundle = load_bundle(small_bundle(4))
    before = sorted(p.name for p in bundle.dir.iterdir())
    backend = backends.select_backend(bundle, "onnxruntime", "cpu", "int8", gate=FidelityGate(bundle))
    assert (backend.precision, backend.precision_reason[:31]) == ("int8", "asked for, fidelity gate passed")
    cache = own_cache / "cache" / bundle.bundle_id
    assert backend.describe()["model"] == str(cache / "model.int8.onnx")
    records = json.loads((cache / "records.json").read_text())
    assert records["quantized"]["int8"]["source_sha256"] == bundle.meta["onnx"]["sha256"]
    assert records["fidelity"]["onnxruntime"]["int8"]["passed"]
    assert sorted(p.name for p in bundle.dir.iterdir()) == before  # bundles may be read-only
    messages = [r.getMessage() for r in tsf_log.records]
    assert any(m.startswith("building the INT8 model of bundle") for m in messages)
    assert any(m.startswith("measuring the int8 fidelity of onnxruntime") for m in messages)

    # The second time: the cached model and record, nothing rebuilt or measured.
    monkeypatch.setattr(quantize, "quantize_int8", lambda *a: pytest.fail("rebuilt"))
    monkeypatch.setattr(fidelity, "measure_cpu_gate", lambda *a: pytest.fail("measured again"))
    again = backends.select_backend(bundle, "onnxruntime", "cpu", "int8", gate=FidelityGate(bundle))
    assert again.describe()["model"] == str(cache / "model.int8.onnx")


def test_a_record_from_another_kind_of_cpu_is_measured_again(own_cache, monkeypatch):
    bundle = load_bundle(small_bundle(4))
    calls = []
    monkeypatch.setattr(fidelity, "measure_cpu_gate",
                        lambda *a: calls.append(a) or {**_record(True), "cpu_flags": list(precision.cpu_flags())})
    stored = {"fidelity": {"openvino": {"bf16": {**_record(True), "cpu_flags": ["amx_bf16", "amx_int8"]}}}}
    gate = FidelityGate(dataclasses.replace(bundle, meta={**bundle.meta, **stored}))
    gate("openvino", "bf16", 2)
    gate("openvino", "bf16", 2)  # now cached for this CPU
    assert len(calls) == 1


def test_an_unwritable_cache_is_a_warning_for_records_and_one_error_for_int8(tmp_path, monkeypatch, capsys, tsf_log):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("TSF_HOME", str(blocker))
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4),
                                 "--device", "cpu", "--precision", "int8", "-q"])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "cannot write the INT8 model to" in errors[0], err
    assert "tsf-export --int8" in errors[0] and not (tmp_path / "f.npy").exists()

    monkeypatch.setattr(logging.getLogger("tsf"), "propagate", True)  # the CLI turned it off
    monkeypatch.setattr(fidelity, "measure_cpu_gate", lambda *a: {**_record(True), "cpu_flags": []})
    FidelityGate(load_bundle(small_bundle(4)))("onnxruntime", "int8", 2)  # none in its bundle.json
    assert any("cannot keep the fidelity record" in r.getMessage() for r in tsf_log.records)


def test_a_bundle_naming_a_missing_or_outside_quantized_model_is_refused(tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle(4), copy)
    meta = json.loads((copy / "bundle.json").read_text())
    for file, message in (("model.int8.onnx", "model.int8.onnx (its int8 model) is missing"),
                          ("../model.onnx", "quantized.int8.file must be a file name inside the bundle")):
        (copy / "bundle.json").write_text(json.dumps({**meta, "quantized": {"int8": {"file": file}}}))
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_bundle(copy)


# ---------------------------------------------------------------- threads

def test_threads_come_from_the_request_then_slurm_then_the_affinity(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert backends.cpu_threads() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert backends.cpu_threads() == 5
    assert backends.cpu_threads(2) == 2


@pytest.mark.parametrize("engine,asked", [("openvino", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")])
def test_every_cpu_engine_runs_the_threads_it_is_given(engine, asked, monkeypatch):
    bundle = load_bundle(small_bundle(4))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})  # e.g. taskset -c 1, or a container
    backend = backends.select_backend(bundle, engine, "cpu", asked, gate=FidelityGate(bundle))
    assert backend.describe()["threads"] == 1 == _engine_threads(backend)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert _engine_threads(backends.select_backend(bundle, engine, "cpu", asked, gate=FidelityGate(bundle))) == 2


def _engine_threads(backend) -> int:
    """What the library itself says it was configured with."""
    if backend.name == "openvino":
        return int(backend.compiled.get_property("INFERENCE_NUM_THREADS"))
    return backend.session.get_session_options().intra_op_num_threads


def test_threads_option_reaches_the_engine(tmp_path, capsys):
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", small_bundle(4),
                                 "--device", "cpu", "--threads", "1", "-q"])
    assert code == 0, err
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["engine"]["threads"] == 1 and meta["settings"]["threads"] == 1
    # OpenVINO's own account of the arithmetic it runs agrees with the precision recorded.
    assert meta["engine"]["inference_precision"] == {"bf16": "bf16", "fp32": "f32"}[meta["precision"]]


def test_the_gate_clip_is_the_demo_clip():
    """One drawing: the demo imports the runtime's."""
    from tsf import demo
    from tsf.runtime import pitch_clip

    assert demo.draw_pitch_clip is pitch_clip.draw_pitch_clip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mkv"
        pitch_clip.draw_pitch_clip(path, 2)
        from tsf.runtime.probe import probe_video

        info = probe_video(path)
    assert (info.width, info.height, float(info.fps), float(info.duration)) == (456, 256, 25.0, 2.0)
