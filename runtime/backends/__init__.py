"""Stage 6: batches of windows -> features, logits and event times, on the fastest engine here.

Every engine is one module of this package (registry.py says what one holds: a class that
follows `registry.Backend`, its `PRECISIONS` and `AUTO_PRIORITY` tables, and a `load(bundle,
device, precision, threads)` function that returns a backend, or raises `EngineUnavailable`
saying why this engine cannot run here). `select_backend` is the one place that chooses: `auto`
walks `AUTO_ORDER` for the device and takes the first engine that loads;
a named engine either loads or fails with its reason. On the CPU the precision an engine runs
is decided by `precision.cpu_precision` (reduced precision only behind its fidelity gate, whose
records the caller hands in as `gate`: runtime/fidelity.py) before the engine loads. Engine
modules are imported only when tried, so a machine pays only for the libraries it uses.
"""

from __future__ import annotations

import logging
import os

from ..bundle import Bundle
from ..errors import BackendError, EngineUnavailable
from ..gpu import CPU, Device, resolve_device
from .precision import Gate, cpu_precision
from .registry import AUTO_ORDER, ENGINES, Backend, engine_module, engine_precisions

__all__ = ["AUTO_ORDER", "BACKEND_CHOICES", "ENGINES", "MAX_THREADS", "PRECISION_CHOICES", "Backend", "Gate",
           "cpu_threads", "engine_precisions", "load_engine", "select_backend"]

log = logging.getLogger("tsf")

BACKEND_CHOICES = ("auto", *ENGINES)
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")


# The most inference threads tsf asks an engine for. ONNX Runtime and OpenVINO take a C int (a
# larger number is a TypeError deep inside them), and no CPU has more cores than this.
MAX_THREADS = 4096


def cpu_threads(requested: int | None = None) -> int:
    """Threads for CPU inference: `requested`, else Slurm's allocation, else the CPUs this process may use.

    Libraries default to every core of the machine, which ignores CPU affinity (containers,
    `taskset`) and oversubscribes a node running several shards.
    """
    if requested:
        threads, source = int(requested), "--threads"
    else:
        slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if not (slurm.isdigit() and int(slurm) > 0):
            try:
                return len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                return os.cpu_count() or 1
        threads, source = int(slurm), "SLURM_CPUS_PER_TASK"
    if not 1 <= threads <= MAX_THREADS:
        raise BackendError(f"{source} {threads}: CPU inference runs on 1 to {MAX_THREADS} threads")
    return threads


def load_engine(name: str, bundle: Bundle, device: Device, precision: str, threads: int | None,
                gate: Gate | None = None) -> Backend:
    module = engine_module(name)
    offered = module.PRECISIONS.get(device.kind, ())
    if not offered:
        raise EngineUnavailable(f"{name} runs on {' or '.join(module.PRECISIONS)} only, not on {device.kind}")
    if precision != "auto" and precision not in offered:
        raise EngineUnavailable(f"{name} on {device.kind} runs {', '.join(offered)}, not {precision}")
    threads = cpu_threads(threads)
    if device.kind == "cpu":
        precision, reason = cpu_precision(name, offered, precision, threads, gate)
    else:
        reason = "asked for" if precision != "auto" else f"auto: {name}'s first choice that fits this bundle and GPU"
    backend = module.load(bundle, device, precision, threads)
    backend.precision_reason = reason
    return backend


def select_backend(bundle: Bundle, backend: str = "auto", device: str = "auto", precision: str = "auto",
                   threads: int | None = None, gate: Gate | None = None) -> Backend:
    """The engine to run `bundle` with, honouring what the user asked for.

    `device`: auto (GPU 0 when there is one, else the CPU), cpu, cuda, cuda:N. An asked-for
    device or engine never falls back silently: it loads or fails with one line saying why. With
    `auto`, an engine that cannot run is skipped with its reason in the log, and on a GPU
    machine where no GPU engine can run, the CPU takes over with a warning. `gate` holds the
    bundle's CPU fidelity records (`fidelity.FidelityGate`); without it the CPU runs fp32.
    """
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {backend!r} ({', '.join(BACKEND_CHOICES)})")
    if precision not in PRECISION_CHOICES:
        raise BackendError(f"unknown precision {precision!r} ({', '.join(PRECISION_CHOICES)})")
    chosen_device, insisted = resolve_device(device)
    if backend != "auto":
        try:
            return load_engine(backend, bundle, chosen_device, precision, threads, gate)
        except EngineUnavailable as e:
            raise BackendError(f"--backend {backend}: {e}") from None

    reasons = []
    for name in AUTO_ORDER[chosen_device.kind]:
        try:
            return load_engine(name, bundle, chosen_device, precision, threads, gate)
        except EngineUnavailable as e:
            reasons.append(f"{name}: {e}")
            log.info("%s cannot run on %s (%s)", name, chosen_device, e)
    if chosen_device.is_cuda and not insisted:
        log.warning("no GPU engine can run here (%s); running on the CPU", "; ".join(reasons))
        return select_backend(bundle, "auto", str(CPU), precision, threads, gate)
    raise BackendError(f"no engine can run on {chosen_device}: " + "; ".join(reasons))
