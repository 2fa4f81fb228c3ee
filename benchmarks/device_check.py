"""The device check: what a lent CUDA 13 GPU machine without network must show, in one run.

    python -m benchmarks.device_check --prepare              # here (network, export extra): what travels
    python -m benchmarks.device_check --out DIR              # there: install, test, measure (<= 8 min)
    python -m benchmarks.device_check --dry-run --out DIR    # anywhere: the same steps on the CPU, tiny

Written for the H200 this project is sometimes lent (benchmarks/README.md, "The device check",
has the `device` tool's call): CUDA 13, PyTorch, CuPy, onnxruntime (CPU), safetensors, pytest;
no Paddle, TensorRT, onnxruntime-gpu, PyAV or PyNvVideoCodec; no network; 64 MiB per call.
`--prepare` fills `.device-check/` (git-ignored): the wheels of PyAV and PyNvVideoCodec (59 MiB)
and a small exported bundle (the ONNX that parity needs, under 2 MiB). Everything else is made
there: the full-size model as random weights (the torch engine needs only the architecture and
`weights.safetensors`), the test video with PyAV.

Steps, in order; each is timed and recorded, none stops the others, and each measurement runs in
a child process with a time limit drawn from one overall budget:
1. install: `pip install --no-index --no-deps --no-build-isolation -e .` plus the carried wheels;
2. facts: GPU, driver, library versions, and whether NVDEC, CuPy and torch CUDA can run;
3. parity: the small bundle on torch (CUDA fp32 / fp16 / bf16) against ONNX Runtime on the CPU,
   on clips of real frames, batch 1 and 3: relative L2 per output, minimum row cosine of the
   features, against the project's gates; fp16 / bf16 also against torch fp32;
4. model only: the full-size model, fp16 and bf16, batch 1 / 8 / 16 / 32 / 64 on GPU-resident
   clips: clips/s, TFLOP/s (benchmarks/flops.py) and their share of the bf16 matrix-product
   ceiling measured in the same run;
5. end to end: the generated 224p video through `Extractor` (NVDEC -> CuPy -> torch fp16, then
   PyAV -> torch for comparison), after one warm-up pass: windows/s, x real time, peak GPU
   memory, and the projected time of a 45-minute half (2,700 windows);
6. `pytest -m gpu tests/gpu`: NVDEC against PyAV, CuPy against NumPy, torch on CUDA.
Writes `results.json` (every number, with provenance), `results.md` (the tables) and the pytest
log into --out. `--dry-run` skips the install and runs steps 2-6 on the CPU with a tiny model, a
short video, PyAV and torch's CPU engine, so CI knows the script works before any GPU is lent.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common
from .flops import clip_tflop

CARRIED = common.REPO_ROOT / ".device-check"
BUDGET_S = 8 * 60
WHEELS = ("av==19.0.2", "pynvvideocodec==2.2.4")  # cp312 wheels: the GPU machine's Python
SMALL_ARCH = {"depth": 2, "width": 64, "heads": 2, "frames": 4}  # the carried bundle: ~0.6 MiB of ONNX
HALF_WINDOWS = 2700  # a 45-minute half, one row per second

# What each mode runs. The dry run keeps every step and shrinks only sizes and devices.
MODES = {
    "device": {
        "device": "cuda", "decoders": ["nvdec", "cpu"], "full_arch": common.REFERENCE_ARCH,
        "batches": [1, 8, 16, 32, 64], "model_precisions": ["fp16", "bf16"],
        "parity_precisions": ["fp32", "fp16", "bf16"], "e2e_precision": "fp16", "e2e_batch": 32,
        "video_seconds": 120, "ceiling_n": 8192,
    },
    "dry-run": {
        "device": "cpu", "decoders": ["cpu"],
        "full_arch": {**common.REFERENCE_ARCH, "depth": 1, "width": 64, "heads": 2, "frames": 4},
        "batches": [1, 2], "model_precisions": ["fp32", "bf16"], "parity_precisions": ["fp32", "bf16"],
        "e2e_precision": "fp32", "e2e_batch": 2, "video_seconds": 6, "ceiling_n": 512,
    },
}
# Seconds each step may take at most (the overall budget caps them further).
STEP_LIMITS_S = {"install": 120, "facts": 60, "pytest": 180, "parity": 90, "model_only": 150, "end_to_end": 180}


# ----------------------------------------------------------------------- in the child processes

def random_weights_bundle(directory: str, arch: dict, seed: int = 0):
    """A bundle of random weights for `arch` that the torch engine can run: bundle.json's facts and
    `weights.safetensors` under the reference's names (tests/reference/pdparams.py, written from
    docs/reference.md alone, scaled so that attention is far from uniform). No ONNX: the full
    model's would not travel, and only the torch engine runs it here."""
    import numpy as np
    from safetensors.numpy import save_file
    from tsf.runtime.bundle import Bundle, Preprocessing, Window

    arch = {("classes" if key == "num_classes" else key): value for key, value in arch.items()}  # bundle names
    directory = Path(directory)
    weights = directory / "weights.safetensors"
    if not weights.exists():
        sys.path.insert(0, str(common.REPO_ROOT / "tests"))
        from reference.pdparams import reference_state

        directory.mkdir(parents=True, exist_ok=True)
        state = reference_state(np.random.default_rng(seed), depth=arch["depth"], width=arch["width"],
                                frames=arch["frames"], classes=arch["classes"], patch=arch["patch_size"],
                                image=arch["image_size"], mlp_ratio=arch["mlp_ratio"])
        save_file(state, str(weights.with_suffix(".tmp")))
        os.replace(weights.with_suffix(".tmp"), weights)
    return Bundle(dir=directory, meta={"architecture": arch}, onnx_path=directory / "model.onnx",
                  architecture=dict(arch), class_names=tuple(f"class{i}" for i in range(arch["classes"])),
                  bundle_id="random-" + "-".join(f"{k}{arch[k]}" for k in ("depth", "width", "frames")),
                  random_init=True, window=Window.reference(arch["frames"]),
                  preprocessing=Preprocessing.reference(arch["image_size"]), weights_path=weights)


