"""The device check: what a lent CUDA 13 GPU machine without network must show, in one run of at most 4 minutes.

    python -m benchmarks.device_check --prepare                 # here (network, export extra): fill .device-check/
    python3 -m benchmarks.device_check --out DIR --commit SHA   # there: install, facts, measure, test
    python -m benchmarks.device_check --dry-run --carried D --out DIR [--python PY]   # anywhere: all of it, CPU, tiny

Written for the machines this project is sometimes lent (benchmarks/README.md, "The device check",
has the `device` tool's call): Python 3.12, CUDA 13, PyTorch, CuPy, onnxruntime (CPU), safetensors,
pytest; no Paddle, TensorRT, onnxruntime-gpu, PyAV or PyNvVideoCodec; no network; 64 MiB per
call, the working tree included; 15 minutes of device time, the machine's start and any rerun
included. `--prepare` fills `.device-check/` (git-ignored): PyAV's wheel and a stripped
PyNvVideoCodec wheel (benchmarks/strip_wheel.py), both pinned by hash, and a small exported bundle
(the ONNX that parity needs); it checks that the carry stays within `CARRY_LIMIT_MIB` and prints
the `run` call. Everything else is made there: the full-size model as random weights (the torch
engine needs only the architecture and `weights.safetensors`), the test video with PyAV.

How it cannot fail for reasons of its own:
- It installs as that machine expects: the carried wheels and the project (built from the working
  tree with the machine's setuptools) with `pip install --no-index --no-deps --target SITE`, and
  runs every step in a fresh child process (`python -P`, SITE and the checkout on PYTHONPATH); this
  process never imports what it installed (results.json lists what it did import).
- `facts` runs first after the install and imports nothing of tsf: the GPU, the driver libraries
  NVDEC needs (libnvcuvid.so.1, libnvidia-encode.so.1), each Python package, its version and where
  it came from, and a list of what is missing.
- Each decoder, precision and batch is tried on its own: one failure costs one row. results.json,
  results.md and steps.log (every child's output) are rewritten after every step, so a timeout
  keeps everything finished before it.
- One budget, `BUDGET_S` (4 minutes), caps every step's child; a step that no longer fits is
  recorded as skipped. Estimated on an H100/H200 (benchmarks/README.md): about 3 minutes.

Steps, in order: install; facts; video (the generated 224p video); parity (the small bundle on torch
CUDA fp32 / fp16 / bf16 against ONNX Runtime on the CPU, clips of real frames, batch 1 and 3,
against fidelity.py's bars); model_only (the bf16 matrix-product ceiling, then the full-size model
in fp16 and bf16 at batch 1 / 8 / 16 / 32 / 64 on GPU-resident clips: clips/s, TFLOP/s, share of
the ceiling); end_to_end (the video through `Extractor`, NVDEC -> CuPy -> torch fp16, then PyAV ->
torch, each after a warm-up pass: windows/s, x real time, busy time per stage, peak GPU memory,
a 45-minute half projected); decoders (issue 20: a 1080p video with a keyframe every 2 s
decoded by K = 1, 2, 4 .. the NVDEC engines, and by as many videos at once; a season's 224p
videos at once against one; the 1080p video end to end with K from the engine count); pytest
(`pytest -m gpu tests/gpu`, with what time is left).
`--dry-run` runs the same steps, the install included, on the CPU: a tiny model, a 6-s video,
PyAV and torch's CPU engine, the wheels prepared for that Python (`make setup-test` does it for
CI's). tests/test_benchmarks.py runs it in a fresh virtual environment without tsf.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common
from .flops import clip_tflop

CARRIED = common.REPO_ROOT / ".device-check"
BUDGET_S = 4 * 60
# What one `run` call may carry in all (the working tree and .device-check/): 64 MiB is the
# tool's limit, 8 MiB of it kept free for the tree to grow.
CARRY_LIMIT_MIB = 56
DEVICE_PYTHON = "3.12"  # the lent machines' Python (KINDS.md)
# The wheels the check installs, per Python. The GPU machine's are cp312; CI's dry run installs the
# same packages built for its own Python (PyAV 19 has no build before 3.12, so 18.1 there).
WHEELS = {"3.12": ("av==19.0.2", "pynvvideocodec==2.2.4"), "3.11": ("av==18.1.0", "pynvvideocodec==2.2.4")}
# Pinned: file name -> (sha256, bytes) as PyPI serves them.
PINNED = {
    "av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl":
        ("9c1da7aad0fa6c13b4a5c1e7985be0d13f8526a96284573acaf3d55ead6d3fe8", 34990159),
    "pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl":
        ("41ad2b4d010ed22eb46c849d3e792789ae06281f6b41767c1b25f76f130aee98", 26872497),
    "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl":
        ("8a032e8d8ebc73dec079364b9b4a6837638a2d106e8472314e685ffbf163e700", 35786210),
    "pynvvideocodec-2.2.4-cp311-cp311-manylinux_2_28_x86_64.whl":
        ("fa19da4df068341863c651ae72c1a29557bfd3b68f2e8297ccbce7c391d148d6", 26873180),
}
# What travels to the GPU machine besides the tree and the small bundle, as --prepare makes it
# (the PyNvVideoCodec wheel after benchmarks/strip_wheel.py). tests/test_benchmarks.py bounds the carry with it.
DEVICE_WHEEL_BYTES = {"av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl": 34990159,
                      "pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl": 4653111}
SMALL_ARCH = {"depth": 2, "width": 64, "heads": 2, "frames": 4}  # the carried bundle: ~0.6 MiB of ONNX
HALF_WINDOWS = 2700  # a 45-minute half, one row per second
# The packages the children need and the facts step reports: import name -> distribution name.
PACKAGES = {"tsf": "tsf", "av": "av", "PyNvVideoCodec": "pynvvideocodec", "torch": "torch", "cupy": "cupy-cuda13x",
            "numpy": "numpy", "onnxruntime": "onnxruntime", "safetensors": "safetensors", "click": "click",
            "tqdm": "tqdm", "pytest": "pytest", "setuptools": "setuptools", "pip": "pip"}
DRIVER_LIBRARIES = {"libcuda.so.1": "CUDA", "libnvcuvid.so.1": "NVDEC decoding",
                    "libnvidia-encode.so.1": "importing PyNvVideoCodec (it asks NVENC for the driver's version)"}

# What each mode runs. The dry run keeps every step and shrinks only sizes and devices.
MODES = {
    "device": {
        "device": "cuda", "decoders": ["nvdec", "cpu"], "full_arch": common.REFERENCE_ARCH,
        "batches": [1, 8, 16, 32, 64], "model_precisions": ["fp16", "bf16"],
        "parity_precisions": ["fp32", "fp16", "bf16"], "e2e_precision": "fp16", "e2e_batch": 32,
        "video_seconds": 120, "ceiling_n": 8192,
        "split_decoder": "nvdec", "split_resolution": "1080p", "split_seconds": 30,
    },
    "dry-run": {
        "device": "cpu", "decoders": ["cpu"],
        "full_arch": {**common.REFERENCE_ARCH, "depth": 1, "width": 64, "heads": 2, "frames": 4},
        "batches": [1, 2], "model_precisions": ["fp32", "bf16"], "parity_precisions": ["fp32", "bf16"],
        "e2e_precision": "fp32", "e2e_batch": 2, "video_seconds": 6, "ceiling_n": 512,
        "split_decoder": "cpu", "split_resolution": "224p", "split_seconds": 6,
    },
}
# Seconds each child may take at most (what is left of BUDGET_S caps them further).
STEP_LIMITS_S = {"install": 90, "facts": 60, "video": 60, "parity": 60, "ceiling": 45, "model_only": 60,
                 "end_to_end": 60, "decoders": 60, "pytest": 150}
MIN_STEP_S = 5  # a step with less than this left of the budget is skipped, not started


def first_line(text: str) -> str:
    """The first non-empty line of an error message (this module's parent cannot import tsf's)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


