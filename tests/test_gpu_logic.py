"""The pure-Python logic of the GPU modules, on the CPU with small fakes.

TensorRT, CuPy and PyNvVideoCodec are not installed here; what is tested is everything around
them that decides something: engine names and matching, batch splitting, the parity gate's
decisions, the import guards, and the FP16 ONNX that FP16 strongly typed builds use, run in ONNX
Runtime.
The control flow of build_engine, build_plan, EngineRunner and NvdecDecoder runs against small
stand-ins (ONNX Runtime for a built engine, a recording tensorrt module, NumPy for CuPy, PyAV for
NVDEC): they test our decisions, not TensorRT or NVDEC. The GPU runs are in tests/gpu/ (`gpu`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tsf.export.tensorrt_engine import (
    FP16_MIN_FEATURE_COSINE,
    FP32_MAX_REL_L2,
    EngineParityError,
    build_engine,
    engine_support,
    min_row_cosine,
    parity_gate,
)
from tsf.runtime.bundle import Bundle
from tsf.runtime.errors import BackendError
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



class CudaNoop:
    """Stands in for CuPy's Device and Stream: context managers with a null pointer that do nothing."""

    def __init__(self, *args, **kwargs):
        self.ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass

    def wait_event(self, event):
        pass

    def record(self):
        return None

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
    assert min_row_cosine(a, b) == pytest.approx(expected, abs=1e-12)


def test_parity_gate_fp16():
    rng = np.random.default_rng(1)
    reference = outputs(rng)
    close = perturbed(reference, 0.01, rng)  # cosine ~ 0.99995
    figures = parity_gate("fp16", reference, close, "onnxruntime-cpu", [1, 3])
    assert figures["features"]["min_row_cosine"] >= FP16_MIN_FEATURE_COSINE
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
    parity_gate("fp32", reference, perturbed(reference, FP32_MAX_REL_L2 / 10, rng), "onnxruntime-cuda", [1, 3])
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
                    class_names=(), bundle_id="0" * 16, random_init=True, engines=[entry])
    if tensorrt_support() is not None:
        found, reasons = find_engine(bundle)
        assert found is None and reasons and all("\n" not in r for r in reasons)
    empty = Bundle(dir=tmp_path, meta={}, onnx_path=tmp_path / "model.onnx", architecture={},
                   class_names=(), bundle_id="0" * 16, random_init=True, engines=[])
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


# --- NvdecDecoder's loop against stand-ins: PyAV plays NVDEC, NumPy plays CuPy ---
# What is checked is ours: timestamps from PTS and time base, the flush at the end, frames kept
# valid after later Decode calls, display-area cropping, errors turned into DecodeError.

def fake_nvdec_modules(path, padded_rows=0, fail_after=None):
    import types

    import av

    class Frame:
        def __init__(self, rgb, pts):
            self.rgb, self.pts = rgb, pts

        def getPTS(self):
            return self.pts

        def __dlpack__(self, stream=None, **kwargs):
            return self.rgb.__dlpack__()

        def __dlpack_device__(self):
            return self.rgb.__dlpack_device__()

    class Demuxer:
        def __init__(self, filename):
            self.container = av.open(filename)
            self.stream = self.container.streams.video[0]

        def __iter__(self):
            for packet in self.container.demux(self.stream):
                if packet.size:  # PyAV ends with an empty flush packet; NVDEC's demuxer does not
                    yield packet

        def GetNvCodecId(self):
            return self.stream.codec_context.name

        def GetVideoStreamId(self):
            return self.stream.index

        def GetTimebaseNum(self):
            return self.stream.time_base.numerator

        def GetTimebaseDen(self):
            return self.stream.time_base.denominator

    class Decoder:
        def __init__(self, demuxer):
            self.codec = av.CodecContext.create(demuxer.stream.codec_context.name, "r")
            self.codec.extradata = demuxer.stream.codec_context.extradata
            self.calls = 0
            self.surfaces = []

        def Decode(self, packet):
            self.calls += 1
            if fail_after is not None and self.calls > fail_after:
                raise RuntimeError("HW decode failed\ncuvid detail")
            frames = self.codec.decode(None if packet.size == 0 else packet)
            for surface in self.surfaces:  # NVDEC reuses its surfaces on the next Decode call
                surface[:] = 0
            self.surfaces = []
            out = []
            for frame in frames:
                rgb = frame.to_ndarray(format="rgb24")
                surface = np.zeros((rgb.shape[0] + padded_rows, rgb.shape[1], 3), np.uint8)
                surface[:rgb.shape[0]] = rgb
                self.surfaces.append(surface)
                out.append(Frame(surface, frame.pts))
            return out

    demuxers = []
    nvc = types.SimpleNamespace(
        CreateDemuxer=lambda filename: demuxers.append(Demuxer(filename)) or demuxers[-1],
        CreateDecoder=lambda **kw: Decoder(demuxers[-1]),
        OutputColorType=types.SimpleNamespace(RGB="RGB"),
        PacketData=lambda: types.SimpleNamespace(size=0),
    )

    cupy = types.SimpleNamespace(
        empty=np.empty, uint8=np.uint8, from_dlpack=np.from_dlpack,
        cuda=types.SimpleNamespace(Device=CudaNoop, Stream=CudaNoop,
                                   driver=types.SimpleNamespace(ctxGetCurrent=lambda: 0)))
    return nvc, cupy


