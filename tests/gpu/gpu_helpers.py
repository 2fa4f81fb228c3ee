"""Constants and helpers shared by the GPU tests (imported by tests/gpu/conftest.py and the tests)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tsf.runtime.backends.tensorrt import tensorrt_support

TRT_REASON = tensorrt_support()


def torch_cuda_reason() -> str | None:
    """None when PyTorch can run on a CUDA GPU here, else why not."""
    try:
        import torch
    except ImportError as e:
        return f"PyTorch is not installed ({e})"
    return None if torch.cuda.is_available() else f"this PyTorch ({torch.__version__}) sees no CUDA GPU"

SMALL_ARCH = {"depth": 2, "width": 128, "heads": 2, "frames": 4}
SMALL_MAX_BATCH = 4


def bundle_with(bundle_dir: Path, entries: list[dict]):
    """The bundle as the runtime sees it once bundle.json lists `entries` (export writes that)."""
    from tsf.runtime.bundle import load_bundle

    return dataclasses.replace(load_bundle(bundle_dir), engines=list(entries))


def row_cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def weights_only_bundle(directory: Path, depth: int, width: int, frames: int):
    """A bundle as the torch engine reads it: architecture + weights.safetensors (no ONNX needed),
    written from the synthetic reference-layout weights of tests/reference/pdparams.py. Its id
    names its size: the bundle cache keeps records (fidelity gates) per id."""
    from safetensors.numpy import save_file

    from reference.pdparams import reference_state
    from tsf.runtime.bundle import WEIGHTS_FILE, Bundle, Preprocessing, Window

    directory.mkdir(parents=True, exist_ok=True)
    save_file(reference_state(np.random.default_rng(depth), depth=depth, width=width, frames=frames),
              str(directory / WEIGHTS_FILE))
    architecture = {"frames": frames, "depth": depth, "width": width, "heads": width // 64, "classes": 18,
                    "image_size": 224, "patch_size": 16, "mlp_ratio": 4}
    return Bundle(dir=directory, meta={}, onnx_path=directory / "model.onnx", architecture=architecture,
                  class_names=tuple(f"class_{i}" for i in range(18)),
                  bundle_id=f"weights-only-d{depth}-w{width}-f{frames}", random_init=True,
                  window=Window.reference(frames), preprocessing=Preprocessing.reference(),
                  weights_path=directory / WEIGHTS_FILE)
