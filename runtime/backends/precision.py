"""Reduced precision on the CPU: which precision runs, and the fidelity gate that allows it.

On CPUs with native BF16 and INT8 dot products, OpenVINO's BF16 and ONNX Runtime's dynamic INT8
run the model about twice as fast as FP32 (benchmarks/RESULTS.md), and both move the features a
little, by an amount that depends on the weights. So a reduced precision runs only once its
fidelity gate has passed for this bundle on this kind of CPU: the rows of a generated clip
(`pitch_clip.py`, decoded and preprocessed like a match) through the same engine in FP32 and in
the reduced precision, the worst row's cosine at least `MIN_ROW_COSINE`. The gate itself (runtime/fidelity.py,
`FidelityGate`) is measured once: by `tsf-export` (bundle.json `fidelity`), or on first use, kept
under `$TSF_HOME/cache/<bundle id>/` because bundles may be read-only. This module only reads the
gate's records, through the `gate` callable its caller hands in.

The policy, `cpu_precision`, for one engine and what it offers on the CPU:
- `auto`: bf16 where the engine offers it, the CPU has native BF16 (AVX512_BF16 or AMX) and the
  gate passed; otherwise fp32. INT8 is never chosen by `auto`: its error depends on the
  activation ranges of trained weights (docs/precision.md).
- `bf16` or `int8` asked for: runs when the gate passes; refused with a warning (fp32 runs) when
  it fails. bf16 on a CPU without native BF16 cannot run (emulated, it is slower than FP32).
- `fp32`: fp32.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

from ..errors import EngineUnavailable

log = logging.getLogger("tsf")

# gate(engine, precision, threads) -> the gate's record for this bundle (runtime/fidelity.py)
Gate = Callable[[str, str, int], dict]
# The CPU features the speed and the numerics of reduced precision depend on: a gate measured on a
# CPU with another set is measured again (e.g. INT8 without VNNI takes a different kernel).
PRECISION_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """The `PRECISION_FLAGS` this CPU has, from /proc/cpuinfo (none where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.partition(":")[2].split())
            return tuple(flag for flag in PRECISION_FLAGS if flag in present)
    return ()


def native_bf16() -> str | None:
    """The flag that gives this CPU native BF16 dot products, or None."""
    return next((flag for flag in cpu_flags() if flag in NATIVE_BF16_FLAGS), None)


def gated_precisions(offered: tuple[str, ...], has_int8_model: bool) -> list[str]:
    """The reduced precisions of an engine's `offered` ones whose gate is worth measuring on this
    CPU ahead of use (what `tsf-export` records): bf16 where the CPU has native BF16, int8 where the
    bundle carries its INT8 model."""
    return [p for p in offered if (p == "bf16" and native_bf16() is not None) or (p == "int8" and has_int8_model)]


def cpu_precision(engine: str, offered: tuple[str, ...], requested: str, threads: int,
                  gate: Gate | None) -> tuple[str, str]:
    """(the precision `engine` runs on the CPU, why): the policy above. `gate` gives the bundle's
    fidelity records; without one, no reduced precision can be allowed."""
    if requested == "fp32":
        return "fp32", "asked for"
    if requested == "auto":  # bf16 or fp32: int8 is opt-in only
        if "bf16" not in offered:
            return "fp32", f"auto: {engine} offers no bf16 (int8 is opt-in)"
        if native_bf16() is None:
            return "fp32", "auto: this CPU has no native BF16 (avx512_bf16 or amx_bf16)"
        candidate = "bf16"
    else:
        candidate = requested
        if candidate == "bf16" and native_bf16() is None:
            raise EngineUnavailable("this CPU has no native BF16 (avx512_bf16 or amx_bf16): emulated BF16 "
                                    "is slower than fp32; use --precision fp32")
    if gate is None:
        if requested == "auto":
            return "fp32", "auto: no fidelity gate was given to allow bf16"
        raise EngineUnavailable(f"{candidate} runs only behind its fidelity gate, and none was given")
    record = gate(engine, candidate, threads)
    summary = (f"fidelity gate {'passed' if record['passed'] else 'failed'}: worst row cos "
               f"{record['min_row_cosine']:.6f}, rel L2 {record['rel_l2']:.1e}")
    if record["passed"]:
        why = f"auto: native BF16 ({native_bf16()})" if requested == "auto" else "asked for"
        return candidate, f"{why}, {summary}"
    log.warning("%s %s refused (%s); running fp32", engine, candidate, summary)
    return "fp32", f"{candidate} refused, {summary}"