def nvdec_with_fakes(monkeypatch, info, **kwargs):
    from tsf.runtime import decode_nvdec

    nvc, cupy = fake_nvdec_modules(str(info.path), **kwargs)
    monkeypatch.setattr(decode_nvdec, "nvdec_support", lambda gpu_id=0: None)
    monkeypatch.setattr(decode_nvdec, "_import_pynvvideocodec", lambda: nvc)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return decode_nvdec.NvdecDecoder(info)


@pytest.fixture(scope="module")
def bframe_video(tmp_path_factory):
    import videos

    return videos.make_video(tmp_path_factory.mktemp("nvdec") / "bframes.mkv", seconds=3, fps=25,
                             size=(160, 96), bframes=3)


def test_nvdec_loop_yields_what_the_cpu_decoder_yields(bframe_video, monkeypatch):
    from tsf.runtime.decode import PyAVDecoder
    from tsf.runtime.probe import probe_video

    info = probe_video(bframe_video)
    cpu = PyAVDecoder(info)
    expected = [(f.pts_time, f.number, f.to_rgb()) for f in cpu.frames()]
    cpu.close()
    decoder = nvdec_with_fakes(monkeypatch, info, padded_rows=8)
    got = [(f.pts_time, f.number, f.to_rgb()) for f in decoder.frames()]  # all held, then compared
    decoder.close()
    assert len(got) == len(expected) == 75
    assert [(t, n) for t, n, _ in got] == [(t, n) for t, n, _ in expected]
    for (_, _, a), (_, _, b) in zip(got, expected):
        assert a.shape == b.shape == (96, 160, 3)
        np.testing.assert_array_equal(a, b)


def test_nvdec_loop_reports_where_decoding_broke(bframe_video, monkeypatch):
    from tsf.runtime.decode import DecodeError
    from tsf.runtime.probe import probe_video

    decoder = nvdec_with_fakes(monkeypatch, probe_video(bframe_video), fail_after=30)
    with pytest.raises(DecodeError, match=r"decoding broke at \d+\.\d s \(HW decode failed\)$"):
        for _ in decoder.frames():
            pass


def test_nvdec_loop_turns_a_rotated_video_upright_like_the_cpu_decoder(tmp_path, monkeypatch):
    import videos
    from tsf.runtime.decode import PyAVDecoder
    from tsf.runtime.probe import probe_video

    info = probe_video(videos.make_video(tmp_path / "phone.mp4", seconds=1, fps=25, size=(160, 96), rotation=-90))
    cpu = PyAVDecoder(info)
    expected = [f.to_rgb() for f in cpu.frames()]
    cpu.close()
    decoder = nvdec_with_fakes(monkeypatch, info)
    got = [f.to_rgb() for f in decoder.frames()]
    decoder.close()
    assert info.rotation == 270 and len(got) == len(expected) == 25
    for a, b in zip(got, expected):
        assert a.shape == b.shape == (160, 96, 3)
        np.testing.assert_array_equal(a, b)


