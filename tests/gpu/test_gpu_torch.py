"""The PyTorch engine on a CUDA GPU: FP32 against the CPU forward, FP16/BF16 against FP32, CuPy
batches read in place after the stream that wrote them, its own non-blocking stream, `cuda:N`,
and the metadata.

The CPU forward is proven against ONNX Runtime and the float64 reference in CI
(tests/test_torch_engine.py), so FP32 on the GPU is compared with it, the CPU pinned to fp32 (the
CPU's `auto` may be bf16). The bars are fidelity.py's: FP32 on two devices within `MAX_REL_L2`
(why 1e-4 is what two devices can honestly give is written there), fp16/bf16 within
`MIN_ROW_COSINE` of FP32. The engine needs only the bundle's architecture and
`weights.safetensors`: the bundles here are written in the test (gpu_helpers.weights_only_bundle),
with neither Paddle nor an ONNX (the GPU machine may have neither).
"""
from __future__ import annotations

import numpy as np
import pytest

from gpu_helpers import rel_l2, row_cosines, torch_cuda_reason, weights_only_bundle
from reference.inputs import random_video
from tsf.runtime.backends import select_backend
from tsf.runtime.fidelity import MAX_REL_L2, MIN_ROW_COSINE


REASON = torch_cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]
NAMES = ("features", "logits", "event_times")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return weights_only_bundle(tmp_path_factory.mktemp("torch") / "small", depth=2, width=128, frames=4)


def compare_precisions(bundle, video, batch_size_label):
    cpu = select_backend(bundle, "torch", "cpu", "fp32").run(video)
    fp32 = select_backend(bundle, "torch", "cuda", "fp32").run(video)
    for name in NAMES:
        assert fp32[name].dtype == np.float32 and fp32[name].shape == cpu[name].shape
        error = rel_l2(fp32[name], cpu[name])
        print(f"\n{batch_size_label} {name}: torch CUDA fp32 vs CPU fp32 rel L2 {error:.2e}")
        assert error <= MAX_REL_L2, name
    for precision in ("fp16", "bf16"):
        half = select_backend(bundle, "torch", "cuda", precision).run(video)
        cosines = row_cosines(half["features"], fp32["features"])
        print(f"{batch_size_label} {precision} vs fp32: features min row cosine {cosines.min():.6f}")
        assert half["features"].dtype == np.float32 and cosines.min() >= MIN_ROW_COSINE, precision


def test_small_model_precisions(small):
    compare_precisions(small, random_video(np.random.default_rng(0), 3, 4), "small, batch 3:")


def test_auto_precision_on_cuda_is_fp16_and_the_metadata_says_so(small):
    import torch

    engine = select_backend(small, "torch", "cuda")
    assert (engine.name, str(engine.device), engine.precision, engine.wants_gpu_input) == ("torch", "cuda:0", "fp16", True)
    described = engine.describe()
    assert described["gpu"] == torch.cuda.get_device_name(0) and described["cuda"] == torch.version.cuda
    assert (described["library"], described["precision"]) == ("torch", "fp16")


def test_cupy_batches_are_read_in_place_after_the_stream_that_wrote_them(small):
    cupy = pytest.importorskip("cupy")
    engine = select_backend(small, "torch", "cuda", "fp32")
    video = random_video(np.random.default_rng(1), 2, 4)
    expected = engine.run(video)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        on_gpu = cupy.asarray(video)
        on_gpu = on_gpu * cupy.float32(1)  # a kernel on this stream, maybe still running
        out = engine.run(on_gpu)
    for name in NAMES:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-6, atol=1e-6)


def test_the_engine_works_on_a_non_blocking_stream_of_its_own(small):
    """Not the legacy default stream, nor a blocking stream ordered with it: inference never
    waits for, or holds up, the producer's stream (docs/design.md, "GPU streams")."""
    import warnings

    cupy = pytest.importorskip("cupy")
    import torch

    engine = select_backend(small, "torch", "cuda", "fp16")
    assert engine._stream.cuda_stream not in (0, torch.cuda.default_stream(0).cuda_stream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ExternalStream: deprecated in CuPy 14, still there
        assert cupy.cuda.ExternalStream(engine._stream.cuda_stream).is_non_blocking


def test_the_last_gpu_by_index(small):
    import torch

    index = torch.cuda.device_count() - 1
    engine = select_backend(small, "torch", f"cuda:{index}", "fp32")
    assert str(engine.device) == f"cuda:{index}"
    assert next(engine.model.parameters()).device == torch.device("cuda", index)
    assert engine.describe()["gpu"] == torch.cuda.get_device_name(index)


@pytest.mark.full_model
def test_full_size_model_precisions(tmp_path):
    full = weights_only_bundle(tmp_path / "full", depth=12, width=768, frames=16)
    compare_precisions(full, random_video(np.random.default_rng(2), 2, 16), "full size, batch 2:")
