"""What every benchmark shares: provenance, test videos, model bundles, child processes, output files.

Why each dependency is here:
- PyAV (a tsf dependency) encodes the test videos, so no video file ships with the repository.
- /proc/<pid>/status (Linux) gives each child process's own peak RSS (VmHWM): every measured run
  lives in a fresh child so that one run's memory high-water mark never mixes with another's.
- psutil (`bench` extra, optional) only reads physical core count and total RAM for the machine
  line; /proc is the fallback.
- matplotlib (`bench` extra) draws the plots; imported lazily so tables come out without it.
- `nvidia-smi` (part of the NVIDIA driver) samples GPU memory during a GPU run.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("TSF_BENCH_CACHE", Path.home() / ".cache" / "tsf-bench"))

# SoccerNet's 224p videos are 398x224; the other two are the usual broadcast sizes.
RESOLUTIONS = {"224p": (398, 224), "720p": (1280, 720), "1080p": (1920, 1080)}

# The reference architecture; benchmarks override only `depth` for the "small" model so that the
# per-block cost, the input and the whole pipeline stay the reference's.
REFERENCE_ARCH = {"frames": 16, "depth": 12, "width": 768, "heads": 12, "image_size": 224,
                  "patch_size": 16, "num_classes": 18, "mlp_ratio": 4}
SMALL_ARCH = {**REFERENCE_ARCH, "depth": 2}


# ---------------------------------------------------------------------------------------------
# Provenance: every figure carries machine, command, date and commit.

def _read(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> dict:
    # A run from a copy of benchmarks/ outside the checkout (so that an installed wheel, not the
    # source tree, is what gets imported) passes the checkout's commit along.
    if os.environ.get("TSF_BENCH_COMMIT"):
        return {"commit": os.environ["TSF_BENCH_COMMIT"], "dirty": os.environ.get("TSF_BENCH_DIRTY") == "1"}
    short = _read(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    # Uncommitted changes to tracked code files mean the commit alone does not reproduce the figures.
    dirty = bool(_read(["git", "status", "--porcelain", "--untracked-files=no", "--",
                        "runtime", "export", "training", "tsf", "benchmarks"]))
    return {"commit": short, "dirty": dirty}


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_info() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    out = _read(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory_mib": float(parts[1]), "driver": parts[2]})
    return gpus


def machine_info() -> dict:
    cpu_model = ""
    for line in _read(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    cpu_model = cpu_model or platform.processor() or platform.machine()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        ram_gib = psutil.virtual_memory().total / 2**30
    except ImportError:
        physical = None
        with open("/proc/meminfo") as f:
            ram_gib = int(f.readline().split()[1]) / 2**20
    packages = ["tsf", "numpy", "av", "onnxruntime", "onnxruntime-gpu", "openvino", "paddlepaddle", "paddlepaddle-gpu",
                "tensorrt", "tensorrt-cu13", "tensorrt-cu12", "cupy-cuda13x", "cupy-cuda12x", "PyNvVideoCodec",
                "torch", "safetensors"]
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(ram_gib, 1),
        "gpus": gpu_info(),
        "python": platform.python_version(),
        "packages": {p: v for p in packages if (v := _package_version(p))},
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def provenance(argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m " + shlex.join([_module_name(argv[0])] + list(argv[1:])),
        **git_commit(),
        "machine": machine_info(),
        "load_average_at_start": load_average(),
    }


def _module_name(script: str) -> str:
    path = Path(script).resolve()
    try:
        return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    except ValueError:
        return script


def machine_line(machine: dict) -> str:
    cores = machine.get("physical_cores") or machine.get("logical_cpus")
    line = f"{machine['cpu_model']}, {cores} cores ({machine['usable_cpus']} usable), {machine['ram_gib']} GiB RAM"
    for gpu in machine.get("gpus", []):
        line += f"; GPU {gpu['name']} ({gpu['memory_mib'] / 1024:.0f} GiB, driver {gpu['driver']})"
    return line


def provenance_markdown(prov: dict) -> str:
    dirty = " (with uncommitted changes)" if prov.get("dirty") else ""
    return (f"- machine: {machine_line(prov['machine'])}\n"
            f"- command: `{prov['command']}`\n"
            f"- date: {prov['date_utc']}; tsf commit `{prov['commit']}`{dirty}\n"
            f"- load average at start (1/5/15 min): {' / '.join(map(str, prov['load_average_at_start']))}\n")


# ---------------------------------------------------------------------------------------------
# Output: JSON + a Markdown table (+ PNG plots) per benchmark, all in one folder.

def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_report(out: Path, name: str, title: str, prov: dict, result: dict, markdown) -> str:
    """A standalone benchmark's outputs: NAME.json (provenance + every number), NAME.md, printed."""
    write_json(out / f"{name}.json", {"provenance": prov, **result})
    text = f"## {title}\n\n" + provenance_markdown(prov) + "\n" + markdown(result)
    write_text(out / f"{name}.md", text)
    print(text)
    return text


