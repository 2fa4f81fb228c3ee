"""Whole videos through the runtime's `Extractor` on the GPU against the CPU path.

GPU: NVDEC decoding, CuPy preprocessing, then the TensorRT FP16 engine or the PyTorch FP16
engine (the producer's stream hands each batch to the engine's with an event). CPU: PyAV, NumPy
preprocessing, ONNX Runtime or PyTorch FP32. Same bundle, same video; cosine per row (the minimum
is printed) and speed.
"""
from __future__ import annotations

import time

import pytest

import videos
from gpu_helpers import bundle_with, row_cosines, torch_cuda_reason, weights_only_bundle
from tsf.runtime.decode_nvdec import nvdec_support
from tsf.runtime.backends.tensorrt import tensorrt_support
from tsf.runtime.fidelity import MIN_ROW_COSINE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(nvdec_support() is not None, reason=str(nvdec_support()))]
needs_tensorrt = pytest.mark.skipif(tensorrt_support() is not None, reason=str(tensorrt_support()))


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


@pytest.mark.skipif(torch_cuda_reason() is not None, reason=str(torch_cuda_reason()))
def test_small_model_nvdec_torch_vs_cpu(tmp_path):
    """The path a GPU without TensorRT runs: NVDEC -> CuPy -> torch fp16, on their own streams."""
    from runtime_helpers import extract

    bundle = weights_only_bundle(tmp_path / "small", depth=2, width=128, frames=4)
    path = videos.make_video(tmp_path / "match.mkv", seconds=12, fps=25, size=(456, 256))
    cpu = extract(path, bundle, backend="torch", device="cpu", precision="fp32", decoder="cpu")
    extract(path, bundle, backend="torch", device="cuda", precision="fp16", decoder="nvdec", batch_size=4)  # warm-up
    gpu = extract(path, bundle, backend="torch", device="cuda", precision="fp16", decoder="nvdec", batch_size=4)
    assert gpu.decoder == "nvdec" and gpu.features.shape == cpu.features.shape
    cosines = row_cosines(gpu.features, cpu.features)
    print(f"\n{path.name}: NVDEC+torch fp16 vs PyAV+torch CPU fp32 min cosine {cosines.min():.6f}; timings "
          f"{gpu.timings}")
    assert cosines.min() >= MIN_ROW_COSINE


@needs_tensorrt
def test_small_model_nvdec_tensorrt_vs_cpu(small_engines, tmp_path):
    bundle_dir, entries = small_engines
    path = videos.make_video(tmp_path / "match.mkv", seconds=12, fps=25, size=(456, 256))
    cpu, pyav_trt, gpu = run_both(bundle_dir, entries["fp16"], path)
    assert row_cosines(pyav_trt.features, cpu.features).min() >= 0.999  # the engine gate, on real frames
    assert row_cosines(gpu.features, cpu.features).min() >= 0.999  # NVDEC + tsf's conversion: the CPU's colours


@needs_tensorrt
@pytest.mark.slow
@pytest.mark.full_model
def test_full_model_nvdec_tensorrt_vs_cpu(full_engines, tmp_path):
    bundle_dir, entries = full_engines
    path = videos.make_video(tmp_path / "match_720p.mkv", seconds=30, fps=25, size=(1280, 720))
    cpu, pyav_trt, gpu = run_both(bundle_dir, entries["fp16"], path)
    assert row_cosines(pyav_trt.features, cpu.features).min() >= 0.999
    assert row_cosines(gpu.features, cpu.features).min() >= 0.999