# ----------------------------------------------------------------------- in the child processes

def facts(site: str) -> dict:
    """What this machine has: driver libraries loaded and packages imported one by one, tsf's own
    GPU checks only when tsf imports, so the facts come even when the install failed."""
    import ctypes
    import importlib
    import importlib.metadata

    found: dict = {"python": sys.version.split()[0], "executable": sys.executable, "site": site,
                   "gpus": common.gpu_info(), "driver_libraries": {}, "packages": {}, "missing": []}
    for library, needed_for in DRIVER_LIBRARIES.items():
        try:
            ctypes.CDLL(library)
            found["driver_libraries"][library] = "loads"
        except OSError as e:
            found["driver_libraries"][library] = f"does not load ({e})"
            found["missing"].append(f"{library}: {needed_for}")
    if not found["gpus"]:
        found["missing"].append("a GPU (nvidia-smi lists none)")
    for name, distribution in PACKAGES.items():
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - ImportError, OSError, PyNvVideoCodec's RuntimeError
            found["packages"][name] = {"error": first_line(f"{type(e).__name__}: {e}")}
            found["missing"].append(f"{name}: {found['packages'][name]['error']}")
            continue
        where = str(Path(getattr(module, "__file__", "") or "").resolve())
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
        found["packages"][name] = {"version": str(version),
                                   "from": "the check's install" if where.startswith(str(Path(site).resolve()))
                                   else where}
    if "error" not in found["packages"]["torch"]:
        import torch

        found["torch_cuda"] = {"cuda": torch.version.cuda, "available": torch.cuda.is_available(),
                               "devices": torch.cuda.device_count()}
    if "error" not in found["packages"]["tsf"]:
        from tsf.runtime.decode_nvdec import nvdec_support
        from tsf.runtime.gpu import Device, cuda_device_count, cupy_support

        found["cuda_devices"] = cuda_device_count()
        found["nvdec"] = nvdec_support() or "usable"
        found["cupy"] = cupy_support(Device("cuda", 0)) or "usable"
    return found


