"""TensorRT engines on a real GPU: build (FP16, FP32), parity gate, and the runtime backend.

The reference is ONNX Runtime on the CPU (float32), independent of TensorRT and CUDA.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from gpu_helpers import SMALL_MAX_BATCH, bundle_with, rel_l2, row_cosines
from tsf.runtime.gpu import Device
from tsf.runtime.backends.tensorrt import GpuIdentity, engine_file_stem, engine_matches, find_engine, tensorrt_support

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(tensorrt_support() is not None,
                                                  reason=str(tensorrt_support()))]
NAMES = ("features", "logits", "event_times")


def ort_cpu(bundle_dir: Path, video: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(NAMES, session.run(list(NAMES), {"video": video})))


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_entry_and_files(small_engines, precision):
    bundle_dir, entries = small_engines
    entry = entries[precision]
    assert (bundle_dir / entry["file"]).stat().st_size == entry["size_bytes"] > 0
    assert (bundle_dir / entry["timing_cache"]).stat().st_size > 0
    gpu = GpuIdentity(entry["gpu_name"], entry["compute_capability"])
    assert Path(entry["file"]).stem == engine_file_stem(precision, gpu, entry["tensorrt_version"], SMALL_MAX_BATCH)
    assert (entry["min_batch"], entry["opt_batch"], entry["max_batch"]) == (1, 2, SMALL_MAX_BATCH)
    assert entry["parity"]["batch_sizes"] == [1, 3]
    assert engine_matches(entry) is None
    # FP16: the ONNX nodes kept FP32, 2 blocks x 3 LayerNorms + final norm, 2 softmaxes per block
    assert entry["parity"]["fp32_layers"] == (7 + 4 if precision == "fp16" else 0)


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_backend_matches_onnxruntime_cpu(small_engines, precision):
    import cupy

    from tsf.runtime.backends.tensorrt import TensorRTBackend

    bundle_dir, entries = small_engines
    bundle = bundle_with(bundle_dir, [entries[precision]])
    backend = TensorRTBackend(bundle, entries[precision], Device("cuda", 0))
    assert (backend.name, str(backend.device), backend.precision) == ("tensorrt", "cuda:0", precision)
    assert backend.max_batch == SMALL_MAX_BATCH and backend.default_batch_size == 2
    video = np.random.default_rng(7).random((2 * SMALL_MAX_BATCH + 1, 3, 4, 224, 224), dtype=np.float32)
    expected = ort_cpu(bundle_dir, video)
    from_host = backend.run(video)  # 9 rows through a max-batch-4 engine: 4 + 4 + 1
    from_device = backend.run(cupy.asarray(video))
    for name in NAMES:
        assert from_host[name].dtype == np.float32 and from_host[name].shape == expected[name].shape
        np.testing.assert_allclose(from_device[name], from_host[name], rtol=1e-6, atol=1e-6)
    cosines = row_cosines(from_host["features"], expected["features"])
    errors = {name: rel_l2(from_host[name], expected[name]) for name in NAMES}
    print(f"\n{precision} backend vs ORT CPU: features min row cosine {cosines.min():.6f}, rel L2 {errors}")
    if precision == "fp16":
        assert cosines.min() >= 0.999
    else:
        assert max(errors.values()) <= 1e-3


def test_find_engine_prefers_fp16(small_engines):
    bundle_dir, entries = small_engines
    bundle = bundle_with(bundle_dir, [entries["fp32"], entries["fp16"]])
    found, reasons = find_engine(bundle)
    assert found == entries["fp16"] and reasons == []
    found, _ = find_engine(bundle, precision="fp32")
    assert found == entries["fp32"]
    foreign = dict(entries["fp16"], compute_capability="1.0")
    found, reasons = find_engine(bundle_with(bundle_dir, [foreign]))
    assert found is None and "compute capability 1.0" in reasons[0]


def test_select_backend_picks_the_engine(small_engines):
    from tsf.runtime.backends import select_backend

    bundle_dir, entries = small_engines
    backend = select_backend(bundle_with(bundle_dir, [entries["fp16"]]), "auto", "auto")
    assert backend.name == "tensorrt" and backend.precision == "fp16"


def test_refused_engine_leaves_nothing_behind(small_engines, tmp_path, monkeypatch):
    from tsf.export import tensorrt_engine
    from tsf.runtime import fidelity

    bundle_dir, _ = small_engines
    monkeypatch.setattr(fidelity, "MIN_ROW_COSINE", 1.5)  # a gate nothing passes
    with pytest.raises(tensorrt_engine.EngineParityError, match="fp16 engine refused"):
        tensorrt_engine.build_engine(bundle_dir / "model.onnx", tmp_path, precision="fp16", max_batch=2,
                                     frames=4, image_size=224)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


@pytest.mark.slow
@pytest.mark.full_model
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_full_model_engine(full_engines, precision):
    """The reference-sized model: gate figures, and batch-1 / best-batch latency for RESULTS.md."""
    import cupy

    from tsf.runtime.backends.tensorrt import TensorRTBackend

    bundle_dir, entries = full_engines
    entry = entries[precision]
    backend = TensorRTBackend(bundle_with(bundle_dir, [entry]), entry, Device("cuda", 0))
    video = np.random.default_rng(3).random((3, 3, 16, 224, 224), dtype=np.float32)
    expected = ort_cpu(bundle_dir, video)
    got = backend.run(video)
    cosines = row_cosines(got["features"], expected["features"])
    print(f"\nfull {precision}: features min row cosine vs ORT CPU {cosines.min():.6f}, "
          f"rel L2 {rel_l2(got['features'], expected['features']):.2e}")
    if precision == "fp16":
        assert cosines.min() >= 0.999
    else:
        assert rel_l2(got["features"], expected["features"]) <= 1e-3

    for batch in (1, 8, 16, 32):
        clips = cupy.random.random((batch, 3, 16, 224, 224), dtype=cupy.float32)
        backend.run(clips)  # warm-up
        cupy.cuda.Device().synchronize()
        started, repeats = time.perf_counter(), 5
        for _ in range(repeats):
            backend.run(clips)
        seconds = (time.perf_counter() - started) / repeats
        print(f"full {precision} batch {batch}: {seconds * 1000:.1f} ms/batch, {batch / seconds:.1f} clips/s")
