"""The export parity gate: the ONNX must compute the same function as the Paddle model.

Paddle (the model that was exported) and ONNX Runtime on CPU (the runtime's reference backend)
run the same fresh random inputs in [0, 1] at batch 1 and batch 3 (3 also exercises the dynamic
batch away from any size seen while tracing). Per output: runtime/fidelity.py's measure, over both
batches together, held to its bar for the same arithmetic (relative L2 <= 1e-4).
"""

from __future__ import annotations

import os

import numpy as np

from tsf.runtime.bundle import INPUT_NAME, OUTPUT_NAMES
from tsf.runtime.errors import TsfError
from tsf.runtime.fidelity import MAX_REL_L2, compare, same_arithmetic_failures

PARITY_BATCH_SIZES = (1, 3)


class ParityError(TsfError):
    """The exported model does not reproduce the Paddle model within the gate."""


def random_videos(config: dict, rng: np.random.Generator, batch_sizes=PARITY_BATCH_SIZES) -> list[np.ndarray]:
    frames, size = config["frames"], config["image_size"]
    return [rng.random((b, 3, frames, size, size), dtype=np.float32) for b in batch_sizes]


def run_paddle(model, video: np.ndarray) -> dict[str, np.ndarray]:
    import paddle

    # Paddle pins its CPU math library to one thread on import (OMP_NUM_THREADS=1); the parity run
    # of a full-size model takes minutes that way. ONNX Runtime uses every core by default.
    if hasattr(paddle.base.core, "set_num_threads"):
        paddle.base.core.set_num_threads(os.cpu_count() or 1)
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(video))
    return {name: out.numpy() for name, out in zip(OUTPUT_NAMES, outputs)}


def onnxruntime_cpu_session(onnx_path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initialisers are noise here
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def run_onnxruntime(session, video: np.ndarray) -> dict[str, np.ndarray]:
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: video})
    return dict(zip(OUTPUT_NAMES, outputs))


def measure_parity(model, onnx_path, config: dict, seed: int | None = None) -> dict:
    """The `parity["onnxruntime-cpu"]` entry of bundle.json; `seed=None` draws fresh inputs."""
    rng = np.random.default_rng(seed)
    session = onnxruntime_cpu_session(onnx_path)
    paddle_out = {name: [] for name in OUTPUT_NAMES}
    ort_out = {name: [] for name in OUTPUT_NAMES}
    for video in random_videos(config, rng):
        for store, outputs in ((paddle_out, run_paddle(model, video)), (ort_out, run_onnxruntime(session, video))):
            for name in OUTPUT_NAMES:
                store[name].append(outputs[name])
    figures = {"batch_sizes": list(PARITY_BATCH_SIZES)}
    for name in OUTPUT_NAMES:
        figures[name] = compare(np.concatenate(paddle_out[name]), np.concatenate(ort_out[name]))
    return figures


def check_parity(figures: dict) -> None:
    failing = same_arithmetic_failures(figures)
    if failing:
        raise ParityError(
            f"ONNX Runtime does not reproduce Paddle (gate: rel L2 <= {MAX_REL_L2:g}): " + ", ".join(failing)
        )


def format_parity(figures: dict, label: str = "ONNX Runtime CPU vs Paddle") -> str:
    batches = " and ".join(str(b) for b in figures.get("batch_sizes", []))
    parts = [
        f"{name} rel_l2 {figures[name]['rel_l2']:.1e} max_abs {figures[name]['max_abs']:.1e} "
        f"cos {figures[name]['cosine']:.6f}"
        for name in OUTPUT_NAMES if name in figures
    ]
    return f"parity ({label}, batch {batches}): " + "; ".join(parts)