def make_video(cache: str, seconds: float) -> dict:
    """The generated 224p test video (PyAV/libx264, cached)."""
    path = common.test_video(Path(cache), "224p", seconds)
    return {"path": str(path), "seconds": seconds, "bytes": path.stat().st_size}


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
    """Torch on `device` against ONNX Runtime on the CPU, on clips of real frames, batch 1 and 3;
    each precision on its own (one that cannot load costs its row only)."""
    import numpy as np
    from tsf.runtime.bundle import OUTPUT_NAMES, load_bundle
    from tsf.runtime.fidelity import MAX_REL_L2, MIN_ROW_COSINE, compare

    from .common import make_backend

    bundle = load_bundle(bundle_dir)
    clips = clips_from_video(video, bundle.frames, 4)
    batches = [clips[:1], clips[1:4]]

    def outputs(backend) -> dict:
        runs = [backend.run(batch) for batch in batches]
        return {name: np.concatenate([run[name] for run in runs]) for name in OUTPUT_NAMES}

    reference = outputs(make_backend(bundle_dir, "onnxruntime", "cpu", "fp32"))
    results, fp32 = {}, None
    for precision in precisions:
        try:
            got = outputs(make_backend(bundle_dir, "torch", device, precision))
        except Exception as e:  # noqa: BLE001 - recorded; the next precision runs
            results[precision] = {"error": first_line(f"{type(e).__name__}: {e}")}
            continue
        row = {"rel_l2": {name: compare(reference[name], got[name])["rel_l2"] for name in OUTPUT_NAMES},
               "min_row_cosine": compare(reference["features"], got["features"])["min_row_cosine"]}
        if precision == "fp32":
            fp32 = got
            row["gate"] = f"rel L2 <= {MAX_REL_L2:g} on every output"
            row["passed"] = max(row["rel_l2"].values()) <= MAX_REL_L2
        else:
            row["gate"] = f"features cosine >= {MIN_ROW_COSINE} per row"
            row["passed"] = row["min_row_cosine"] >= MIN_ROW_COSINE
            if fp32 is not None:
                row["min_row_cosine_vs_torch_fp32"] = compare(fp32["features"], got["features"])["min_row_cosine"]
        results[precision] = row
    return {"reference": "onnxruntime cpu fp32", "batch_sizes": [1, 3], "rows": 4, "video": Path(video).name,
            "precisions": results}


def matmul_ceiling(device: str, n: int) -> dict:
    """The bf16 matrix-product ceiling of this device (best of 20 products, torch, random data)."""
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