def facts() -> dict:
    from tsf.runtime.decode_nvdec import nvdec_support
    from tsf.runtime.gpu import CPU, Device, cuda_device_count, cupy_support, gpu_name

    found = {"cuda_devices": cuda_device_count()}
    device = Device("cuda", 0) if found["cuda_devices"] else CPU
    found["gpu"] = gpu_name(device)
    found["nvdec"] = nvdec_support() or "usable"
    found["cupy"] = cupy_support(Device("cuda", 0)) or "usable"
    try:
        import torch

        found["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                          "cuda_available": torch.cuda.is_available()}
    except ImportError as e:
        found["torch"] = f"not importable ({e})"
    return found


def clips_from_video(video: str, frames: int, rows: int):
    """`rows` clips of `frames` consecutive decoded frames, preprocessed by the runtime (NumPy)."""
    import numpy as np
    from tsf.runtime.bundle import Preprocessing
    from tsf.runtime.decode import PyAVDecoder
    from tsf.runtime.preprocess import preprocess_frame
    from tsf.runtime.probe import probe_video

    decoder = PyAVDecoder(probe_video(video))
    images = []
    try:
        for frame in decoder.frames():
            images.append(preprocess_frame(frame.to_rgb(), Preprocessing.reference()))
            if len(images) == frames * rows:
                break
    finally:
        decoder.close()
    clips = np.stack(images).reshape(rows, frames, 3, *images[0].shape[1:])
    return np.ascontiguousarray(clips.transpose(0, 2, 1, 3, 4))


def parity(bundle_dir: str, video: str, device: str, precisions: list[str]) -> dict:
    """Torch on `device` against ONNX Runtime on the CPU, on clips of real frames, batch 1 and 3."""
    import numpy as np
    from tsf.runtime.bundle import OUTPUT_NAMES, load_bundle
    from tsf.runtime.fidelity import MAX_REL_L2, MIN_ROW_COSINE, compare

    from .common import make_backend

    def min_row_cosine(reference, candidate) -> float:
        return compare(reference, candidate)["min_row_cosine"]

    bundle = load_bundle(bundle_dir)
    clips = clips_from_video(video, bundle.frames, 4)
    batches = [clips[:1], clips[1:4]]

    def outputs(backend) -> dict:
        runs = [backend.run(batch) for batch in batches]
        return {name: np.concatenate([run[name] for run in runs]) for name in OUTPUT_NAMES}

    reference = outputs(make_backend(bundle_dir, "onnxruntime", "cpu", "fp32"))
    results, fp32 = {}, None
    for precision in precisions:
        got = outputs(make_backend(bundle_dir, "torch", device, precision))
        row = {"rel_l2": {name: compare(reference[name], got[name])["rel_l2"] for name in OUTPUT_NAMES},
               "min_row_cosine": min_row_cosine(reference["features"], got["features"])}
        if precision == "fp32":
            fp32 = got
            row["gate"] = f"rel L2 <= {MAX_REL_L2:g} on every output"
            row["passed"] = max(row["rel_l2"].values()) <= MAX_REL_L2
        else:
            row["gate"] = f"features cosine >= {MIN_ROW_COSINE} per row"
            row["passed"] = row["min_row_cosine"] >= MIN_ROW_COSINE
            if fp32 is not None:
                row["min_row_cosine_vs_torch_fp32"] = min_row_cosine(fp32["features"], got["features"])
        results[precision] = row
    return {"reference": "onnxruntime cpu fp32", "batch_sizes": [1, 3], "rows": 4, "video": Path(video).name,
            "precisions": results}


def matmul_ceiling(device: str, n: int) -> dict:
    """The bf16 matrix-product ceiling of this device (best of 20 products, torch)."""
    if device == "cuda":
        from .model_only import gpu_matmul_ceiling

        return gpu_matmul_ceiling(n=n, dtype="bfloat16")
    import torch

    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return {"n": n, "dtype": "bfloat16", "best_s": best, "tflops": 2 * n**3 / best / 1e12,
            "library": f"torch {torch.__version__} (CPU)"}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def model_only(bundle_dir: str, arch: dict, device: str, precisions: list[str], batches: list[int],
               min_time_s: float = 1.0) -> dict:
    """Clips/s of the torch engine per precision and batch size, on clips already on the device."""
    import numpy as np
    from tsf.runtime.backends import cpu_threads
    from tsf.runtime.backends.registry import engine_module
    from tsf.runtime.gpu import resolve_device

    bundle = random_weights_bundle(bundle_dir, arch)
    tflop = clip_tflop(arch)
    rows = []
    for precision in precisions:
        backend = engine_module("torch").load(bundle, resolve_device(device)[0], precision, cpu_threads())
        for batch in batches:
            clips = np.random.default_rng(batch).random((batch, 3, arch["frames"], arch["image_size"],
                                                         arch["image_size"]), dtype=np.float32)
            if device == "cuda":
                import cupy

                clips = cupy.asarray(clips)
            row = {"precision": precision, "batch": batch}
            try:
                backend.run(clips)  # warm-up: kernel choices and allocations for this shape
                times = []
                while len(times) < 3 or sum(times) < min_time_s:
                    started = time.perf_counter()
                    backend.run(clips)  # returns host arrays: the work is finished when it returns
                    times.append(time.perf_counter() - started)
            except Exception as e:  # noqa: BLE001 - out of memory at a large batch: recorded, go on
                rows.append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
                continue
            seconds = sorted(times)[len(times) // 2]
            rows.append({**row, "runs": len(times), "median_s": seconds, "clips_per_s": batch / seconds,
                         "tflops": batch / seconds * tflop})
        backend = None  # the next precision's model is loaded without this one still on the device
    return {"arch": arch, "tflop_per_clip": tflop, "rows": rows}


def end_to_end(bundle_dir: str, arch: dict, video: str, device: str, decoder: str, precision: str,
               batch_size: int) -> dict:
    """One video through the runtime's `Extractor`, twice: a warm-up, then the timed pass."""
    from tsf.runtime.extractor import Extractor, ExtractSettings

    settings = ExtractSettings(backend="torch", device=device, precision=precision, decoder=decoder,
                               batch_size=batch_size)
    extractor = Extractor(random_weights_bundle(bundle_dir, arch), settings)
    extractor.extract(video)  # warm-up: model on the device, kernels chosen, decoder libraries loaded
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    result = extractor.extract(video)
    timings = dict(result.timings)
    # windows/s over the pipeline's own span (engine loaded, first frame to last batch)
    timings["windows_per_second"] = result.rows / timings["total_seconds"]
    found = {"decoder": result.decoder, "backend": extractor.backend.name, "precision": extractor.backend.precision,
             "batch_size": result.batch_size, "rows": result.rows, "video_seconds": float(result.info.duration),
             "frames_decoded": result.stats.frames_decoded, "timings": timings,
             "projected_half_s": HALF_WINDOWS / timings["windows_per_second"]}
    if device == "cuda":
        import torch

        found["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / common.MIB
    return found


# ----------------------------------------------------------------------------- the orchestrator

class Run:
    """The steps of one device check, each recorded in `results` whatever happens."""

    def __init__(self, out: Path, mode: str, carried: Path, cache: Path, budget_s: float):
        self.out, self.mode, self.carried, self.cache = out, mode, carried, cache
        self.settings = MODES[mode]
        self.deadline = time.monotonic() + budget_s
        self.results: dict = {"mode": mode, "steps": {}}

    def remaining(self, step: str) -> float:
        return max(1.0, min(STEP_LIMITS_S[step], self.deadline - time.monotonic()))

    def step(self, name: str, fn) -> None:
        started = time.monotonic()
        print(f"=== {name} (at most {self.remaining(name):.0f} s)", flush=True)
        try:
            self.results[name] = fn()
            error = None
        except Exception as e:  # noqa: BLE001 - recorded, and the next step runs
            error = f"{type(e).__name__}: {e}".strip()
        seconds = round(time.monotonic() - started, 1)
        self.results["steps"][name] = {"ok": error is None, "seconds": seconds, "error": error}
        print(f"=== {name}: {'ok' if error is None else 'FAILED: ' + error.splitlines()[-1]} ({seconds} s)", flush=True)

    def child(self, step: str, function: str, sample_gpu: bool = False, **kwargs) -> dict:
        run = common.call_in_child(f"benchmarks.device_check:{function}", kwargs, timeout_s=self.remaining(step),
                                   sample_gpu=sample_gpu)
        if run.returncode != 0 or run.result is None:
            tail = "\n".join((run.stderr or "").strip().splitlines()[-12:])
            raise RuntimeError(f"{function} failed (exit {run.returncode}):\n{tail}")
        if sample_gpu and run.peak_gpu_bytes is not None:
            run.result["peak_gpu_mib"] = run.peak_gpu_bytes / common.MIB
        return {**run.result, "child_wall_s": round(run.wall_s, 2)}

    def install(self) -> dict:
        wheels = sorted(str(p) for p in (self.carried / "wheels").glob("*.whl"))
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                   "--quiet", "-e", str(common.REPO_ROOT), *wheels]
        done = subprocess.run(command, capture_output=True, text=True, timeout=self.remaining("install"), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pip install failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
        importlib.invalidate_caches()  # this process imports av (the test video) from the new wheel
        return {"command": " ".join(command[1:]), "wheels": [Path(w).name for w in wheels]}

    def video(self) -> str:
        return str(common.test_video(self.cache, "224p", self.settings["video_seconds"]))

    def pytest(self) -> dict:
        log = self.out / "pytest-gpu.txt"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                   str(common.REPO_ROOT / "tests" / "gpu")]
        run = common.run_child(command, timeout_s=self.remaining("pytest"))
        common.write_text(log, run.stdout + run.stderr)
        summary = next((line.strip("= ") for line in reversed(run.stdout.splitlines())
                        if " in " in line and ("passed" in line or "skipped" in line or "failed" in line
                                               or "error" in line)), "no summary")
        if run.returncode not in (0, 5):
            raise RuntimeError(f"pytest -m gpu: {summary} (log: {log.name})")
        return {"command": " ".join(command[1:]), "summary": summary, "log": log.name}

    def execute(self, install: bool) -> dict:
        s, bundle = self.settings, str(self.carried / "bundle")
        full = str(self.cache / "full-size")
        if install:
            self.step("install", self.install)
        self.step("facts", lambda: self.child("facts", "facts"))
        self.step("pytest", self.pytest)
        self.step("parity", lambda: self.child("parity", "parity", bundle_dir=bundle, video=self.video(),
                                               device=s["device"], precisions=s["parity_precisions"]))

        def measure_model():
            ceiling = self.child("model_only", "matmul_ceiling", device=s["device"], n=s["ceiling_n"])
            found = self.child("model_only", "model_only", bundle_dir=full, arch=s["full_arch"], device=s["device"],
                               precisions=s["model_precisions"], batches=s["batches"])
            for row in found["rows"]:
                if "tflops" in row:
                    row["share_of_bf16_ceiling"] = row["tflops"] / ceiling["tflops"]
            return {"bf16_ceiling": ceiling, **found}

        self.step("model_only", measure_model)
        self.step("end_to_end", lambda: {"runs": [
            self.child("end_to_end", "end_to_end", sample_gpu=s["device"] == "cuda", bundle_dir=full,
                       arch=s["full_arch"], video=self.video(), device=s["device"], decoder=decoder,
                       precision=s["e2e_precision"], batch_size=s["e2e_batch"])
            for decoder in s["decoders"]]})
        self.results["targets"] = targets(self.results)
        return self.results


def targets(results: dict) -> list[dict]:
    """Issue 10's targets against what this run measured (None: not measured)."""
    model = [r for r in results.get("model_only", {}).get("rows", []) if r.get("precision") == "fp16" and "tflops" in r]
    best = max(model, key=lambda r: r["tflops"], default=None)
    e2e = [r for r in results.get("end_to_end", {}).get("runs", []) if r.get("decoder") == "nvdec"]
    half = e2e[0].get("projected_half_s") if e2e else None
    cosines = [r["min_row_cosine_vs_torch_fp32"] for p, r in results.get("parity", {}).get("precisions", {}).items()
               if "min_row_cosine_vs_torch_fp32" in r]
    return [
        {"target": "model only, fp16, best batch: >= 50 % of the bf16 matrix-product ceiling",
         "measured": None if best is None else f"{best['share_of_bf16_ceiling']:.1%} at batch {best['batch']}",
         "met": None if best is None else best["share_of_bf16_ceiling"] >= 0.5},
        {"target": "45-minute 224p half end to end with NVDEC: < 60 s projected (stretch < 20 s)",
         "measured": None if half is None else f"{half:.1f} s", "met": None if half is None else half < 60},
        {"target": "fp16 / bf16 features: cosine >= 0.999 per row against fp32",
         "measured": None if not cosines else f"min {min(cosines):.6f}",
         "met": None if not cosines else min(cosines) >= 0.999},
    ]


def markdown(results: dict) -> str:
    lines = ["| step | ok | seconds | error |", "|---|---|---|---|"]
    for name, step in results["steps"].items():
        error = (step["error"] or "").splitlines()[-1:] or [""]
        lines.append(f"| {name} | {'yes' if step['ok'] else 'NO'} | {step['seconds']} | {error[0]} |")
    text = "\n".join(lines) + "\n"
    if "facts" in results:
        text += "\n**Facts**: " + json.dumps(results["facts"]) + "\n"
    if "parity" in results:
        rows = [{"precision": p, "rel_l2": max(r["rel_l2"].values()), "cosine": r["min_row_cosine"],
                 "vs_fp32": r.get("min_row_cosine_vs_torch_fp32"), "gate": r["gate"], "passed": str(r["passed"])}
                for p, r in results["parity"]["precisions"].items()]
        text += (f"\n### Parity: small bundle, torch against ONNX Runtime CPU ({results['parity']['rows']} clips of "
                 f"real frames, batch 1 and 3)\n\n")
        text += common.markdown_table(rows, [("precision", "precision", ""), ("rel_l2", "max rel L2", ".2e"),
                                             ("cosine", "min row cosine (features)", ".6f"),
                                             ("vs_fp32", "min row cosine vs torch fp32", ".6f"),
                                             ("gate", "gate", ""), ("passed", "passed", "")])
    if "model_only" in results:
        found = results["model_only"]
        ceiling = found["bf16_ceiling"]
        text += (f"\n### Model only: torch, {found['arch']['depth']} blocks x {found['arch']['width']}, "
                 f"{found['arch']['frames']} frames ({found['tflop_per_clip']:.3g} TFLOP per clip); bf16 "
                 f"matrix-product ceiling {ceiling['tflops']:.3g} TFLOP/s ({ceiling['n']}^3, {ceiling['library']})\n\n")
        text += common.markdown_table(found["rows"], [
            ("precision", "precision", ""), ("batch", "batch", ""), ("clips_per_s", "clips/s", ".1f"),
            ("tflops", "TFLOP/s", ".1f"), ("share_of_bf16_ceiling", "share of bf16 ceiling", ".1%"),
            ("error", "error", "")])
    if "end_to_end" in results:
        rows = [{**run, **run["timings"]} for run in results["end_to_end"]["runs"]]
        text += "\n### End to end: generated 224p video, `Extractor`, after a warm-up pass\n\n"
        text += common.markdown_table(rows, [
            ("decoder", "decoder", ""), ("backend", "engine", ""), ("precision", "precision", ""),
            ("batch_size", "batch", ""), ("rows", "windows", ""), ("video_seconds", "video s", ".0f"),
            ("total_seconds", "wall s", ".2f"), ("windows_per_second", "windows/s", ".1f"),
            ("realtime_factor", "x real time", ".1f"), ("peak_gpu_mib", "peak GPU MiB", ".0f"),
            ("projected_half_s", "45-min half s (projected)", ".1f")])
    if "pytest" in results:
        text += f"\n**pytest -m gpu**: {results['pytest']['summary']} (log: {results['pytest']['log']})\n"
    if results.get("targets"):
        note = " (a dry run: tiny model on the CPU, these say nothing about a GPU)" if results["mode"] == "dry-run" else ""
        text += f"\n### Targets{note}\n\n" + common.markdown_table(
            [{**t, "met": {True: "yes", False: "NO", None: "not measured"}[t["met"]]} for t in results["targets"]],
            [("target", "target", ""), ("measured", "measured", ""), ("met", "met", "")])
    return text


def prepare_bundle(carried: Path) -> Path:
    """The small bundle parity runs (exported here: the GPU machine has no Paddle)."""
    from tsf.export import export_bundle

    return Path(export_bundle(carried / "bundle", random_init=True, arch=SMALL_ARCH, seed=0, overwrite=True))


def prepare(carried: Path) -> int:
    """Here, with a network and the export extra: the small bundle and the two wheels."""
    prepare_bundle(carried)
    wheels = carried / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), *WHEELS],
                   check=True)
    sizes = {p.relative_to(carried): p.stat().st_size for p in carried.rglob("*") if p.is_file()}
    for path, size in sorted(sizes.items()):
        print(f"{size / common.MIB:8.2f} MiB  {path}")
    print(f"{sum(sizes.values()) / common.MIB:8.2f} MiB  in {carried} (carry it: the working tree travels beside it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md and the pytest log")
    parser.add_argument("--carried", type=Path, default=CARRIED, help="the folder --prepare filled (default %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes, no install")
    parser.add_argument("--prepare", action="store_true", help="fill --carried here (needs a network and the export extra)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tsf-device-check",
                        help="the generated video and full-size weights, kept out of --out (default %(default)s)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default %(default)s)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare(args.carried)
    if args.out is None:
        parser.error("--out is required")
    if not (args.carried / "bundle" / "bundle.json").is_file():
        parser.error(f"{args.carried}/bundle is missing: run --prepare where there is a network")
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "dry-run" if args.dry_run else "device"
    started = time.monotonic()
    results = Run(args.out, mode, args.carried, args.cache, args.budget).execute(install=not args.dry_run)
    results["wall_s"] = round(time.monotonic() - started, 1)
    prov = common.provenance(["benchmarks/device_check.py", *(argv if argv is not None else sys.argv[1:])])
    title = f"Device check ({mode}), {results['wall_s']} s"
    common.save_report(args.out, "results", title, prov, results, markdown)
    return 0 if all(step["ok"] for step in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
