"""The torch engine on CUDA against the same engine on the CPU (which CI proves against ONNX Runtime).

Runs on the lent GPU machine, which has torch and CuPy but no Paddle: the bundle is random weights
under the reference's names (benchmarks/device_check.py's `random_weights_bundle`), no ONNX.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_helpers import rel_l2, row_cosines

# The project's GPU gates: FP32 differs from the CPU by summation order only; FP16/BF16 keep the features.
from tsf.export.tensorrt_engine import FP16_MIN_FEATURE_COSINE, FP32_MAX_REL_L2
from tsf.runtime.gpu import GPU_IMPORT_ERRORS


def torch_cuda_reason() -> str | None:
    try:
        import torch
    except GPU_IMPORT_ERRORS as e:
        return f"torch is not installed ({e})"
    return None if torch.cuda.is_available() else "torch sees no CUDA GPU"


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch_cuda_reason() is not None, reason=str(torch_cuda_reason()))]
ARCH = {"frames": 4, "depth": 2, "width": 128, "heads": 2, "image_size": 224, "patch_size": 16, "num_classes": 18,
        "mlp_ratio": 4}
NAMES = ("features", "logits", "event_times")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # benchmarks/ is not installed; it lives beside the packages
        sys.path.insert(0, root)
    from benchmarks.device_check import random_weights_bundle

    return random_weights_bundle(str(tmp_path_factory.mktemp("torch") / "bundle"), ARCH, seed=1)


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(2).random((3, 3, ARCH["frames"], 224, 224), dtype=np.float32)


@pytest.fixture(scope="module")
def cpu_fp32(bundle, clips):
    from tsf.runtime.backends import select_backend

    return select_backend(bundle, "torch", "cpu", "fp32").run(clips)


def test_cuda_fp32_matches_the_cpu(bundle, clips, cpu_fp32):
    from tsf.runtime.backends import select_backend

    backend = select_backend(bundle, "torch", "cuda:0", "fp32")
    assert (backend.name, str(backend.device), backend.precision, backend.wants_gpu_input) == (
        "torch", "cuda:0", "fp32", True)
    got = backend.run(clips)
    errors = {name: rel_l2(got[name], cpu_fp32[name]) for name in NAMES}
    print(f"\ntorch cuda fp32 vs cpu fp32: rel L2 {errors}")
    assert all(got[name].dtype == np.float32 and got[name].shape == cpu_fp32[name].shape for name in NAMES)
    assert max(errors.values()) <= FP32_MAX_REL_L2


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precisions_keep_the_features(bundle, clips, cpu_fp32, precision):
    import cupy
    from tsf.runtime.backends import select_backend

    backend = select_backend(bundle, "torch", "cuda", precision)
    from_host = backend.run(clips)
    from_device = backend.run(cupy.asarray(clips))  # CuPy batches are read in place (DLPack)
    cosines = row_cosines(from_host["features"], cpu_fp32["features"])
    print(f"\ntorch cuda {precision} vs cpu fp32: features min row cosine {cosines.min():.6f}")
    assert cosines.min() >= FP16_MIN_FEATURE_COSINE
    for name in NAMES:
        np.testing.assert_allclose(from_device[name], from_host[name], rtol=1e-3, atol=1e-3)  # same rows read
