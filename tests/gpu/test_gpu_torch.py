"""The PyTorch engine on a CUDA GPU: FP32 against the CPU forward, FP16/BF16 against FP32, CuPy
batches read in place after the stream that wrote them, `cuda:N`, and the metadata.

The CPU forward is proven against ONNX Runtime and the float64 reference in CI
(tests/test_torch_engine.py), so FP32 on the GPU is compared with it. The engine needs only the
bundle's architecture and `weights.safetensors`: the bundles here are written in the test from
the synthetic reference-layout weights of tests/reference/pdparams.py, with neither Paddle nor an
ONNX (the GPU machine may have neither).
"""
from __future__ import annotations

import numpy as np
import pytest

from gpu_helpers import rel_l2, row_cosines
from reference.inputs import random_video
from reference.pdparams import reference_state
from tsf.runtime.backends import select_backend
from tsf.runtime.bundle import WEIGHTS_FILE, Bundle, Preprocessing, Window


def torch_cuda_reason() -> str | None:
    try:
        import torch
    except ImportError as e:
        return f"PyTorch is not installed ({e})"
    return None if torch.cuda.is_available() else f"this PyTorch ({torch.__version__}) sees no CUDA GPU"


REASON = torch_cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]
NAMES = ("features", "logits", "event_times")
FP32_MAX_REL_L2 = 1e-5
HALF_MIN_COSINE = 0.999  # fp16 and bf16 features, per row, against fp32


def weights_only_bundle(directory, depth, width, frames) -> Bundle:
    """A bundle as the torch engine reads it: architecture + weights.safetensors (no ONNX needed)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(reference_state(np.random.default_rng(depth), depth=depth, width=width, frames=frames),
              str(directory / WEIGHTS_FILE))
    architecture = {"frames": frames, "depth": depth, "width": width, "heads": width // 64, "classes": 18,
                    "image_size": 224, "patch_size": 16, "mlp_ratio": 4}
    return Bundle(dir=directory, meta={}, onnx_path=directory / "model.onnx", architecture=architecture,
                  class_names=tuple(f"class_{i}" for i in range(18)), bundle_id="weights-only",
                  random_init=True, window=Window.reference(frames), preprocessing=Preprocessing.reference(),
                  weights_path=directory / WEIGHTS_FILE)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return weights_only_bundle(tmp_path_factory.mktemp("torch") / "small", depth=2, width=128, frames=4)


def compare_precisions(bundle, video, batch_size_label):
    cpu = select_backend(bundle, "torch", "cpu").run(video)
    fp32 = select_backend(bundle, "torch", "cuda", "fp32").run(video)
    for name in NAMES:
        assert fp32[name].dtype == np.float32 and fp32[name].shape == cpu[name].shape
        error = rel_l2(fp32[name], cpu[name])
        print(f"\n{batch_size_label} {name}: torch CUDA fp32 vs CPU fp32 rel L2 {error:.2e}")
        assert error <= FP32_MAX_REL_L2, name
    for precision in ("fp16", "bf16"):
        half = select_backend(bundle, "torch", "cuda", precision).run(video)
        cosines = row_cosines(half["features"], fp32["features"])
        print(f"{batch_size_label} {precision} vs fp32: features min row cosine {cosines.min():.6f}")
        assert half["features"].dtype == np.float32 and cosines.min() >= HALF_MIN_COSINE, precision


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