def model_only(bundle_dir: str, arch: dict, device: str, precision: str, batches: list[int],
               min_time_s: float = 0.5) -> dict:
    """Clips/s of the torch engine in one precision per batch size, on clips already on the device;
    each batch on its own (out of memory at a large batch costs that row)."""
    import numpy as np
    from tsf.runtime.backends import cpu_threads
    from tsf.runtime.backends.registry import engine_module
    from tsf.runtime.gpu import resolve_device

    bundle = random_weights_bundle(bundle_dir, arch)
    tflop = clip_tflop(arch)
    backend = engine_module("torch").load(bundle, resolve_device(device)[0], precision, cpu_threads())
    rows = []
    for batch in batches:
        row = {"precision": precision, "batch": batch}
        try:
            clips = np.random.default_rng(batch).random((batch, 3, arch["frames"], arch["image_size"],
                                                         arch["image_size"]), dtype=np.float32)
            if device == "cuda":
                import cupy

                clips = cupy.asarray(clips)
            backend.run(clips)  # warm-up: kernel choices and allocations for this shape
            times = []
            while len(times) < 3 or sum(times) < min_time_s:
                started = time.perf_counter()
                backend.run(clips)  # returns host arrays: the work is finished when it returns
                times.append(time.perf_counter() - started)
        except Exception as e:  # noqa: BLE001 - recorded; the next batch runs
            rows.append({**row, "error": first_line(f"{type(e).__name__}: {e}")})
            continue
        seconds = sorted(times)[len(times) // 2]
        rows.append({**row, "runs": len(times), "median_s": seconds, "clips_per_s": batch / seconds,
                     "tflops": batch / seconds * tflop})
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
    found = {"decoder": result.decoder, "decoders": result.decoders, "backend": extractor.backend.name,
             "precision": extractor.backend.precision,
             "batch_size": result.batch_size, "rows": result.rows, "video_seconds": float(result.info.duration),
             "frames_decoded": result.stats.frames_decoded, "timings": timings,
             "projected_half_s": HALF_WINDOWS / timings["windows_per_second"]}
    if device == "cuda":
        import torch

        found["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / common.MIB
    return found


def decoder_scaling(cache: str, video: str, kind: str, resolution: str, seconds: float) -> dict:
    """Issue 20's decoding rows (decode_only.scaling): a video with a keyframe every 2 s decoded by
    K = 1, 2, 4 .. the GPU's NVDEC engines at once, and by as many videos at once as there are
    engines; then a season's shape, that many 224p videos at once against one, only the frames
    their windows need. On the CPU (the dry run) the same code with two decoders."""
    from tsf.runtime.decode_nvdec import nvdec_engines

    from .decode_only import SPLIT_GOP_SECONDS, scaling

    engines = (nvdec_engines() or 1) if kind == "nvdec" else 2
    split = str(common.test_video(Path(cache), resolution, seconds, gop_seconds=SPLIT_GOP_SECONDS))
    counts = sorted({k for k in (1, 2, 4, engines) if k <= engines})
    return {"engines": engines, "video": Path(split).name, "split_video": split,
            "rows": scaling(split, kind, counts, [engines], "decode"),
            "season": scaling(video, kind, [1], [engines], "needed")}


# ----------------------------------------------------------------------------- the orchestrator

def project_source(destination: Path) -> Path:
    """What pip builds tsf from (setup.cfg's packages, its metadata files), copied out of the
    checkout so that the build writes nothing into it."""
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(common.REPO_ROOT / name, destination / name)
    for folder in ("tsf", "runtime", "export", "training"):
        shutil.copytree(common.REPO_ROOT / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


class Run:
    """The steps of one device check, each recorded in `results` whatever happens, and the
    results written after every step."""

    def __init__(self, out: Path, mode: str, carried: Path, cache: Path, python: str, provenance: dict,
                 budget_s: float):
        self.out, self.mode, self.carried, self.cache, self.python = out, mode, carried, cache, python
        self.settings = MODES[mode]
        self.site = cache / "site"
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.provenance = provenance
        self.log = out / "steps.log"
        self.results: dict = {"mode": mode, "budget_s": budget_s, "steps": {}}
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.site), str(common.REPO_ROOT)]),
                    "PYTHONUNBUFFERED": "1", "TSF_HOME": str(cache / "tsf-home")}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.results["wall_s"] = round(time.monotonic() - self.started, 1)
        common.write_json(self.out / "results.json", {"provenance": self.provenance, **self.results})
        title = f"Device check ({self.mode}), {self.results['wall_s']} s of a {self.results['budget_s']:.0f}-s budget"
        common.write_text(self.out / "results.md",
                          f"## {title}\n\n" + common.provenance_markdown(self.provenance) + "\n" + markdown(self.results))

    def step(self, name: str, fn) -> None:
        """Runs `fn` as step `name`, records its result or error and how long it took, saves."""
        started = time.monotonic()
        if self.left() < MIN_STEP_S:
            self.results["steps"][name] = {"ok": False, "seconds": 0.0, "error": "skipped: the budget is spent"}
            print(f"=== {name}: skipped (the {BUDGET_S}-s budget is spent)", flush=True)
            self.save()
            return
        print(f"=== {name} ({self.left():.0f} s of the budget left)", flush=True)
        try:
            self.results[name] = fn()
            error = None
        except Exception as e:  # noqa: BLE001 - recorded, and the next step runs
            error = f"{type(e).__name__}: {e}".strip()
        seconds = round(time.monotonic() - started, 1)
        self.results["steps"][name] = {"ok": error is None, "seconds": seconds, "error": error}
        print(f"=== {name}: {'ok' if error is None else 'FAILED: ' + error.splitlines()[-1]} ({seconds} s)", flush=True)
        self.save()

    def limit(self, step: str) -> float:
        return max(1.0, min(STEP_LIMITS_S[step], self.left()))

    def record(self, title: str, run: common.ChildRun) -> None:
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"===== {title} (exit {run.returncode}, {run.wall_s:.1f} s)\n{run.stdout}{run.stderr}\n")

    def child(self, step: str, function: str, sample_gpu: bool = False, **kwargs) -> dict:
        """`function(**kwargs)` of this module in a fresh interpreter that sees the install."""
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            command = [self.python, "-P", "-m", "benchmarks.common", f"benchmarks.device_check:{function}",
                       json.dumps(kwargs), str(result_path)]
            run = common.run_child(command, env=self.env, timeout_s=self.limit(step), sample_gpu=sample_gpu)
            self.record(f"{step}: {function}({', '.join(f'{k}={v}' for k, v in kwargs.items())})", run)
            if run.returncode != 0 or not result_path.exists():
                tail = "\n".join((run.stderr or "").strip().splitlines()[-12:])
                raise RuntimeError(f"{function} failed (exit {run.returncode}):\n{tail}")
            result = json.loads(result_path.read_text())
        if sample_gpu and run.peak_gpu_bytes is not None:
            result["peak_gpu_mib"] = run.peak_gpu_bytes / common.MIB
        return {**result, "child_wall_s": round(run.wall_s, 2)}

    def tried(self, step: str, function: str, label: dict, **kwargs) -> dict:
        """`child`, with a failure recorded as this row's error instead of failing the step."""
        try:
            return self.child(step, function, **kwargs)
        except Exception as e:  # noqa: BLE001 - one failure costs one row
            return {**label, "error": first_line(str(e).splitlines()[-1] if str(e) else type(e).__name__)}

    def install(self) -> dict:
        wheels = sorted(str(p) for p in (self.carried / "wheels").glob("*.whl"))
        shutil.rmtree(self.site, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            source = project_source(Path(tmp))
            command = [self.python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                       "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(self.site),
                       *wheels, str(source)]
            run = common.run_child(command, env={k: v for k, v in self.env.items() if k != "PYTHONPATH"},
                                   timeout_s=self.limit("install"))
        self.record("install", run)
        if run.returncode != 0:
            raise RuntimeError(f"pip install failed (exit {run.returncode}): "
                               f"{first_line(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else '')}")
        return {"command": "pip install --no-index --no-deps --no-build-isolation --target SITE WHEELS PROJECT",
                "site": str(self.site), "wheels": [Path(w).name for w in wheels],
                "installed": sorted(p.name for p in self.site.iterdir() if p.name.endswith(".dist-info"))}

    def pytest(self) -> dict:
        log = self.out / "pytest-gpu.txt"
        command = [self.python, "-P", "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                   str(common.REPO_ROOT / "tests" / "gpu")]
        run = common.run_child(command, env=self.env, timeout_s=self.limit("pytest"))
        common.write_text(log, run.stdout + run.stderr)
        summary = next((line.strip("= ") for line in reversed(run.stdout.splitlines())
                        if " in " in line and any(w in line for w in ("passed", "skipped", "failed", "error"))),
                       "no summary")
        if run.returncode not in (0, 5):
            raise RuntimeError(f"pytest -m gpu: {summary} (log: {log.name})")
        return {"command": "pytest -m gpu tests/gpu", "summary": summary, "log": log.name}

    def execute(self) -> dict:
        s, bundle, full = self.settings, str(self.carried / "bundle"), str(self.cache / "full-size")
        self.step("install", self.install)
        self.step("facts", lambda: self.child("facts", "facts", site=str(self.site)))
        self.step("video", lambda: self.child("video", "make_video", cache=str(self.cache),
                                              seconds=s["video_seconds"]))
        video = self.results.get("video", {}).get("path", "")
        self.step("parity", lambda: self.child("parity", "parity", bundle_dir=bundle, video=video,
                                               device=s["device"], precisions=s["parity_precisions"]))

        def measure_model():
            ceiling = self.tried("ceiling", "matmul_ceiling", {}, device=s["device"], n=s["ceiling_n"])
            found: dict = {"bf16_ceiling": ceiling, "rows": []}
            for precision in s["model_precisions"]:
                if self.left() < MIN_STEP_S:
                    found["rows"].append({"precision": precision, "error": "skipped: the budget is spent"})
                    continue
                got = self.tried("model_only", "model_only", {"precision": precision}, bundle_dir=full,
                                 arch=s["full_arch"], device=s["device"], precision=precision, batches=s["batches"])
                found.update({k: got[k] for k in ("arch", "tflop_per_clip") if k in got})
                found["rows"] += got.get("rows", [got])
            for row in found["rows"]:
                if "tflops" in row and "tflops" in ceiling:
                    row["share_of_bf16_ceiling"] = row["tflops"] / ceiling["tflops"]
            return found

        self.step("model_only", measure_model)

        def measure_end_to_end():
            runs = []
            for decoder in s["decoders"]:
                if self.left() < MIN_STEP_S:
                    runs.append({"decoder": decoder, "error": "skipped: the budget is spent"})
                    continue
                runs.append(self.tried("end_to_end", "end_to_end", {"decoder": decoder},
                                       sample_gpu=s["device"] == "cuda", bundle_dir=full, arch=s["full_arch"],
                                       video=video, device=s["device"], decoder=decoder,
                                       precision=s["e2e_precision"], batch_size=s["e2e_batch"]))
            return {"runs": runs}

        self.step("end_to_end", measure_end_to_end)

        def measure_decoders():
            found = self.child("decoders", "decoder_scaling", cache=str(self.cache), video=video,
                               kind=s["split_decoder"], resolution=s["split_resolution"], seconds=s["split_seconds"])
            if self.left() >= MIN_STEP_S:  # the split video end to end, K from the engine count
                found["end_to_end"] = self.tried("decoders", "end_to_end", {"decoder": s["split_decoder"]},
                                                 sample_gpu=s["device"] == "cuda", bundle_dir=full,
                                                 arch=s["full_arch"], video=found["split_video"], device=s["device"],
                                                 decoder=s["split_decoder"], precision=s["e2e_precision"],
                                                 batch_size=s["e2e_batch"])
            return found

        self.step("decoders", measure_decoders)
        self.step("pytest", self.pytest)
        self.results["targets"] = targets(self.results)
        self.save()
        return self.results


def targets(results: dict) -> list[dict]:
    """The issues' targets (18: the first GPU run; 20: filling the decoders) against what this run
    measured (None: not measured)."""
    model = [r for r in results.get("model_only", {}).get("rows", [])
             if r.get("precision") == "fp16" and "share_of_bf16_ceiling" in r]
    best = max(model, key=lambda r: r["tflops"], default=None)
    nvdec = [r for r in results.get("end_to_end", {}).get("runs", []) if r.get("decoder") == "nvdec" and "rows" in r]
    half = nvdec[0]["projected_half_s"] if nvdec else None
    busy = None
    if nvdec:
        t = nvdec[0]["timings"]
        busy = (t.get("producing_seconds", 0) + t["inference_seconds"]) / t["total_seconds"]
    cosines = [r["min_row_cosine_vs_torch_fp32"] for r in results.get("parity", {}).get("precisions", {}).values()
               if "min_row_cosine_vs_torch_fp32" in r]
    split = results.get("decoders", {})
    scaling_rows = [r for r in split.get("rows", []) if r.get("videos_at_once") == 1 and r.get("decoders_asked", 1) > 1]
    worst = min((r["share_of_ideal"] for r in scaling_rows if r.get("share_of_ideal") is not None), default=None)
    season = next((r["vs_one_decoder"] for r in split.get("season", []) if r.get("videos_at_once", 1) > 1), None)
    split_half = split.get("end_to_end", {}).get("projected_half_s")
    return [
        {"target": "model only, fp16, best batch: >= 50 % of the bf16 matrix-product ceiling",
         "measured": None if best is None else f"{best['share_of_bf16_ceiling']:.1%} at batch {best['batch']}",
         "met": None if best is None else best["share_of_bf16_ceiling"] >= 0.5},
        {"target": "45-minute 224p half end to end with NVDEC: < 60 s projected (stretch < 20 s)",
         "measured": None if half is None else f"{half:.1f} s", "met": None if half is None else half < 60},
        {"target": "fp16 / bf16 features: cosine >= 0.999 per row against fp32",
         "measured": None if not cosines else f"min {min(cosines):.6f}",
         "met": None if not cosines else min(cosines) >= 0.999},
        {"target": "NVDEC end to end: decode + preprocessing and inference overlap (busy time > wall time)",
         "measured": None if busy is None else f"busy / wall = {busy:.2f}", "met": None if busy is None else busy > 1},
        {"target": "K decoders on one video: >= 70 % of K x one decoder's frames/s, up to the engine count",
         "measured": None if worst is None else f"worst {worst:.0%} (K up to {split.get('engines')})",
         "met": None if worst is None else worst >= 0.7},
        {"target": "45-minute 1080p half end to end, K from the engines: < 60 s projected",
         "measured": None if split_half is None else f"{split_half:.1f} s",
         "met": None if split_half is None else split_half < 60},
        {"target": "a season: one 224p video per engine at once >= 3x one at a time (the frames windows need)",
         "measured": None if season is None else f"{season:.1f}x", "met": None if season is None else season >= 3},
    ]


def markdown(results: dict) -> str:
    lines = ["| step | ok | seconds | error |", "|---|---|---|---|"]
    for name, step in results["steps"].items():
        error = (step["error"] or "").splitlines()[-1:] or [""]
        lines.append(f"| {name} | {'yes' if step['ok'] else 'NO'} | {step['seconds']} | {error[0]} |")
    text = "\n".join(lines) + "\n"
    if "facts" in results:
        found = results["facts"]
        text += "\n### Facts\n\n**Missing**: " + ("; ".join(found["missing"]) or "nothing") + "\n\n"
        text += (f"Python {found['python']}; GPUs: {json.dumps(found['gpus'])}; driver libraries: "
                 f"{json.dumps(found['driver_libraries'])}; NVDEC: {found.get('nvdec', '–')}; "
                 f"CuPy: {found.get('cupy', '–')}; torch CUDA: {json.dumps(found.get('torch_cuda'))}\n\n")
        text += common.markdown_table(
            [{"package": name, **row} for name, row in found["packages"].items()],
            [("package", "package", ""), ("version", "version", ""), ("from", "from", ""), ("error", "error", "")])
    if "parity" in results:
        rows = [{"precision": p, "error": r.get("error"), "rel_l2": max(r["rel_l2"].values()) if "rel_l2" in r else None,
                 "cosine": r.get("min_row_cosine"), "vs_fp32": r.get("min_row_cosine_vs_torch_fp32"),
                 "gate": r.get("gate"), "passed": str(r["passed"]) if "passed" in r else None}
                for p, r in results["parity"]["precisions"].items()]
        text += (f"\n### Parity: small bundle, torch against ONNX Runtime CPU ({results['parity']['rows']} clips of "
                 f"real frames, batch 1 and 3)\n\n")
        text += common.markdown_table(rows, [("precision", "precision", ""), ("rel_l2", "max rel L2", ".2e"),
                                             ("cosine", "min row cosine (features)", ".6f"),
                                             ("vs_fp32", "min row cosine vs torch fp32", ".6f"),
                                             ("gate", "gate", ""), ("passed", "passed", ""), ("error", "error", "")])
    if "model_only" in results:
        found = results["model_only"]
        ceiling = found["bf16_ceiling"]
        arch = found.get("arch", {})
        text += (f"\n### Model only: torch, {arch.get('depth', '?')} blocks x {arch.get('width', '?')}, "
                 f"{arch.get('frames', '?')} frames ({common.fmt(found.get('tflop_per_clip'))} TFLOP per clip); bf16 "
                 f"matrix-product ceiling {common.fmt(ceiling.get('tflops'))} TFLOP/s ({ceiling.get('n', '?')}^3, "
                 f"{ceiling.get('library', ceiling.get('error', '?'))})\n\n")
        text += common.markdown_table(found["rows"], [
            ("precision", "precision", ""), ("batch", "batch", ""), ("clips_per_s", "clips/s", ".1f"),
            ("tflops", "TFLOP/s", ".1f"), ("share_of_bf16_ceiling", "share of bf16 ceiling", ".1%"),
            ("error", "error", "")])
    if "end_to_end" in results:
        rows = [{**run, **run.get("timings", {})} for run in results["end_to_end"]["runs"]]
        text += "\n### End to end: generated 224p video, `Extractor`, after a warm-up pass\n\n"
        text += common.markdown_table(rows, [
            ("decoder", "decoder", ""), ("backend", "engine", ""), ("precision", "precision", ""),
            ("batch_size", "batch", ""), ("rows", "windows", ""), ("video_seconds", "video s", ".0f"),
            ("total_seconds", "wall s", ".2f"), ("producing_seconds", "producer busy s", ".2f"),
            ("inference_seconds", "inference s", ".2f"), ("windows_per_second", "windows/s", ".1f"),
            ("realtime_factor", "x real time", ".1f"), ("peak_gpu_mib", "peak GPU MiB", ".0f"),
            ("projected_half_s", "45-min half s (projected)", ".1f"), ("error", "error", "")])
    if "decoders" in results:
        found = results["decoders"]
        text += (f"\n### Decoders: {found.get('video', '–')}, K decoders on one video and videos at once "
                 f"({found.get('engines', '–')} engines); a season's 224p videos at once\n\n")
        text += common.markdown_table(found.get("rows", []) + found.get("season", []), [
            ("mode", "mode", ""), ("videos_at_once", "videos", ""), ("decoders_asked", "K", ""),
            ("frames_per_s", "frames/s", ".0f"), ("vs_one_decoder", "vs one", ".2f"),
            ("share_of_ideal", "share of ideal", ".0%"), ("error", "error", "")])
        e2e = found.get("end_to_end")
        if e2e:
            text += "\n" + common.markdown_table([{**e2e, **e2e.get("timings", {})}], [
                ("decoder", "decoder", ""), ("decoders", "K", ""), ("rows", "windows", ""),
                ("total_seconds", "wall s", ".2f"), ("realtime_factor", "x real time", ".1f"),
                ("projected_half_s", "45-min half s (projected)", ".1f"), ("error", "error", "")])
    if "pytest" in results:
        text += f"\n**pytest -m gpu**: {results['pytest']['summary']} (log: {results['pytest']['log']})\n"
    if results.get("targets"):
        note = " (a dry run: tiny model on the CPU, these say nothing about a GPU)" if results["mode"] == "dry-run" else ""
        text += f"\n### Targets{note}\n\n" + common.markdown_table(
            [{**t, "met": {True: "yes", False: "NO", None: "not measured"}[t["met"]]} for t in results["targets"]],
            [("target", "target", ""), ("measured", "measured", ""), ("met", "met", "")])
    if "parent_imports" in results:
        text += f"\nThis process imported none of what it installed: {not results['parent_imports']}\n"
    return text


# ------------------------------------------------------------------------------------ --prepare

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheels(python: str, wheels_dir: Path, downloads: Path) -> list[Path]:
    """The pinned wheels for `python` ("3.12": the GPU machine's) in `wheels_dir`, PyNvVideoCodec
    stripped; downloaded once into `downloads` and checked against PINNED."""
    from .strip_wheel import KEEP, strip_wheel

    if python not in WHEELS:
        raise SystemExit(f"no pinned wheels for Python {python} (pinned: {', '.join(WHEELS)})")
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in PINNED if f"-cp{python.replace('.', '')}-" in name]
    if not all((downloads / name).is_file() and sha256(downloads / name) == PINNED[name][0] for name in wanted):
        target = ["--python-version", python, "--implementation", "cp",
                  *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                    for arg in ("--platform", tag)]]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", *target, "-d", str(downloads), *WHEELS[python]], check=True)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    for stale in wheels_dir.glob("*.whl"):
        stale.unlink()
    made = []
    for name in wanted:
        path = downloads / name
        if not path.is_file() or sha256(path) != PINNED[name][0]:
            raise SystemExit(f"{path}: missing or not the pinned file (sha256 {PINNED[name][0]})")
        if name.split("-")[0] in KEEP:
            made.append(strip_wheel(path, wheels_dir))
        else:
            made.append(Path(shutil.copy2(path, wheels_dir / name)))
    return made


