"""Whole videos through the runtime's `Extractor` on the GPU against the CPU path.

GPU: NVDEC decoding, CuPy preprocessing, TensorRT FP16 engine. CPU: PyAV, NumPy preprocessing,
ONNX Runtime FP32. Same bundle, same video; cosine per row (the minimum is printed) and speed.
"""
from __future__ import annotations

import time

import pytest

import videos
from gpu_helpers import bundle_with, row_cosines
from tsf.runtime.decode_nvdec import nvdec_support
from tsf.runtime.backends.tensorrt import tensorrt_support

REASON = tensorrt_support() or nvdec_support()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


def run_both(bundle_dir, entry, video_path):
    from runtime_helpers import extract

    bundle = bundle_with(bundle_dir, [entry])
    started = time.perf_counter()
    cpu = extract(video_path, bundle, backend="onnxruntime", device="cpu", decoder="cpu")
    cpu_seconds = time.perf_counter() - started
    pyav_trt = extract(video_path, bundle, backend="tensorrt", device="cuda", decoder="cpu")
    extract(video_path, bundle, backend="tensorrt", device="cuda", decoder="nvdec")  # warm-up
    started = time.perf_counter()
    gpu = extract(video_path, bundle, backend="tensorrt", device="cuda", decoder="nvdec")
    gpu_seconds = time.perf_counter() - started
    assert gpu.decoder == "nvdec"
    assert gpu.features.shape == cpu.features.shape == pyav_trt.features.shape
    seconds_of_video = float(gpu.info.duration)
    print(f"\n{video_path.name}: {gpu.rows} rows; PyAV+TRT fp16 vs PyAV+ORT CPU min cosine "
          f"{row_cosines(pyav_trt.features, cpu.features).min():.6f}; NVDEC+TRT fp16 vs PyAV+ORT CPU min "
          f"cosine {row_cosines(gpu.features, cpu.features).min():.6f}; GPU {gpu_seconds:.2f} s "
          f"({seconds_of_video / gpu_seconds:.0f}x real time), CPU {cpu_seconds:.2f} s")
    return cpu, pyav_trt, gpu


def test_small_model_nvdec_tensorrt_vs_cpu(small_engines, tmp_path):
    bundle_dir, entries = small_engines
    path = videos.make_video(tmp_path / "match.mkv", seconds=12, fps=25, size=(456, 256))
    cpu, pyav_trt, gpu = run_both(bundle_dir, entries["fp16"], path)
    assert row_cosines(pyav_trt.features, cpu.features).min() >= 0.999  # the engine gate, on real frames
    assert row_cosines(gpu.features, cpu.features).min() >= 0.999  # NVDEC + tsf's conversion: the CPU's colours


@pytest.mark.slow
@pytest.mark.full_model
def test_full_model_nvdec_tensorrt_vs_cpu(full_engines, tmp_path):
    bundle_dir, entries = full_engines
    path = videos.make_video(tmp_path / "match_720p.mkv", seconds=30, fps=25, size=(1280, 720))
    cpu, pyav_trt, gpu = run_both(bundle_dir, entries["fp16"], path)
    assert row_cosines(pyav_trt.features, cpu.features).min() >= 0.999
    assert row_cosines(gpu.features, cpu.features).min() >= 0.999
