"""The pure-Python logic of the GPU modules, on the CPU with small fakes.

TensorRT, CuPy and PyNvVideoCodec are not installed here; what is tested is everything around
them that decides something: engine names and matching, batch splitting, the parity gate's
decisions, the import guards, and the FP16 ONNX that FP16 strongly typed builds use, run in ONNX
Runtime.
The control flow of build_engine, build_plan, EngineRunner and NvdecDecoder runs against
stand-ins (ONNX Runtime for a built engine, a recording tensorrt module for the builder, and
tests/gpu_stand_ins.py's models of CuPy, PyNvVideoCodec 2.2.4 and TensorRT's execution context,
which keep the real signatures and stream semantics): they test our decisions, not TensorRT or
NVDEC. The GPU runs are in tests/gpu/ (`gpu`).
"""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tsf.export.tensorrt_engine import EngineParityError, build_engine, engine_support, parity_gate
from tsf.runtime.bundle import Bundle, Preprocessing, Window
from tsf.runtime.errors import BackendError
from tsf.runtime.gpu import CPU
from tsf.runtime.fidelity import MAX_REL_L2, MIN_ROW_COSINE, compare
from tsf.runtime.backends.tensorrt import (
    GpuIdentity,
    batch_slices,
    engine_file_stem,
    engine_mismatch,
    find_engine,
    gpu_slug,
    tensorrt_support,
)

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")
L4 = GpuIdentity("NVIDIA L4", "8.9")
NAMES = ("features", "logits", "event_times")


def entry_for(gpu: GpuIdentity, version: str, precision: str = "fp16", max_batch: int = 32) -> dict:
    stem = engine_file_stem(precision, gpu, version, max_batch)
    return {"file": f"engines/{stem}.engine", "timing_cache": f"engines/{stem}.cache", "precision": precision,
            "gpu_name": gpu.name, "compute_capability": gpu.compute_capability, "tensorrt_version": version,
            "min_batch": 1, "opt_batch": 16, "max_batch": max_batch}



def test_engine_names_carry_everything_an_engine_is_tied_to():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_slug("NVIDIA GeForce RTX 4090 (Laptop)") == "nvidia-geforce-rtx-4090-laptop"
    stem = engine_file_stem("fp16", H100, "10.13.0.35", 32)
    assert stem == "fp16_nvidia-h100-80gb-hbm3_sm90_trt10.13.0.35_b32"
    variants = {engine_file_stem(p, g, v, b) for p in ("fp16", "fp32") for g in (H100, L4)
                for v in ("10.13.0.35", "10.14.1.48") for b in (16, 32)}
    assert len(variants) == 16  # no two engines of one bundle overwrite each other
    assert all("/" not in s and " " not in s for s in variants)


def test_engine_mismatch_names_the_reason():
    entry = entry_for(H100, "10.13.0.35")
    assert engine_mismatch(entry, H100, "10.13.0.35") is None
    other_gpu = engine_mismatch(entry, L4, "10.13.0.35")
    assert "compute capability 9.0" in other_gpu and "8.9" in other_gpu and "L4" in other_gpu
    same_cc_other_model = engine_mismatch(entry, GpuIdentity("NVIDIA H100 PCIe", "9.0"), "10.13.0.35")
    assert "H100 80GB HBM3" in same_cc_other_model and "H100 PCIe" in same_cc_other_model
    other_trt = engine_mismatch(entry, H100, "10.14.1.48")
    assert "10.13.0.35" in other_trt and "10.14.1.48" in other_trt
    assert engine_mismatch({}, H100, "10.13.0.35") is not None  # an incomplete entry never matches
    assert "\n" not in other_gpu + same_cc_other_model + other_trt


@pytest.mark.parametrize("total,max_batch", [(0, 4), (1, 4), (4, 4), (5, 4), (17, 4), (3, 1), (100, 32)])
def test_batch_slices_cover_every_row_once_in_order(total, max_batch):
    slices = batch_slices(total, max_batch)
    rows = [r for s in slices for r in range(s.start, s.stop)]
    assert rows == list(range(total))
    assert all(0 < s.stop - s.start <= max_batch for s in slices)
    assert len(slices) == -(-total // max_batch)


def test_batch_slices_refuse_a_zero_max_batch():
    with pytest.raises(ValueError):
        batch_slices(3, 0)


def outputs(rng, rows=4, width=32, classes=18):
    return {"features": rng.standard_normal((rows, width)), "logits": rng.standard_normal((rows, classes)),
            "event_times": rng.random((rows, classes))}


def perturbed(reference, scale, rng):
    return {k: v + scale * np.linalg.norm(v) / np.sqrt(v.size) * rng.standard_normal(v.shape)
            for k, v in reference.items()}


def test_min_row_cosine_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    expected = min(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a, b))
    assert compare(a, b)["min_row_cosine"] == pytest.approx(expected, abs=1e-12)


