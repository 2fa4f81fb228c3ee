"""Fixtures for the GPU tests (marker `gpu`): small bundles with TensorRT engines built here.

Everything in tests/gpu/ needs an NVIDIA GPU plus the `gpu` extra and skips cleanly elsewhere;
the engines are built once per session. Figures worth reporting (build time, engine size, parity,
pixel differences, cosines, speed) are printed: run with `pytest -m gpu -s tests/gpu`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gpu_helpers import SMALL_ARCH, SMALL_MAX_BATCH, TRT_REASON


@pytest.fixture(scope="session")
def small_engines(tmp_path_factory):
    """(bundle directory, {"fp16": entry, "fp32": entry}) for a depth-2 width-128 4-frame model."""
    if TRT_REASON is not None:
        pytest.skip(TRT_REASON)
    from tsf.export import export_bundle
    from tsf.export.tensorrt_engine import build_engine

    bundle_dir = Path(export_bundle(tmp_path_factory.mktemp("gpu") / "small", random_init=True,
                                    arch=SMALL_ARCH, seed=0))
    entries = {}
    for precision in ("fp16", "fp32"):
        entries[precision] = build_engine(bundle_dir / "model.onnx", bundle_dir, precision=precision,
                                          max_batch=SMALL_MAX_BATCH, opt_batch=2, frames=4, image_size=224, seed=1)
        entry = entries[precision]
        print(f"\nsmall {precision} engine: build {entry['build_seconds']} s, {entry['size_bytes']} bytes, "
              f"{entry['parity']['fp32_layers']} ONNX nodes kept FP32, parity {entry['parity']}")
    return bundle_dir, entries


@pytest.fixture(scope="session")
def full_engines(tmp_path_factory):
    """(bundle directory, {"fp16": entry, "fp32": entry}) for the reference-sized model."""
    if TRT_REASON is not None:
        pytest.skip(TRT_REASON)
    from tsf.export import export_bundle
    from tsf.export.tensorrt_engine import build_engine

    bundle_dir = Path(export_bundle(tmp_path_factory.mktemp("gpu") / "full", random_init=True, seed=0))
    entries = {}
    for precision in ("fp16", "fp32"):
        entries[precision] = build_engine(bundle_dir / "model.onnx", bundle_dir, precision=precision,
                                          max_batch=32, frames=16, image_size=224, seed=1)
        entry = entries[precision]
        print(f"\nfull {precision} engine ({entry['gpu_name']}, TensorRT {entry['tensorrt_version']}): "
              f"build {entry['build_seconds']} s, {entry['size_bytes'] / 2**20:.0f} MiB, "
              f"{entry['parity']['fp32_layers']} ONNX nodes kept FP32, features {entry['parity']['features']}")
    return bundle_dir, entries
