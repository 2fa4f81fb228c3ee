"""Reduced precision on the CPU: which precision runs, and the fidelity gate that allows it.

On CPUs with native BF16 and INT8 dot products, OpenVINO's BF16 and ONNX Runtime's dynamic INT8
run the model about twice as fast as FP32 (benchmarks/RESULTS.md), and both move the features a
little, by an amount that depends on the weights. So a reduced precision runs only once its
fidelity gate has passed for this bundle on this kind of CPU: the rows of a generated clip
(`pitch_clip.py`, decoded and preprocessed like a match) through the same engine in FP32 and in
the reduced precision, the worst row's cosine at least `MIN_ROW_COSINE`. The gate is measured
once: by `tsf-export` (bundle.json `fidelity`), or on first use, kept under
`$TSF_HOME/cache/<bundle id>/` because bundles may be read-only.

The policy, `cpu_precision`, for one engine and what it offers on the CPU:
- `auto`: bf16 where the engine offers it, the CPU has native BF16 (AVX512_BF16 or AMX) and the
  gate passed; otherwise fp32. INT8 is never chosen by `auto`: its error depends on the
  activation ranges of trained weights (docs/precision.md).
- `bf16` or `int8` asked for: runs when the gate passes; refused with a warning (fp32 runs) when
  it fails. bf16 on a CPU without native BF16 cannot run (emulated, it is slower than FP32).
- `fp32`: fp32.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..bundle import Bundle, tsf_home
from ..errors import EngineUnavailable
from ..gpu import CPU
from .registry import engine_module

log = logging.getLogger("tsf")

MIN_ROW_COSINE = 0.999
# The CPU features the speed and the numerics of reduced precision depend on: a gate measured on a
# CPU with another set is measured again (e.g. INT8 without VNNI takes a different kernel).
PRECISION_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
GATE_SECONDS = 6  # the generated clip: 6 s, 6 centre-aligned rows
CACHE_RECORDS = "records.json"


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


def cpu_precision(engine: str, bundle: Bundle, offered: tuple[str, ...], requested: str,
                  threads: int) -> tuple[str, str]:
    """(the precision `engine` runs `bundle` with on the CPU, why): the policy above."""
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
    record = fidelity_record(bundle, engine, candidate, threads)
    summary = (f"fidelity gate {'passed' if record['passed'] else 'failed'}: worst row cos "
               f"{record['min_row_cosine']:.6f}, rel L2 {record['rel_l2']:.1e}")
    if record["passed"]:
        why = f"auto: native BF16 ({native_bf16()})" if requested == "auto" else "asked for"
        return candidate, f"{why}, {summary}"
    log.warning("%s %s refused for bundle %s (%s, below %g); running fp32", engine, candidate,
                bundle.bundle_id, summary, MIN_ROW_COSINE)
    return "fp32", f"{candidate} refused, {summary}"


# ---------------------------------------------------------------------------------------------
# The fidelity gate

def measure_fidelity(bundle: Bundle, engine: str, precision: str, threads: int) -> dict:
    """The gate: a generated clip's rows through `engine` in fp32 and in `precision`, compared.

    Returns the record bundle.json and the cache keep: per-row cosines of the features, their
    minimum, the relative L2 error of all features (and of the logits), and whether the worst
    row reaches `MIN_ROW_COSINE`. The two engines run one after the other, so that the gate needs
    no more memory than one of them.
    """
    from ..pipeline import extract
    from ..pitch_clip import draw_pitch_clip
    from ..probe import probe_video
    from ..sample import plan_windows
    module = engine_module(engine)
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="tsf-fidelity-") as tmp:
        clip = Path(tmp) / "pitch.mkv"
        draw_pitch_clip(clip, GATE_SECONDS, crf=0)  # lossless: the same rows, and figures, every time
        info = probe_video(clip)
        plan = plan_windows(info, "center", frames=bundle.frames)
        for run_precision in ("fp32", precision):
            backend = module.load(bundle, CPU, run_precision, threads)
            result = extract(info, plan, bundle, backend, decoder="cpu")
            outputs[run_precision] = (result.features.astype(np.float64), result.logits.astype(np.float64))
            engine_version = backend.describe().get("version")
            del backend
    (reference, reference_logits), (candidate, candidate_logits) = outputs["fp32"], outputs[precision]
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    row_cosines = (reference * candidate).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    min_row_cosine = float(row_cosines.min())
    return {
        "passed": bool(min_row_cosine >= MIN_ROW_COSINE),  # False for NaN too
        "min_row_cosine": min_row_cosine,
        "rel_l2": _rel_l2(reference, candidate),
        "logits_rel_l2": _rel_l2(reference_logits, candidate_logits),
        "row_cosines": [round(float(c), 8) for c in row_cosines],
        "threshold": MIN_ROW_COSINE,
        "reference": f"{engine} fp32",
        "clip": f"generated pitch clip ({GATE_SECONDS} s, 456x256, 25 fps, lossless H.264), {plan.rows} centre-aligned rows",
        "cpu_flags": list(cpu_flags()),
        "engine_version": engine_version,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), np.finfo(np.float64).tiny))


def fidelity_record(bundle: Bundle, engine: str, precision: str, threads: int) -> dict:
    """The gate's record for (engine, precision): bundle.json's, else the cache's, else measured now
    (and cached). A record measured on a CPU with other precision features does not count."""
    for source in (bundle.meta, cached_records(bundle)):
        record = source.get("fidelity", {}).get(engine, {}).get(precision)
        if isinstance(record, dict) and record.get("cpu_flags") == list(cpu_flags()):
            return record
    log.info("measuring the %s fidelity of %s on bundle %s (once; kept in %s)", precision, engine,
             bundle.bundle_id, cache_dir(bundle))
    record = measure_fidelity(bundle, engine, precision, threads)
    try:
        update_cached_records(bundle, ("fidelity", engine, precision), record)
    except OSError as e:
        log.warning("cannot keep the fidelity record in %s (%s): it will be measured again next time",
                    cache_dir(bundle), e.strerror or e)
    return record


# ---------------------------------------------------------------------------------------------
# The cache: what a read-only bundle cannot hold, in bundle.json's own layout

def cache_dir(bundle: Bundle) -> Path:
    return tsf_home() / "cache" / bundle.bundle_id


def cached_records(bundle: Bundle) -> dict:
    try:
        records = json.loads((cache_dir(bundle) / CACHE_RECORDS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def update_cached_records(bundle: Bundle, keys: tuple[str, ...], value) -> None:
    """Set records[k1][k2]... = value in the cache's records.json, atomically; concurrent processes
    (shards of one job on one node) take turns through a lock file."""
    directory = cache_dir(bundle)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = cached_records(bundle)
        node = records
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        tmp = directory / f".{CACHE_RECORDS}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, directory / CACHE_RECORDS)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