def test_parity_gate_fp16():
    rng = np.random.default_rng(1)
    reference = outputs(rng)
    close = perturbed(reference, 0.01, rng)  # cosine ~ 0.99995
    figures = parity_gate("fp16", reference, close, "onnxruntime-cpu", [1, 3])
    assert figures["features"]["min_row_cosine"] >= MIN_ROW_COSINE
    assert figures["reference"] == "onnxruntime-cpu" and set(NAMES) <= set(figures)
    one_bad_row = {k: v.copy() for k, v in close.items()}
    one_bad_row["features"][2] = rng.standard_normal(one_bad_row["features"].shape[1])
    with pytest.raises(EngineParityError, match="fp16 engine refused: features cosine"):
        parity_gate("fp16", reference, one_bad_row, "onnxruntime-cpu", [1, 3])
    nan = {k: v.copy() for k, v in close.items()}
    nan["features"][0, 0] = np.nan
    with pytest.raises(EngineParityError):
        parity_gate("fp16", reference, nan, "onnxruntime-cpu", [1, 3])


def test_parity_gate_fp32_is_tight():
    rng = np.random.default_rng(2)
    reference = outputs(rng)
    parity_gate("fp32", reference, perturbed(reference, MAX_REL_L2 / 10, rng), "onnxruntime-cuda", [1, 3])
    # An FP16-grade error (cosine still above the FP16 gate) is not good enough for an FP32 engine.
    fp16_grade = perturbed(reference, 0.01, rng)
    with pytest.raises(EngineParityError, match="fp32 engine refused"):
        parity_gate("fp32", reference, fp16_grade, "onnxruntime-cuda", [1, 3])