def _json_default(obj):
    if isinstance(obj, Fraction):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """`columns`: (key, header, format spec). Missing values print as an en dash."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k), spec) for k, _, spec in columns) + " |")
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> str:
    """Write a figure as PNG (creating the folder) and close it; returns the file name."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


MIB = 2**20


# ---------------------------------------------------------------------------------------------
# Test videos: generated once with PyAV/libx264 into the cache.

def test_video(cache_dir: Path, resolution: str | tuple[int, int], seconds: float, fps: int = 25,
               gop_seconds: float | None = None) -> Path:
    """A cached H.264 MKV of a panning pitch with moving players (so inter frames carry motion).
    `gop_seconds`: a keyframe at least that often, as broadcasts have (libx264's default: every
    250 frames), so that a short video splits among several decoders."""
    width, height = RESOLUTIONS[resolution] if isinstance(resolution, str) else resolution
    gop = round(gop_seconds * fps) if gop_seconds else None
    path = Path(cache_dir) / "videos" / f"pitch-{width}x{height}-{fps}fps-{seconds:g}s{f'-gop{gop}' if gop else ''}.mkv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _encode_pitch(path, width, height, seconds, fps, gop)
    return path


def _encode_pitch(path: Path, width: int, height: int, seconds: float, fps: int, gop: int | None = None) -> None:
    import numpy as np

    from tsf.runtime.pitch_clip import write_h264_mkv

    rng = np.random.default_rng(0)
    pan = width // 2  # the background is wider than the frame and pans like a broadcast camera
    yy, xx = np.mgrid[0:height, 0:width + pan]
    field_ = np.zeros((height, width + pan, 3), np.uint8)
    field_[..., 1] = np.where((xx // max(8, width // 10)) % 2 == 0, 140, 118)
    field_[..., 0], field_[..., 2] = 35, 45
    field_ = np.clip(field_.astype(np.int16) + rng.integers(-6, 7, field_.shape), 0, 255).astype(np.uint8)
    field_[(abs(xx - (width + pan) // 2) < max(1, width // 300)) | (yy < height // 40)] = 235
    players = rng.uniform([0, 0], [width, height], size=(22, 2))
    speeds = rng.normal(0, width / 300, size=(22, 2))
    size = max(2, height // 40)
    # Sensor-like grain that changes every frame keeps the bitrate near a broadcast file's
    # (a few Mbit/s at 1080p); a clean synthetic picture would compress, and decode, unrealistically well.
    grain = [rng.integers(-5, 6, (height, width, 1), dtype=np.int16) for _ in range(7)]

    def frames():
        nonlocal players
        for i in range(int(round(seconds * fps))):
            offset = int(pan / 2 * (1 + np.sin(i / fps / 3)))
            frame = field_[:, offset:offset + width] + grain[i % len(grain)]
            players = np.clip(players + speeds, [size, 2 * size], [width - size, height - 2 * size])
            for k, (px, py) in enumerate(players.astype(int)):
                frame[py - 2 * size:py + 2 * size, px - size:px + size] = (200, 30, 30) if k < 11 else (30, 60, 200)
            yield np.clip(frame, 0, 255).astype(np.uint8)

    write_h264_mkv(path, frames(), fps, width, height, gop=gop)


# ---------------------------------------------------------------------------------------------
# Child processes: one per measurement, so each has its own peak RSS and a clean environment.

@dataclass
class ChildRun:
    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    peak_gpu_bytes: int | None = None
    stdout: str = ""
    stderr: str = ""
    result: dict | None = field(default=None)

    def check(self) -> "ChildRun":
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"benchmark child failed (exit {self.returncode}): {shlex.join(self.command)}\n{tail}")
        return self


class GpuMemorySampler:
    """Peak GPU memory in use on the device during a run, above what was in use before it.

    Device-wide (`nvidia-smi --query-gpu=memory.used`), not per process: inside containers the
    per-process query often lists no PIDs. Benchmarks run one child at a time, so the two agree.
    """

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.available = bool(shutil.which("nvidia-smi")) and bool(gpu_info())
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = None

    def _used_mib(self) -> float:
        out = _read(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"])
        try:
            return float(out.splitlines()[0])
        except (IndexError, ValueError):
            return 0.0

    def __enter__(self):
        if self.available:
            self._before = self._used_mib()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, self._used_mib() - self._before)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def peak_bytes(self) -> int | None:
        return int(self.peak_mib * MIB) if self.available else None


class PeakRssSampler:
    """A child's peak RSS: its VmHWM (the high-water mark of its own address space) read from
    /proc while it runs; the last reading before it exits is the peak, up to one interval.

    Why not `wait4`'s `ru_maxrss`: Linux carries the parent's RSS at fork/vfork time into the
    child's maxrss (the pre-exec copy of the parent's address space counts), so a child of a
    500 MB parent would never read below 500 MB. VmHWM belongs to the address space created at
    exec, so it is the child's own.
    """

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.path = f"/proc/{pid}/status"
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with open(self.path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_bytes = max(self.peak_bytes, int(line.split()[1]) * 1024)
                        return
        except (OSError, ValueError, IndexError):
            pass  # not started yet, or exited (a zombie has no VmHWM line)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def run_child(command: list[str], env: dict | None = None, timeout_s: float | None = None,
              sample_gpu: bool = False) -> ChildRun:
    """Run `command`, returning its wall time and its own peak RSS (see `PeakRssSampler`)."""
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("PYTHONPATH", str(REPO_ROOT))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            GpuMemorySampler() if sample_gpu else _NullContext() as gpu:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=child_env, cwd=REPO_ROOT)
        rss = PeakRssSampler(proc.pid)
        timer = None
        if timeout_s:
            timer = threading.Timer(timeout_s, lambda: _kill(proc.pid))
            timer.start()
        timed_out = False
        try:
            proc.wait()
            wall = time.perf_counter() - started
            peak = rss.stop()
        finally:
            if timer:
                timer.cancel()
                timed_out = not timer.is_alive() and proc.returncode == -signal.SIGKILL
            rss.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if timed_out:
            stderr += f"\nkilled after the {timeout_s:.0f}-s time limit\n"
    return ChildRun(command=command, returncode=proc.returncode, wall_s=wall, peak_rss_bytes=peak,
                    peak_gpu_bytes=gpu.peak_bytes if sample_gpu else None, stdout=stdout, stderr=stderr)


class _NullContext:
    peak_bytes = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class BusyProcesses:
    """`count` processes spinning on the CPU while the block runs: a node shared with other jobs."""

    def __init__(self, count: int):
        self.count = count
        self.processes: list[subprocess.Popen] = []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
            process.wait()
        return False


# One measurement that hangs (a GPU driver problem, an engine build that never ends) must not
# stall an unattended run: its child is killed and the benchmark reports it as failed.
CHILD_TIMEOUT_S = float(os.environ.get("TSF_BENCH_CHILD_TIMEOUT", 3600))


def call_in_child(function: str, kwargs: dict, env: dict | None = None, timeout_s: float | None = CHILD_TIMEOUT_S,
                  sample_gpu: bool = False) -> ChildRun:
    """Run `module:function(**kwargs)` in a fresh interpreter; its return value comes back as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.common", function, json.dumps(kwargs, default=_json_default),
                   str(result_path)]
        run = run_child(command, env=env, timeout_s=timeout_s, sample_gpu=sample_gpu)
        if run.returncode == 0 and result_path.exists():
            run.result = json.loads(result_path.read_text())
    return run


def _child_main(argv: list[str]) -> int:
    function, kwargs, result_path = argv
    module_name, _, name = function.partition(":")
    result = getattr(importlib.import_module(module_name), name)(**json.loads(kwargs))
    write_json(Path(result_path), result)
    return 0


# ---------------------------------------------------------------------------------------------
# Weights and bundles: seeded random weights saved as .pdparams, exported once, cached.

# ---------------------------------------------------------------------------------------------
# Backends: every (backend, precision) the runtime offers, built directly so that each can be
# measured on its own (the CLI's `auto` would pick only the fastest).

def backend_variants() -> tuple[list[dict], dict[str, str]]:
    """(every engine x device x precision the runtime offers that could run here, {variant: why not}).

    Only cheap checks (a GPU for CUDA variants, native BF16 for CPU bf16); a variant that still
    cannot start is reported by
    its measurement, not hidden.
    """
    from tsf.runtime.backends import ENGINES, engine_precisions
    from tsf.runtime.backends.precision import native_bf16
    from tsf.runtime.gpu import cuda_device_count

    variants, skipped = [], {}
    for engine in ENGINES:
        for device, precisions in engine_precisions(engine).items():
            for precision in precisions:
                variant = {"backend": engine, "device": device, "precision": precision}
                if device == "cuda" and not cuda_device_count():
                    skipped[variant_name(variant)] = "no CUDA GPU"
                elif device == "cpu" and precision == "bf16" and native_bf16() is None:
                    skipped[variant_name(variant)] = "this CPU has no native BF16"
                else:
                    variants.append(variant)
    return variants, skipped


def variant_name(variant: dict) -> str:
    return f"{variant['backend']}-{variant['device']}-{variant['precision']}"


def make_backend(bundle_dir: str | Path, backend: str, device: str, precision: str, threads: int | None = None):
    """One variant's engine exactly as asked (the engine at that precision, not the precision policy's
    choice: a benchmark measures every variant). Raises the runtime's errors if it cannot start."""
    from tsf.runtime.backends import cpu_threads
    from tsf.runtime.backends.registry import engine_module
    from tsf.runtime.bundle import load_bundle
    from tsf.runtime.gpu import resolve_device

    engine = engine_module(backend).load(load_bundle(bundle_dir), resolve_device(device)[0], precision,
                                         cpu_threads(threads))
    engine.precision_reason = "asked for by the benchmark (no fidelity gate: every variant is measured)"
    return engine


def tsf_command(name: str) -> list[str]:
    """The installed console script (`tsf-extract`, `tsf-export`) of the Python running the benchmarks."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install -e . in this environment)")
    return [found]


def arch_name(arch: dict, seed: int) -> str:
    a = {**REFERENCE_ARCH, **arch}
    return f"d{a['depth']}-w{a['width']}-h{a['heads']}-f{a['frames']}-m{a['mlp_ratio']}-seed{seed}"


def ensure_bundle(cache_dir: Path, arch: dict, seed: int = 0, rebuild: bool = False,
                  engines: bool = False) -> tuple[Path, Path]:
    """(bundle directory, weights file) for seeded random weights of `arch`, built once per cache.

    The weights are written to a .pdparams first and the bundle exported from that file, so the
    Paddle baseline and every runtime backend run exactly the same weights. Built in a child
    process: importing Paddle changes this process's thread settings (it sets OMP_NUM_THREADS).
    """
    from tsf.runtime.bundle import BUNDLE_JSON, WEIGHTS_FILE

    root = Path(cache_dir) / "bundles" / arch_name(arch, seed)
    weights, bundle = root / "weights.pdparams", root / "bundle"
    marker = root / "engines-tried"  # a GPU run wants engines in a bundle first built without them
    # A bundle cached before tsf-export wrote its weights file cannot serve the torch engine.
    stale = not (bundle / BUNDLE_JSON).exists() or not (bundle / WEIGHTS_FILE).exists()
    if rebuild or stale or not weights.exists() or (engines and not marker.exists()):
        root.mkdir(parents=True, exist_ok=True)
        call_in_child("benchmarks.common:build_bundle",
                      {"arch": {**REFERENCE_ARCH, **arch}, "seed": seed, "weights": str(weights),
                       "bundle": str(bundle), "engines": engines}).check()
        if engines:
            marker.touch()
    return bundle, weights


def build_bundle(arch: dict, seed: int, weights: str, bundle: str, engines: bool = False) -> dict:
    import paddle

    from tsf.export import export_bundle
    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import save_pdparams

    paddle.seed(seed)
    save_pdparams(PPTimeSformer(TimeSformerConfig(**arch)), weights)
    # engine="auto": TensorRT engines where TensorRT and a GPU are usable, none elsewhere. The INT8
    # model is built into the bundle, so no measurement pays for building it on first use.
    export_bundle(bundle, weights=weights, engine="auto" if engines else False, overwrite=True, log=print, int8=True)
    return {"bundle": bundle, "weights": weights}


if __name__ == "__main__":
    try:
        from tsf.runtime.console import end_process
    except ImportError:  # the device check's facts step, which runs even where tsf did not install
        sys.exit(_child_main(sys.argv[1:]))
    end_process(_child_main(sys.argv[1:]))  # a child that ran OpenVINO must not abort as it exits
