"""Fidelity: how close one run of the model is to another, and the two bars tsf holds every run to.

One measure, used wherever tsf compares outputs (the exporter's ONNX-against-Paddle parity, the
TensorRT engine check, the CPU precision gate, the GPU tests and the device check): per output,
the maximum absolute difference, the relative L2 error and the cosine of the whole array, and for
row-wise outputs the cosine of the worst row, all in float64. Two bars:
- `MAX_REL_L2`: the same arithmetic (FP32) on another engine, library or device differs only in
  summation order; every output's relative L2 error stays at or below 1e-4. FP32's rounding is
  6e-8 per operation; through a 12-block forward the differences of summation order reach 1e-6
  to 1e-5 (measured between Paddle, ONNX Runtime, OpenVINO and PyTorch on this CPU: RESULTS.md),
  so 1e-4 leaves a decade of margin and still catches TF32 (1e-3) or a wrong operation (>1e-2).
  The same bar holds between a GPU and a CPU (tests/gpu, the device check): a GPU's FP32 differs
  from a CPU's in the same ways only (cuBLAS tiles and splits its sums differently, the fused
  attention accumulates in another order, exp/erf/rsqrt round differently in the last bit), each
  within FP32's rounding, so the forward's difference is of the size measured between CPU
  libraries; TF32 is what would break it, and tsf's FP32 takes none (backends/torch.py). Not yet
  measured on a GPU: the first GPU run reports it, and a failure there is a finding, not a
  reason to loosen the bar.
- `MIN_ROW_COSINE`: a reduced precision (bf16, fp16, int8) against FP32 keeps every row's feature
  vector at cosine 0.999 or above, so that no single second of a match is described worse than
  that (docs/precision.md).

`FidelityGate` is the CPU precision gate: it runs the generated pitch clip through the pipeline
with an engine in FP32 and in a reduced precision, and keeps the record (bundle.json's, else the
bundle cache's, else measured now and cached). The engine chooser (`backends.select_backend`)
receives the gate and reads its records; it never runs the pipeline itself.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bundle import OUTPUT_NAMES, Bundle, bundle_cache_dir, cached_records, update_cached_records
from .gpu import CPU

log = logging.getLogger("tsf")

MAX_REL_L2 = 1e-4
MIN_ROW_COSINE = 0.999
GATE_SECONDS = 6  # the gate's generated clip: 6 s, 6 centre-aligned rows
_TINY = np.finfo(np.float64).tiny


def row_cosines(reference, candidate) -> np.ndarray:
    """The cosine between each row of `reference` and the same row of `candidate` (float64)."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), _TINY)
    return np.sum(ref * cand, axis=1) / norms


def compare(reference, candidate) -> dict:
    """max_abs, rel_l2 and cosine of `candidate` against `reference` (flattened, float64), and for
    arrays of rows the worst row's cosine (`min_row_cosine`)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {cand.shape}")
    flat_ref, flat_cand = ref.ravel(), cand.ravel()
    diff = flat_cand - flat_ref
    ref_norm, cand_norm = np.linalg.norm(flat_ref), np.linalg.norm(flat_cand)
    figures = {
        "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_l2": float(np.linalg.norm(diff) / max(ref_norm, _TINY)),
        "cosine": float(flat_ref @ flat_cand / max(ref_norm * cand_norm, _TINY)),
    }
    if ref.ndim >= 2 and len(ref):
        figures["min_row_cosine"] = float(row_cosines(ref, cand).min())
    return figures


def compare_outputs(reference: dict, candidate: dict) -> dict:
    """`compare` for each of the model's outputs (bundle.OUTPUT_NAMES) present in both."""
    return {name: compare(reference[name], candidate[name]) for name in OUTPUT_NAMES
            if name in reference and name in candidate}


def same_arithmetic_failures(figures: dict) -> list[str]:
    """The outputs of `compare_outputs` figures whose relative L2 error is above `MAX_REL_L2` (or NaN)."""
    return [f"{name} rel L2 {figures[name]['rel_l2']:.2e}" for name in OUTPUT_NAMES
            if name in figures and not figures[name]["rel_l2"] <= MAX_REL_L2]