def test_guards_report_missing_gpu_packages(tmp_path, monkeypatch):
    for name in ("tensorrt", "cupy", "PyNvVideoCodec"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    reason = tensorrt_support()
    assert reason is not None and "\n" not in reason
    assert engine_support() == reason
    from tsf.runtime.decode_nvdec import nvdec_support
    nvdec_reason = nvdec_support()
    assert nvdec_reason is not None and "\n" not in nvdec_reason
    with pytest.raises(BackendError, match="cannot build a TensorRT engine"):
        build_engine(tmp_path / "model.onnx", tmp_path)
    assert not (tmp_path / "engines").exists()


def test_type_stubs_are_not_mistaken_for_tensorrt(tmp_path, monkeypatch):
    # `pip install tensorrt-stubs` leaves tensorrt/__init__.pyi: an importable, empty namespace package.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("def Builder(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    import tensorrt  # noqa: F401  (the namespace package really imports)

    assert "only an empty 'tensorrt' package" in tensorrt_support()


def test_find_engine_without_tensorrt_falls_back_with_reasons(tmp_path):
    entry = entry_for(H100, "10.13.0.35")
    bundle = Bundle(dir=tmp_path, meta={}, onnx_path=tmp_path / "model.onnx", architecture={},
                    class_names=(), bundle_id="0" * 16, random_init=True, window=Window.reference(),
                    preprocessing=Preprocessing.reference(), engines=[entry])
    if tensorrt_support() is not None:
        found, reasons = find_engine(bundle)
        assert found is None and reasons and all("\n" not in r for r in reasons)
    empty = Bundle(dir=tmp_path, meta={}, onnx_path=tmp_path / "model.onnx", architecture={},
                   class_names=(), bundle_id="0" * 16, random_init=True, window=Window.reference(),
                   preprocessing=Preprocessing.reference(), engines=[])
    found, reasons = find_engine(empty)
    assert found is None and "no TensorRT engine" in reasons[0]


# --- the FP16 ONNX for strongly typed TensorRT builds, checked in ONNX Runtime on the CPU ---

SMALL_ARCH = "depth=2,width=128,heads=2,frames=4"


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from tsf.export import export_bundle

    return export_bundle(tmp_path_factory.mktemp("fp16") / "bundle", random_init=True, arch=SMALL_ARCH, seed=3)


def _elem_types(model):
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return types


@pytest.mark.paddle  # the exporter's graph (paddle2onnx)
def test_fp16_onnx_keeps_layernorm_and_softmax_fp32(small_bundle, tmp_path):
    pytest.importorskip("onnxconverter_common")
    import onnx
    import onnxruntime

    from tsf.export.tensorrt_engine import fp16_onnx

    source = Path(small_bundle) / "model.onnx"
    converted_path = tmp_path / "model.fp16.onnx"
    kept_names = fp16_onnx(source, converted_path)
    model = onnx.load(str(converted_path))
    onnx.checker.check_model(model)
    types = _elem_types(model)
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert sum(n.op_type == "LayerNormalization" for n in kept) == 3 * 2 + 1
    assert sum(n.op_type == "Softmax" for n in kept) == 2 * 2  # time and space, per block
    assert kept_names == [n.name for n in kept]
    for node in kept:
        for name in list(node.input) + list(node.output):
            assert types.get(name) == FLOAT, f"{node.op_type} {node.name}: {name} is not float32"
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert matmuls and all(types.get(n.input[0]) == FLOAT16 for n in matmuls)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT] * 3

    # The function is still the model's: the FP16 engine gate, applied to the FP16 ONNX itself.
    reference = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    half = onnxruntime.InferenceSession(str(converted_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    ref, out = {k: [] for k in NAMES}, {k: [] for k in NAMES}
    for batch in (1, 3):
        video = rng.random((batch, 3, 4, 224, 224), dtype=np.float32)
        for store, session in ((ref, reference), (out, half)):
            for name, value in zip(NAMES, session.run(list(NAMES), {"video": video})):
                store[name].append(value)
    figures = parity_gate("fp16", {k: np.concatenate(v) for k, v in ref.items()},
                          {k: np.concatenate(v) for k, v in out.items()}, "onnxruntime-cpu", [1, 3])
    print(f"FP16 ONNX vs FP32 ONNX (ORT CPU): features min row cosine "
          f"{figures['features']['min_row_cosine']:.6f}, rel L2 {figures['features']['rel_l2']:.2e}")


# --- build_engine's orchestration, with only the GPU pieces replaced ---

class OnnxRuntimeAsEngine:
    """Stands in for EngineRunner: 'runs the plan' with ONNX Runtime on the CPU, plus optional noise."""

    def __init__(self, onnx_path, noise=0.0):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.noise = noise

    def run(self, video):
        outputs = dict(zip(NAMES, self.session.run(list(NAMES), {"video": video})))
        rng = np.random.default_rng(0)
        return {k: (v + self.noise * rng.standard_normal(v.shape)).astype(np.float32) for k, v in outputs.items()}


def fake_gpu(monkeypatch, onnx_path, noise, trt_version="10.13.0.35"):
    from tsf.export import tensorrt_engine

    built = {}

    def build_plan(onnx, precision, min_batch, opt_batch, max_batch, clip_shape, timing_cache):
        built.update(precision=precision, batches=(min_batch, opt_batch, max_batch), clip_shape=clip_shape,
                     old_cache=timing_cache)
        return b"serialized plan", b"timing cache", ["norm1", "softmax"]

    monkeypatch.setattr(tensorrt_engine, "engine_support", lambda gpu_id=0: None)
    monkeypatch.setattr(tensorrt_engine, "current_gpu", lambda gpu_id=0: H100)
    monkeypatch.setattr(tensorrt_engine, "tensorrt_version", lambda: trt_version)
    monkeypatch.setattr(tensorrt_engine, "build_plan", build_plan)
    monkeypatch.setattr(tensorrt_engine, "EngineRunner", lambda plan, gpu_id=0: OnnxRuntimeAsEngine(onnx_path, noise))
    return built


@pytest.mark.paddle  # the exporter's graph (paddle2onnx)
def test_build_engine_writes_the_engine_and_its_entry(small_bundle, tmp_path, monkeypatch):
    onnx_path = Path(small_bundle) / "model.onnx"
    built = fake_gpu(monkeypatch, onnx_path, noise=0.0)
    entry = build_engine(onnx_path, tmp_path, precision="fp16", max_batch=8, frames=4, seed=0)
    assert built == {"precision": "fp16", "batches": (1, 8, 8), "clip_shape": (3, 4, 224, 224), "old_cache": b""}
    stem = engine_file_stem("fp16", H100, "10.13.0.35", 8)
    assert entry["file"] == f"engines/{stem}.engine" and entry["timing_cache"] == f"engines/{stem}.cache"
    assert (tmp_path / entry["file"]).read_bytes() == b"serialized plan"
    assert (tmp_path / entry["timing_cache"]).read_bytes() == b"timing cache"
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [f"{stem}.cache", f"{stem}.engine"]
    design_keys = {"file", "timing_cache", "precision", "gpu_name", "compute_capability", "tensorrt_version",
                   "min_batch", "opt_batch", "max_batch", "build_seconds", "size_bytes", "parity"}
    assert design_keys <= set(entry)
    assert (entry["gpu_name"], entry["compute_capability"], entry["tensorrt_version"]) == (
        H100.name, "9.0", "10.13.0.35")
    assert (entry["min_batch"], entry["opt_batch"], entry["max_batch"], entry["size_bytes"]) == (1, 8, 8, 15)
    assert entry["parity"]["batch_sizes"] == [1, 3] and entry["parity"]["reference"] == "onnxruntime-cpu"
    assert entry["parity"]["features"]["min_row_cosine"] == pytest.approx(1.0)
    assert engine_mismatch(entry, H100, "10.13.0.35") is None

    # A rebuild for the same GPU reuses the timing cache beside the engine.
    build_engine(onnx_path, tmp_path, precision="fp16", max_batch=8, opt_batch=2, frames=4, seed=0)
    assert built["old_cache"] == b"timing cache" and built["batches"] == (1, 2, 8)


@pytest.mark.paddle  # the exporter's graph (paddle2onnx)
def test_build_engine_refuses_a_diverging_engine_and_writes_nothing(small_bundle, tmp_path, monkeypatch):
    onnx_path = Path(small_bundle) / "model.onnx"
    fake_gpu(monkeypatch, onnx_path, noise=1.0)
    for precision in ("fp16", "fp32"):
        with pytest.raises(EngineParityError, match=f"{precision} engine refused"):
            build_engine(onnx_path, tmp_path, precision=precision, max_batch=4, frames=4, seed=0)
    assert not (tmp_path / "engines").exists()


def test_build_engine_checks_its_arguments(tmp_path):
    for kwargs in (dict(precision="int8"), dict(max_batch=0), dict(max_batch=4, opt_batch=5)):
        with pytest.raises(BackendError):
            build_engine(tmp_path / "model.onnx", tmp_path, **kwargs)


# --- build_plan's decisions, against a recording stand-in for the tensorrt module ---
# Only what build_plan touches; mypy with tensorrt-stubs (test_gpu_static.py) checks that these
# names exist in the real TensorRT 10 API. This checks which of them we call, and when.

def fake_tensorrt(version, parse_ok=True):
    import types

    calls = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.Dims = tuple

    class Config:
        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            return data

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("timing_cache", cache))

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"new cache")

    class Profile:
        def set_shape(self, name, low, opt, high):
            self.shapes = (name, low, opt, high)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"plan"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, index):
            return "Unsupported ONNX op: FancyOp\nmore detail"

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt, calls