# --- EngineRunner.run against stand-ins: NumPy plays CuPy, a pointer-reading fake plays TensorRT ---
# Checked: batches above the engine's max are split and reassembled in row order, device buffers
# are allocated once, host and device inputs give the same rows, shapes are validated.

class FakeDeviceArray(np.ndarray):
    """A NumPy array with CuPy's `.data.ptr`, `.set()` and `.get()`."""

    @property
    def data(self):
        import types

        return types.SimpleNamespace(ptr=self.ctypes.data)

    def set(self, host, stream=None):
        self[...] = host

    def get(self, stream=None):
        return np.array(self)


def fake_engine_modules(max_batch, width=6, classes=3, clip=(3, 2, 4, 4)):
    import ctypes
    import types

    log = {"allocations": 0, "input_shapes": []}

    def empty(shape, dtype):
        log["allocations"] += 1
        return np.empty(shape, dtype).view(FakeDeviceArray)

    cupy = types.SimpleNamespace(
        ndarray=FakeDeviceArray, float32=np.float32, empty=empty,
        asarray=lambda a: np.ascontiguousarray(a).view(FakeDeviceArray),
        ascontiguousarray=lambda a, dtype=None: np.ascontiguousarray(a, dtype).view(FakeDeviceArray),
        cuda=types.SimpleNamespace(Device=CudaNoop, Stream=CudaNoop, get_current_stream=lambda: CudaNoop()))

    def model(rows):  # what the fake engine computes, per row
        flat = rows.reshape(len(rows), -1)
        return {"features": np.repeat(flat.mean(1, keepdims=True), width, 1) + np.arange(width),
                "logits": np.repeat(flat.max(1, keepdims=True), classes, 1),
                "event_times": np.repeat(flat.min(1, keepdims=True), classes, 1)}

    def view(ptr, shape):
        buffer = (ctypes.c_float * int(np.prod(shape))).from_address(ptr)
        return np.frombuffer(buffer, np.float32).reshape(shape)

    class Context:
        def __init__(self):
            self.addresses, self.batch = {}, None

        def set_input_shape(self, name, shape):
            self.batch = shape[0]
            log["input_shapes"].append(shape[0])
            return 1 <= shape[0] <= max_batch

        def get_tensor_shape(self, name):
            return (self.batch, width) if name == "features" else (self.batch, classes)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            rows = view(self.addresses["video"], (self.batch, *clip)).copy()
            for name, value in model(rows).items():
                view(self.addresses[name], value.shape)[...] = value
            return True

    class Engine:
        num_io_tensors = 4

        def get_tensor_name(self, index):
            return ("video", "features", "logits", "event_times")[index]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "video" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def get_tensor_profile_shape(self, name, profile):
            return [(1, *clip), (2, *clip), (max_batch, *clip)]

        def create_execution_context(self):
            return Context()

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.Builder = object
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, plan: Engine()})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    return trt, cupy, model, log


def test_engine_runner_splits_batches_and_keeps_row_order(monkeypatch):
    from tsf.runtime.errors import InputError
    from tsf.runtime.backends.tensorrt import EngineRunner

    trt, cupy, model, log = fake_engine_modules(max_batch=4)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    runner = EngineRunner(b"plan")
    assert (runner.min_batch, runner.opt_batch, runner.max_batch, runner.clip_shape) == (1, 2, 4, (3, 2, 4, 4))
    allocations = log["allocations"]
    video = np.random.default_rng(0).random((9, 3, 2, 4, 4), dtype=np.float32)
    expected = model(video)
    log["input_shapes"].clear()
    from_host = runner.run(video)
    assert log["input_shapes"] == [4, 4, 1]
    from_device = runner.run(cupy.asarray(video))
    assert log["allocations"] == allocations  # buffers were allocated once, for the max batch
    for name in NAMES:
        assert from_host[name].dtype == np.float32 and type(from_host[name]) is np.ndarray
        np.testing.assert_allclose(from_host[name], expected[name], rtol=1e-6)
        np.testing.assert_allclose(from_device[name], expected[name], rtol=1e-6)
    with pytest.raises(InputError, match="expects clips of shape"):
        runner.run(np.zeros((2, 3, 2, 4, 5), np.float32))