def reduced_precision_passes(figures: dict) -> bool:
    """True when the worst feature row of `compare_outputs` figures reaches `MIN_ROW_COSINE` (False for NaN)."""
    return bool(figures["features"]["min_row_cosine"] >= MIN_ROW_COSINE)


# ---------------------------------------------------------------------------------------------
# The CPU precision gate

def measure_cpu_gate(bundle: Bundle, engine: str, precision: str, threads: int) -> dict:
    """A generated clip's rows through `engine` in fp32 and in `precision`, compared.

    Returns the record bundle.json and the bundle cache keep: per-row cosines of the features, their
    minimum, the relative L2 error of all features (and of the logits), and whether the worst row
    reaches `MIN_ROW_COSINE`. The two runs take turns, so the gate needs the memory of one engine.
    """
    from .backends.registry import engine_module
    from .pipeline import extract
    from .pitch_clip import draw_pitch_clip
    from .probe import probe_video
    from .sample import plan_windows

    module = engine_module(engine)
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="tsf-fidelity-") as tmp:
        clip = Path(tmp) / "pitch.mkv"
        draw_pitch_clip(clip, GATE_SECONDS, crf=0)  # lossless: the same rows, and figures, every time
        info = probe_video(clip)
        plan = plan_windows(info, bundle.window, "center")
        for run_precision in ("fp32", precision):
            backend = module.load(bundle, CPU, run_precision, threads)
            result = extract(info, plan, bundle, backend, decoder="cpu")
            outputs[run_precision] = {"features": result.features, "logits": result.logits}
            engine_version = backend.describe().get("version")
            del backend
    figures = compare_outputs(outputs["fp32"], outputs[precision])
    cosines = row_cosines(outputs["fp32"]["features"], outputs[precision]["features"])
    return {
        "passed": reduced_precision_passes(figures),
        "min_row_cosine": figures["features"]["min_row_cosine"],
        "rel_l2": figures["features"]["rel_l2"],
        "logits_rel_l2": figures["logits"]["rel_l2"],
        "row_cosines": [round(float(c), 8) for c in cosines],
        "threshold": MIN_ROW_COSINE,
        "reference": f"{engine} fp32",
        "clip": f"generated pitch clip ({GATE_SECONDS} s, 456x256, 25 fps, lossless H.264), {plan.rows} centre-aligned rows",
        "cpu_flags": list(_cpu_flags()),
        "engine_version": engine_version,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_flags() -> tuple[str, ...]:
    from .backends.precision import cpu_flags

    return cpu_flags()


class FidelityGate:
    """The CPU precision gate of one bundle, as `select_backend` consults it: `gate(engine, precision,
    threads)` -> the record. bundle.json's record comes first, then the bundle cache's; either counts
    only when it was measured on a CPU with the same precision features as this one. Otherwise the
    gate is measured now (once: the record is cached under $TSF_HOME/cache/<bundle id>/)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    def recorded(self, engine: str, precision: str) -> dict | None:
        for source in (self.bundle.meta, cached_records(self.bundle)):
            record = source.get("fidelity", {}).get(engine, {}).get(precision)
            if isinstance(record, dict) and record.get("cpu_flags") == list(_cpu_flags()):
                return record
        return None

    def __call__(self, engine: str, precision: str, threads: int) -> dict:
        record = self.recorded(engine, precision)
        if record is not None:
            return record
        log.info("measuring the %s fidelity of %s on bundle %s (once; kept in %s)", precision, engine,
                 self.bundle.bundle_id, bundle_cache_dir(self.bundle))
        record = measure_cpu_gate(self.bundle, engine, precision, threads)
        try:
            update_cached_records(self.bundle, ("fidelity", engine, precision), record)
        except OSError as e:
            log.warning("cannot keep the fidelity record in %s (%s): it will be measured again next time",
                        bundle_cache_dir(self.bundle), e.strerror or e)
        return record