@pytest.mark.paddle  # the exporter's graph (paddle2onnx)
@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.106"])
def test_build_plan_fp16_is_strongly_typed_from_an_fp16_onnx(small_bundle, monkeypatch, version):
    pytest.importorskip("onnxconverter_common")
    from tsf.export.tensorrt_engine import build_plan

    trt, calls = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan, cache, kept = build_plan(Path(small_bundle) / "model.onnx", "fp16", 1, 2, 4, (3, 4, 224, 224), b"old")
    assert (plan, cache) == (b"plan", b"new cache")
    assert len(kept) == 3 * 2 + 1 + 2 * 2  # every LayerNorm and Softmax of the depth-2 model
    assert ("create_network", 1 << 1) in calls and ("parse", "model.fp16.onnx") in calls
    assert not any(c[0] in ("set_flag", "clear_flag") for c in calls)  # no precision flags exist in 11
    assert ("profile", ("video", (1, 3, 4, 224, 224), (2, 3, 4, 224, 224), (4, 3, 4, 224, 224))) in calls
    assert ("timing_cache", b"old") in calls


def test_build_plan_fp32_is_strongly_typed_from_the_onnx_without_tf32(tmp_path, monkeypatch):
    from tsf.export.tensorrt_engine import build_plan

    trt, calls = fake_tensorrt("10.13.3.9")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    _, _, kept = build_plan(tmp_path / "model.onnx", "fp32", 1, 4, 8, (3, 4, 224, 224), b"")
    assert kept == [] and ("clear_flag", "TF32") in calls
    assert ("create_network", 1 << 1) in calls and ("parse", "model.onnx") in calls
    assert not any(c[0] == "set_flag" for c in calls)