def prepare_bundle(carried: Path) -> Path:
    """The small bundle parity runs (exported here: the GPU machine has no Paddle)."""
    from tsf.export import export_bundle

    return Path(export_bundle(carried / "bundle", random_init=True, arch=SMALL_ARCH, seed=0, overwrite=True))


def tree_bytes() -> int:
    """The working tree that travels with a `run` call: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=common.REPO_ROOT, capture_output=True, check=True).stdout.decode()
    paths = [common.REPO_ROOT / name for name in listed.split("\0") if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare(carried: Path, python: str, wheels_only: bool) -> int:
    """Here, with a network (and the export extra for the bundle): the wheels for `python` and the
    small bundle; for the GPU machine's Python, the carry checked and the `run` call printed."""
    wheels = fetch_wheels(python, carried / "wheels", Path(tempfile.gettempdir()) / "tsf-device-check-downloads")
    print("wheels: " + ", ".join(f"{w.name} ({w.stat().st_size / common.MIB:.2f} MiB)" for w in wheels))
    if wheels_only:
        return 0
    prepare_bundle(carried)
    for path in sorted(p for p in carried.rglob("*") if p.is_file()):
        print(f"{path.stat().st_size / common.MIB:8.2f} MiB  {path.relative_to(carried)}")
    if python != DEVICE_PYTHON:
        return 0
    tree, carry = tree_bytes(), folder_bytes(carried)
    total = (tree + carry) / common.MIB
    print(f"{carry / common.MIB:8.2f} MiB  in {carried}, plus {tree / common.MIB:.2f} MiB of working tree: "
          f"{total:.2f} MiB of the {CARRY_LIMIT_MIB} MiB this check allows itself (the tool takes 64)")
    if total > CARRY_LIMIT_MIB:
        print("too much to carry: the run would be refused or leave the tree no room", file=sys.stderr)
        return 1
    commit = common.git_commit()
    print("\nThe `run` call (device tool), once a GPU machine is lent:\n" + json.dumps({
        "command": (f"set -o pipefail; PYTHONUNBUFFERED=1 python3 -m benchmarks.device_check --out $OUT/device-check "
                    f"--commit {commit['commit']}{'-dirty' if commit['dirty'] else ''} 2>&1 "
                    f"| tee $OUT/device-check.log"),
        "carry": [carried.relative_to(common.REPO_ROOT).as_posix()], "timeout_s": 300}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=common.REPO_ROOT / "bench-out" / "device-check",
                        help="folder for results.json, results.md, steps.log and the pytest log (default %(default)s)")
    parser.add_argument("--carried", type=Path, default=CARRIED, help="the folder --prepare filled (default %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes")
    parser.add_argument("--prepare", action="store_true",
                        help="fill --carried here (a network and the export extra); with --dry-run, for this Python")
    parser.add_argument("--wheels-only", action="store_true",
                        help="with --prepare: only the wheels (what `make setup-test` fetches for CI's dry run)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that installs and runs every step (default: this one)")
    parser.add_argument("--commit", help="the commit the copied tree is at, for the provenance (there is no .git there)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tsf-device-check",
                        help="the install, the generated video and the full-size weights (default %(default)s)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default %(default)s)")
    args = parser.parse_args(argv)
    if args.prepare:
        python = f"{sys.version_info.major}.{sys.version_info.minor}" if args.dry_run else DEVICE_PYTHON
        return prepare(args.carried, python, args.wheels_only)
    if not (args.carried / "bundle" / "bundle.json").is_file() or not list((args.carried / "wheels").glob("*.whl")):
        parser.error(f"{args.carried} lacks the bundle or the wheels: run --prepare where there is a network")
    if args.commit:
        os.environ["TSF_BENCH_COMMIT"] = args.commit.removesuffix("-dirty")
        os.environ["TSF_BENCH_DIRTY"] = "1" if args.commit.endswith("-dirty") else "0"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps.log").write_text("")
    mode = "dry-run" if args.dry_run else "device"
    prov = common.provenance(["benchmarks/device_check.py", *(argv if argv is not None else sys.argv[1:])])
    run = Run(args.out, mode, args.carried, args.cache, args.python, prov, args.budget)
    results = run.execute()
    results["parent_imports"] = sorted(name for name in sys.modules if name.split(".")[0] in PACKAGES
                                       and name.split(".")[0] not in ("pip", "setuptools"))
    run.save()
    return 0 if all(step["ok"] for step in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