def test_build_plan_reports_parse_errors_in_one_line(tmp_path, monkeypatch):
    from tsf.export.tensorrt_engine import build_plan

    trt, _ = fake_tensorrt("10.13.3.9", parse_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(BackendError, match="TensorRT cannot parse model.onnx: Unsupported ONNX op: FancyOp$"):
        build_plan(tmp_path / "model.onnx", "fp32", 1, 2, 4, (3, 4, 224, 224), b"")


# --- NvdecDecoder against stand-ins for PyNvVideoCodec 2.2.4 and CuPy (tests/gpu_stand_ins.py) ---
# What is checked is ours: the capability check before NVDEC is chosen and the fallback's reason,
# timestamps from PTS and time base, the flush at the end, NV12 planes copied out of reused and
# padded surfaces, the colour conversion the CPU path does, no host waits and no races while
# decoding, the producer thread on the decoder's GPU, errors turned into DecodeError.

def gpu_stand_ins(monkeypatch, device_count=1, hold_producer=None, own_streams=True, **nvdec_options):
    """Installs the CuPy and PyNvVideoCodec stand-ins; returns (cuda state, PyNvVideoCodec log)."""
    from gpu_stand_ins import Cuda, fake_cupy, fake_pynvvideocodec
    from tsf.runtime import decode_nvdec

    cuda = Cuda(device_count, hold_producer=hold_producer)
    cupy, cupyx = fake_cupy(cuda, own_streams=own_streams)
    nvc, log = fake_pynvvideocodec(cuda, **nvdec_options)
    monkeypatch.setattr(decode_nvdec, "_import_pynvvideocodec", lambda: nvc)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    return cuda, log


@pytest.fixture(scope="module")
def nvdec_videos(tmp_path_factory):
    """4:2:0 videos whose 90 rows NVDEC pads to 96, untagged and tagged; a 4:4:4 one (odd size)."""
    import videos

    folder = tmp_path_factory.mktemp("nvdec")
    return {
        "untagged": videos.make_video(folder / "bframes.mkv", seconds=3, fps=25, size=(256, 90), bframes=3),
        "bt709_full": videos.make_video(folder / "bt709_full.mkv", frames=12, size=(256, 90), colorspace=1,
                                        color_range=2),
        "yuv444": videos.make_video(folder / "yuv444.mkv", frames=12, size=(161, 91)),
    }


def decode_both(cuda, path, gpu_id=0):
    """(decoder, PyAV's frames, NVDEC's frames as host arrays, host waits while decoding)."""
    from tsf.runtime.decode import PyAVDecoder
    from tsf.runtime.decode_nvdec import NvdecDecoder
    from tsf.runtime.probe import probe_video

    info = probe_video(path)
    cpu = PyAVDecoder(info)
    expected = [(f.pts_time, f.number, f.to_rgb()) for f in cpu.frames()]
    cpu.close()
    decoder = NvdecDecoder(info, gpu_id)
    with decoder.gpu_stream.work():  # NVDEC's frames are read on the decoder's stream
        frames = list(decoder.frames())  # every frame held before any is looked at
        rgb = [f.to_rgb() for f in frames]
        waits = cuda.host_waits
        got = [(f.pts_time, f.number, image.get()) for f, image in zip(frames, rgb)]
    decoder.close()
    return decoder, expected, got, waits


@pytest.mark.parametrize("name", ["untagged", "bt709_full"])
def test_nvdec_yields_the_cpu_decoders_frames_and_colours(nvdec_videos, name, monkeypatch):
    import videos

    cuda, log = gpu_stand_ins(monkeypatch)
    decoder, expected, got, waits = decode_both(cuda, nvdec_videos[name])
    assert len(got) == len(expected) > 0
    assert [(t, n) for t, n, _ in got] == [(t, n) for t, n, _ in expected]
    for (_, _, ours), (_, _, theirs) in zip(got, expected):
        assert ours.shape == theirs.shape == (90, 256, 3) and ours.dtype == np.uint8
        assert videos.read_frame_number(ours) == videos.read_frame_number(theirs)
        # The bound of tests/test_colour.py: swscale converts in fixed point.
        assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 2
    # The decoder got our non-blocking stream, frames were handed over on it, nobody waited on the
    # host while decoding, and every read of an NVDEC buffer came before the next Decode rewrote it.
    stream = decoder.gpu_stream.stream
    assert stream.is_non_blocking and log["decoders"][0]._stream is stream
    assert waits == 0 and cuda.races == []
    assert set(log["dlpack_streams"]) == {stream.ptr} and log["waits"] == []
    assert log["decoders"][0].calls > len(got) // 2  # one Decode per packet, plus the flush


def test_nvdec_reports_where_decoding_broke(nvdec_videos, monkeypatch):
    from tsf.runtime.decode import DecodeError
    from tsf.runtime.decode_nvdec import NvdecDecoder
    from tsf.runtime.probe import probe_video

    gpu_stand_ins(monkeypatch, fail_after=30)
    decoder = NvdecDecoder(probe_video(nvdec_videos["untagged"]))
    with pytest.raises(DecodeError, match=r"decoding broke at \d+\.\d s \(HW decode failed\)$"):
        for _ in decoder.frames():
            pass


def test_nvdec_turns_a_rotated_video_upright_like_the_cpu_decoder(tmp_path, monkeypatch):
    import videos

    cuda, _ = gpu_stand_ins(monkeypatch)
    phone = videos.make_video(tmp_path / "phone.mp4", seconds=1, fps=25, size=(160, 96), rotation=-90)
    decoder, expected, got, _ = decode_both(cuda, phone)
    assert decoder.info.rotation == 270 and len(got) == len(expected) == 25
    for (_, _, ours), (_, _, theirs) in zip(got, expected):
        assert ours.shape == theirs.shape == (160, 96, 3)
        assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 2  # tests/test_colour.py's bound


def caps(**overrides):
    base = {"supported": 1, "width_min": 48, "height_min": 16, "width_max": 4096, "height_max": 4096,
            "mb_num_max": 65536}
    return {**base, **overrides}


def test_nvdec_refusal_names_what_nvdec_or_tsf_cannot_do():
    from tsf.runtime.decode_nvdec import nvdec_refusal
    from tsf.runtime.probe import VideoInfo

    def info(width=1920, height=1080, colorspace=2):
        return VideoInfo(path=Path("match.mkv"), size_bytes=1, mtime=0.0, container="matroska", stream_index=0,
                         codec="h264", width=width, height=height, fps=Fraction(25), time_base=Fraction(1, 1000),
                         start_time=Fraction(0), duration=Fraction(60), frame_count_estimate=1500,
                         colorspace=colorspace, color_range=0)

    assert nvdec_refusal(info(), "420", 8, caps()) is None
    assert nvdec_refusal(info(colorspace=1), "420", 8, caps()) is None
    refusals = {
        "444": nvdec_refusal(info(), "444", 8, caps()),
        "10-bit": nvdec_refusal(info(), "420", 10, caps()),
        "cannot decode h264 420 8-bit": nvdec_refusal(info(), "420", 8, caps(supported=0)),
        "outside": nvdec_refusal(info(8192, 4320), "420", 8, caps()),
        "too small": nvdec_refusal(info(32, 32), "420", 8, caps()),
        "macroblocks": nvdec_refusal(info(4096, 4096), "420", 8, caps(mb_num_max=36864)),
        "even frame size": nvdec_refusal(info(1919, 1080), "420", 8, caps()),
        "colour matrix 8": nvdec_refusal(info(colorspace=8), "420", 8, caps()),
    }
    for expected, reason in refusals.items():
        assert reason is not None and "\n" not in reason, expected
    assert "4:2:0" in refusals["444"] and "444" in refusals["444"] and "10-bit" in refusals["10-bit"]
    assert "cannot decode h264 420 8-bit" in refusals["cannot decode h264 420 8-bit"]
    assert "8192x4320 is outside" in refusals["outside"] and "48x16 to 4096x4096" in refusals["outside"]
    assert "32x32 is outside" in refusals["too small"]
    assert "65536 macroblocks" in refusals["macroblocks"] and "36864" in refusals["macroblocks"]
    assert "even frame size" in refusals["even frame size"] and "colour matrix 8" in refusals["colour matrix 8"]


def gpu_backend(gpu_id=0):
    """What open_decoder and extract read of a Backend (runtime/backends/__init__.py), for a GPU engine."""
    import types

    from tsf.runtime.gpu import Device

    def run(video):
        rows = len(video)
        return {"features": np.zeros((rows, 4), np.float32), "logits": np.zeros((rows, 2), np.float32),
                "event_times": np.zeros((rows, 2), np.float32)}

    return types.SimpleNamespace(name="gpu-engine", device=Device("cuda", gpu_id), precision="fp16",
                                 default_batch_size=2, wants_gpu_input=True, run=run)


@pytest.mark.parametrize("name,options,reason", [
    ("yuv444", {}, "this stream is h264 444 8-bit"),
    ("untagged", {"caps": lambda codec, chroma, depth: caps(width_max=128)}, "256x90 is outside"),
])
def test_open_decoder_falls_back_to_pyav_saying_why(nvdec_videos, name, options, reason, monkeypatch, caplog):
    import logging

    from tsf.runtime.pipeline import open_decoder
    from tsf.runtime.probe import probe_video

    _, log = gpu_stand_ins(monkeypatch, **options)
    info = probe_video(nvdec_videos[name])
    with caplog.at_level(logging.INFO, logger="tsf"):
        decoder = open_decoder(info, "auto", gpu_backend())
    decoder.close()
    assert decoder.name == "cpu" and not log["decoders"]  # refused before a decoder was created
    assert any(reason in r.getMessage() and "decoding on the CPU" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendError, match=f"--decoder nvdec: .*{reason}"):
        open_decoder(info, "nvdec", gpu_backend())


def test_nvdec_frames_are_preprocessed_on_the_decoders_gpu(nvdec_videos, monkeypatch):
    """With the engine on GPU 1, the producer thread decodes and converts on GPU 1, not CuPy's default 0."""
    from tsf.runtime import decode_nvdec
    from tsf.runtime.pipeline import extract
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    cuda, _ = gpu_stand_ins(monkeypatch, device_count=2)
    devices = set()
    convert = decode_nvdec.yuv420_to_rgb

    def converting(*args, **kwargs):
        devices.add(cuda.current_device())
        return convert(*args, **kwargs)

    monkeypatch.setattr(decode_nvdec, "yuv420_to_rgb", converting)
    info = probe_video(nvdec_videos["untagged"])
    bundle = Bundle(dir=Path("."), meta={}, onnx_path=Path("model.onnx"), class_names=("a", "b"),
                    architecture={"frames": 4, "depth": 1, "width": 4, "heads": 1, "classes": 2, "image_size": 224,
                                  "patch_size": 16, "mlp_ratio": 4}, bundle_id="0" * 16, random_init=True,
                    window=Window.reference(4), preprocessing=Preprocessing.reference())
    result = extract(info, plan_windows(info, bundle.window), bundle, gpu_backend(gpu_id=1))
    assert result.decoder == "nvdec" and result.rows == 3
    assert devices == {1}


# --- The GPU pipeline's streams: decode and inference overlap, and batches cross in order ---
# The real pipeline, NvdecDecoder and the torch engine's `run` on the stand-in device
# (tests/gpu_stand_ins.py), whose legacy default stream orders itself with blocking streams as
# CUDA does and which records every op's ordering. The producer is held after its first hand-off
# until the consumer has queued inference, as on a GPU where inference is in flight while the
# producer works; then any ordering of the producer after inference (a shared or blocking stream,
# a host wait) is seen, whatever the thread timing.

FEATURES, OUTPUT_CLASSES = 4, 2


def toy_model_outputs(clips):
    """What the test's model computes from float32 clips [B, 3, T, S, S]: features, logits, event times."""
    flat = clips.reshape(len(clips), -1)
    return [np.repeat(flat.mean(1, keepdims=True), FEATURES, 1) + np.arange(FEATURES, dtype=np.float32),
            np.repeat(flat.max(1, keepdims=True), OUTPUT_CLASSES, 1),
            np.repeat(flat.min(1, keepdims=True), OUTPUT_CLASSES, 1)]


def torch_engine_on_stand_ins(cuda, torch):
    """The torch engine as `TorchBackend.__init__` leaves it on cuda:0 (its own stream from
    torch.cuda.Stream, fp16), with a model that reads its input and writes its outputs as one
    "inference" op on the current torch stream. Loading the real model needs real torch: that
    part is proven on the CPU (tests/test_torch_engine.py) and on a GPU (tests/gpu)."""
    from gpu_stand_ins import Buffer
    from tsf.runtime.backends.torch import TorchBackend
    from tsf.runtime.gpu import Device

    def model(clips):
        outputs = [torch.Tensor(o.astype(np.float32), Buffer("model output"), clips.device)
                   for o in toy_model_outputs(clips._data)]
        cuda.enqueue(torch.cuda.current_stream()._stream, "inference", reads=[clips._buffer],
                     writes=[o._buffer for o in outputs])
        return outputs

    engine = TorchBackend.__new__(TorchBackend)
    engine.device, engine.precision, engine.model = Device("cuda", 0), "fp16", model
    engine._device, engine._dtype = torch.device("cuda", 0), torch.float16
    engine._stream = torch.cuda.Stream(engine._device)
    engine._widths = (FEATURES, OUTPUT_CLASSES, OUTPUT_CLASSES)
    engine.default_batch_size, engine.wants_gpu_input = 1, True
    return engine


def toy_bundle():
    return Bundle(dir=Path("."), meta={}, onnx_path=Path("model.onnx"), class_names=("a", "b"),
                  architecture={"frames": 4, "depth": 1, "width": FEATURES, "heads": 1, "classes": OUTPUT_CLASSES,
                                "image_size": 224, "patch_size": 16, "mlp_ratio": 4}, bundle_id="0" * 16,
                  random_init=True, window=Window.reference(4), preprocessing=Preprocessing.reference())


def extract_on_stand_in_gpu(monkeypatch, video, own_streams=True):
    """One video through the real pipeline: NVDEC -> CuPy -> the torch engine, on the stand-in
    device; batches of one window, so that several cross. Returns (cuda state, result)."""
    from gpu_stand_ins import fake_torch
    from tsf.runtime.pipeline import extract
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    cuda, _ = gpu_stand_ins(monkeypatch, hold_producer="tsf-decode", own_streams=own_streams)
    torch = fake_torch(cuda, own_streams=own_streams)
    monkeypatch.setitem(sys.modules, "torch", torch)
    info = probe_video(video)
    result = extract(info, plan_windows(info, toy_bundle().window), toy_bundle(), torch_engine_on_stand_ins(cuda, torch),
                     decoder="nvdec", batch_size=1)
    return cuda, result


def test_gpu_decode_and_inference_overlap_and_batches_cross_in_order(nvdec_videos, monkeypatch):
    import types

    from tsf.runtime.pipeline import extract
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    cuda, gpu = extract_on_stand_in_gpu(monkeypatch, nvdec_videos["untagged"])
    assert gpu.decoder == "nvdec" and gpu.rows == 3
    inference = [op for op in cuda.ops if op.tag == "inference"]
    producer = [op for op in cuda.ops if op.thread == "tsf-decode"]
    assert len(inference) == 3
    # The check below could fail: the producer queued work while inference was in flight.
    assert any(op.seq > inference[0].seq for op in producer)
    # The producer never waits for inference, on the device or on the host; it never waits on the
    # host at all, and works on one non-blocking stream (its decoder's), inference on another.
    assert cuda.producer_waits_on("inference") == []
    assert [wait for wait in cuda.waits if wait[0] == "tsf-decode"] == []
    assert len({op.stream for op in producer}) == 1 and producer[0].stream.is_non_blocking
    assert len({op.stream for op in inference}) == 1 and inference[0].stream.is_non_blocking
    assert inference[0].stream is not producer[0].stream
    # Every read came after its write, every NVDEC buffer rewrite after the reads of it.
    assert cuda.races == []

    # The same windows as the CPU path's (PyAV, NumPy, the same model), up to the colour
    # conversion's rounding (2 levels of 255, tests/test_colour.py).
    def run(video):
        return dict(zip(NAMES, toy_model_outputs(video)))

    cpu_engine = types.SimpleNamespace(name="cpu-engine", device=CPU, precision="fp32", default_batch_size=1,
                                       wants_gpu_input=False, run=run)
    info = probe_video(nvdec_videos["untagged"])
    cpu = extract(info, plan_windows(info, toy_bundle().window), toy_bundle(), cpu_engine, decoder="cpu")
    np.testing.assert_allclose(gpu.features, cpu.features, rtol=0, atol=2 / 255)
    np.testing.assert_allclose(gpu.event_times, cpu.event_times, rtol=0, atol=2 / 255)


def test_the_stand_ins_see_stages_that_do_not_overlap(nvdec_videos, monkeypatch):
    """Negative control: with every stream the legacy default one (what tsf did before its own
    streams), the producer's work after the first batch waits for the in-flight inference."""
    cuda, result = extract_on_stand_in_gpu(monkeypatch, nvdec_videos["untagged"], own_streams=False)
    assert result.rows == 3 and cuda.races == []
    waits = cuda.producer_waits_on("inference")
    assert waits and "waits on the device for inference" in waits[0]


def test_the_stand_ins_see_a_batch_read_before_it_is_written(nvdec_videos, monkeypatch):
    """Negative control: a hand-off that does not wait for the producer's event is a race."""
    import contextlib

    from tsf.runtime import gpu

    @contextlib.contextmanager
    def receive_without_waiting(self, event):
        with self.stream:
            yield

    monkeypatch.setattr(gpu.ConsumerStream, "receive", receive_without_waiting)
    cuda, _ = extract_on_stand_in_gpu(monkeypatch, nvdec_videos["untagged"])
    assert any(race.startswith("inference") and "reads" in race for race in cuda.races)


# --- EngineRunner.run against stand-ins for TensorRT 10 and CuPy (tests/gpu_stand_ins.py) ---
# Checked: batches above the engine's max are split and reassembled in row order, device buffers
# are allocated once, host and device inputs give the same rows, the host waits once per run,
# host buffers are pinned (else each copy would wait), shapes are validated.

WIDTH, CLASSES, CLIP = 6, 3, (3, 2, 4, 4)


def engine_model(rows):  # what the stand-in engine computes, per row
    flat = rows.reshape(len(rows), -1)
    return {"features": np.repeat(flat.mean(1, keepdims=True), WIDTH, 1) + np.arange(WIDTH),
            "logits": np.repeat(flat.max(1, keepdims=True), CLASSES, 1),
            "event_times": np.repeat(flat.min(1, keepdims=True), CLASSES, 1)}


def test_stand_in_streams_behave_like_cuda():
    """The stand-in's CUDA semantics the runner test relies on: queued copies land at the wait;
    a copy to pageable memory waits by itself."""
    from gpu_stand_ins import Cuda, fake_cupy

    cuda = Cuda()
    cupy, cupyx = fake_cupy(cuda)
    stream = cupy.cuda.Stream(non_blocking=True)
    device = cupy.asarray(np.arange(4, dtype=np.float32))
    pinned = cupyx.empty_pinned((4,), dtype=np.float32)
    pinned[...] = -1
    device.get(stream=stream, out=pinned, blocking=False)
    assert (pinned == -1).all() and cuda.host_waits == 0  # not there until the stream is waited on
    stream.synchronize()
    assert (pinned == np.arange(4)).all() and cuda.host_waits == 1
    device.get(stream=stream, out=np.empty(4, np.float32), blocking=False)
    assert cuda.host_waits == 2  # pageable memory: the copy waited
    with pytest.raises(TypeError):
        cupy.cuda.Stream(nonblocking=True)


def test_stand_in_default_stream_and_dlpack_order_work_as_cuda_does():
    """What the overlap tests rely on: the legacy default stream (CuPy's null stream is torch's
    default stream) orders itself with blocking streams, never with non-blocking ones; torch's own
    streams are non-blocking; DLPack makes the reader wait for the exporting thread's current
    stream, and a read that nothing ordered after its write is a race."""
    from gpu_stand_ins import Cuda, fake_cupy, fake_torch

    cuda = Cuda()
    cupy, _ = fake_cupy(cuda)
    torch = fake_torch(cuda)
    blocking, non_blocking = cupy.cuda.Stream(), cupy.cuda.Stream(non_blocking=True)
    on_default = cuda.enqueue(cuda.legacy, "default")
    assert on_default.ordered_before(cuda.enqueue(blocking, "later, blocking"))
    assert not on_default.ordered_before(cuda.enqueue(non_blocking, "later, non-blocking"))
    on_blocking = cuda.enqueue(blocking, "blocking")
    assert on_blocking.ordered_before(cuda.enqueue(cuda.legacy, "later, default"))
    assert torch.cuda.current_stream().cuda_stream == cupy.cuda.Stream.null.ptr == 0
    engine = torch.cuda.Stream()
    assert engine._stream.is_non_blocking

    def written_on(stream):
        with stream:
            return cupy.asarray(np.ones((2, 3), np.float32)) * 2

    batch = written_on(non_blocking)
    with non_blocking, torch.cuda.stream(engine):
        torch.from_dlpack(batch).cpu()  # exported with the writer's stream current: ordered
    assert cuda.races == []
    batch = written_on(non_blocking)
    with torch.cuda.stream(torch.cuda.Stream()):
        torch.from_dlpack(batch).cpu()  # exported from the default stream, which never waited for the writer
    assert len(cuda.races) == 1 and "reads" in cuda.races[0]


def test_engine_runner_splits_batches_waits_once_and_keeps_row_order(monkeypatch):
    from gpu_stand_ins import Cuda, fake_cupy, fake_tensorrt_runtime
    from tsf.runtime.backends.tensorrt import EngineRunner
    from tsf.runtime.errors import InputError

    cuda = Cuda()
    cupy, cupyx = fake_cupy(cuda)
    trt, log = fake_tensorrt_runtime(cuda, 4, engine_model, {"features": WIDTH, "logits": CLASSES,
                                                              "event_times": CLASSES}, CLIP)
    device_allocations = []
    empty = cupy.empty
    cupy.empty = lambda shape, dtype=float, order="C": device_allocations.append(shape) or empty(shape, dtype, order)
    for name, module in (("tensorrt", trt), ("cupy", cupy), ("cupyx", cupyx)):
        monkeypatch.setitem(sys.modules, name, module)
    runner = EngineRunner(b"plan")
    assert (runner.min_batch, runner.opt_batch, runner.max_batch, runner.clip_shape) == (1, 2, 4, CLIP)
    allocated = len(device_allocations)
    video = np.random.default_rng(0).random((9, *CLIP), dtype=np.float32)
    expected = engine_model(video)

    log["input_shapes"].clear()
    waits = cuda.host_waits
    from_host = runner.run(video)
    assert log["input_shapes"] == [4, 4, 1] and cuda.host_waits == waits + 1
    pinned = len(cuda.pinned)
    from_device = runner.run(cupy.asarray(video))
    assert cuda.host_waits == waits + 2
    again = runner.run(video[:5])  # fewer rows: the pinned buffers are reused, not reallocated
    assert len(device_allocations) == allocated and len(cuda.pinned) == pinned
    for name in NAMES:
        assert from_host[name].dtype == np.float32 and type(from_host[name]) is np.ndarray
        np.testing.assert_allclose(from_host[name], expected[name], rtol=1e-6)
        np.testing.assert_allclose(from_device[name], expected[name], rtol=1e-6)
        np.testing.assert_allclose(again[name], expected[name][:5], rtol=1e-6)
    with pytest.raises(InputError, match="expects clips of shape"):
        runner.run(np.zeros((2, 3, 2, 4, 5), np.float32))
