"""Model-only speed: clips/s against batch size for every backend, as a fraction of the machine's limit.

Each backend runs in its own child process on random clips already in the backend's preferred
memory (host for CPU backends, device for GPU backends that take CuPy input), so this is the model
alone: no decoding, no preprocessing. Achieved TFLOP/s = clips/s x FLOPs per clip
(`benchmarks.flops`, counted from the model's shapes: 0.784 TFLOP for the reference model).

The ceilings are measured on the same machine, in children with the same thread count, with the
kind of kernel each CPU precision runs on (so a figure near 100 % means "as fast as a large GEMM of
that precision here", not "at the silicon's datasheet limit"):
- CPU fp32 and bf16: the best of several N x N matrix products by oneDNN through OpenVINO's CPU
  plugin (`INFERENCE_PRECISION_HINT` f32 / bf16), the kernels of the openvino engine;
- CPU int8: the same product dynamically quantized by ONNX Runtime (int8 weights, uint8
  activations), the kernel of the onnxruntime int8 engine;
- CPU fp32 by NumPy's BLAS is reported too, for comparison with earlier runs (OpenBLAS is slower
  than oneDNN on this CPU: it is not the ceiling).
Each row's share is taken against the ceiling of its own precision.
- GPU: the best of several FP16 N x N matrix products (torch if installed, else CuPy/cuBLAS);
  every GPU backend is reported against it, FP32 backends too (the issue's yardstick).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from tsf.runtime.backends.precision import native_bf16

from . import common
from .flops import clip_flops


def blas_env(threads: int) -> dict:
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def cpu_matmul_ceiling(n: int = 3072, repeats: int = 5) -> dict:
    """Best float32 GEMM rate of NumPy's BLAS in this process (threads set by the environment)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS thread pool start, page faults on the output
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return {"n": n, "dtype": "float32", "best_s": best, "tflops": 2 * n**3 / best / 1e12,
            "threads": os.environ.get("OPENBLAS_NUM_THREADS"), "library": "numpy"}


GEMM_N = 3072


def onednn_gemm(precision: str, threads: int, n: int = GEMM_N):
    """(one n x n matrix product by OpenVINO's CPU plugin (oneDNN) at `precision` (fp32, bf16), library)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], np.float32, name="a")
    model = ov.Model([ops.matmul(a, ops.constant(rng.standard_normal((n, n), dtype=np.float32)), False, False)], [a])
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request, x = compiled.create_infer_request(), rng.standard_normal((n, n), dtype=np.float32)
    return (lambda: request.infer({0: x})), f"openvino {ov.__version__.split('-')[0]} (oneDNN)"


def int8_gemm(threads: int, n: int = GEMM_N):
    """(one n x n matrix product by ONNX Runtime's dynamically quantized MatMul, the int8 engine's kernel, library)."""
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from tsf.runtime.backends.quantize import quantize_int8

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")])
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "gemm.onnx", Path(tmp) / "gemm.int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
        quantize_int8(fp32, int8)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((n, n), dtype=np.float32)
    return (lambda: session.run(None, {"a": x})), f"onnxruntime {onnxruntime.__version__} (dynamic int8)"


def cpu_gemm_ceiling(precision: str, threads: int, repeats: int = 5) -> dict:
    """Best rate of the CPU matrix product of `precision` (fp32/bf16: oneDNN; int8: ONNX Runtime)."""
    gemm, library = int8_gemm(threads) if precision == "int8" else onednn_gemm(precision, threads)
    gemm()  # warm-up
    best = min(_timed(gemm) for _ in range(repeats))
    return {"n": GEMM_N, "dtype": precision, "best_s": best, "tflops": 2 * GEMM_N**3 / best / 1e12,
            "threads": threads, "library": library}


def measure_interleaved(bundle: str, variants: list[dict], batch: int, rounds: int, threads: int,
                        background_load: int = 0) -> dict:
    """Runs in a child: every CPU variant and every CPU precision's matrix product, loaded once, then
    timed in turn, round after round. Load from other processes falls on all of them alike, so the
    ratios of their medians hold on a shared machine where separate runs minutes apart do not.
    With `background_load`, every round is run twice: as it is, and beside that many busy processes."""
    import numpy as np

    from tsf.runtime.bundle import load_bundle

    arch = load_bundle(bundle).architecture
    clips = np.random.default_rng(0).random((batch, 3, arch["frames"], arch["image_size"], arch["image_size"]),
                                            dtype=np.float32)
    steps, described = {}, {}
    for variant in variants:
        runner = common.make_backend(bundle, variant["backend"], "cpu", variant["precision"], threads)
        name = f"{runner.name} {runner.precision}"
        steps[name] = (lambda r=runner: r.run(clips))
        described[name] = {"backend": runner.name, "precision": runner.precision,
                           "precision_reason": runner.precision_reason}
    for precision in ("fp32", "bf16", "int8"):
        if precision == "bf16" and native_bf16() is None:
            continue
        gemm, library = int8_gemm(threads) if precision == "int8" else onednn_gemm(precision, threads)
        steps[f"cpu {precision} ceiling"] = gemm
        described[f"cpu {precision} ceiling"] = {"library": library, "n": GEMM_N}
    for step in steps.values():
        step()  # warm-up
    loads = [0, background_load] if background_load else [0]
    times: dict[tuple[str, int], list[float]] = {(name, load): [] for load in loads for name in steps}
    for _ in range(rounds):
        for load in loads:
            with common.BusyProcesses(load):
                for name, step in steps.items():
                    times[name, load].append(_timed(step))
    return {"batch": batch, "rounds": rounds, "threads": threads, "loads": loads,
            "steps": [{"name": name, "load": load, **described[name], "median_s": statistics.median(t), "best_s": min(t),
                       "all_s": t}
                      for (name, load), t in times.items()]}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def gpu_matmul_ceiling(n: int = 8192, repeats: int = 20, dtype: str = "float16") -> dict:
    """Best FP16 (or FP32) GEMM rate on GPU 0: torch when installed, else CuPy (cuBLAS either way)."""
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch without CUDA")
        a = torch.randn(n, n, device="cuda", dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device="cuda", dtype=getattr(torch, dtype))
        torch.backends.cuda.matmul.allow_tf32 = False  # an FP32 ceiling must be real FP32

        def step():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        library = f"torch {torch.__version__}"
    except ImportError:
        import cupy

        a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)

        def step():
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            cupy.matmul(a, b)
            end.record()
            end.synchronize()
            return cupy.cuda.get_elapsed_time(start, end) / 1e3

        library = f"cupy {cupy.__version__}"
    for _ in range(3):
        step()
    best = min(step() for _ in range(repeats))
    return {"n": n, "dtype": dtype, "best_s": best, "tflops": 2 * n**3 / best / 1e12, "library": library}


def measure_backend(bundle: str, backend: str, device: str, precision: str, batch_sizes: list[int],
                    min_time_s: float = 2.0, min_runs: int = 2, threads: int | None = None) -> dict:
    """Runs in a child: clips/s per batch size (median of timed runs after one warm-up per size)."""
    import numpy as np

    runner = common.make_backend(bundle, backend, device, precision, threads)
    from tsf.runtime.bundle import load_bundle

    arch = load_bundle(bundle).architecture
    shape = (3, arch["frames"], arch["image_size"], arch["image_size"])
    rng = np.random.default_rng(0)
    sync = lambda: None  # noqa: E731
    on_device = runner.wants_gpu_input
    if on_device:
        import cupy

        sync = cupy.cuda.Device().synchronize
    rows = []
    for batch in batch_sizes:
        clips = rng.random((batch, *shape), dtype=np.float32)
        if on_device:
            clips = cupy.asarray(clips)
        try:
            runner.run(clips)  # warm-up: allocations and kernel choices for this shape
        except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large batch: report, go on
            rows.append({"batch": batch, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            break
        times = []
        while len(times) < min_runs or sum(times) < min_time_s:
            sync()
            started = time.perf_counter()
            runner.run(clips)  # returns host NumPy outputs, so the work is finished when it returns
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows.append({"batch": batch, "runs": len(times), "median_s": median, "clips_per_s": batch / median})
    return {"backend": runner.name, "device": str(runner.device), "precision": runner.precision,
            "precision_reason": runner.precision_reason, "rows": rows}


def run(cache_dir: Path, archs: dict[str, dict], batch_sizes: dict[str, list[int]], threads: int | None = None,
        min_time_s: float = 2.0, min_runs: int = 2, backends: list[str] | None = None,
        engines: bool = False, background_load: int = 0, interleaved_rounds: int = 0) -> dict:
    """`archs`: label -> arch; `batch_sizes`: label -> sizes (CPU backends), GPU backends use `gpu`.

    `background_load`: that many busy processes run beside every backend measurement (not beside
    the separate ceilings), the same for each, as on a shared node: engines compared under equal load.
    `interleaved_rounds`: also measure every CPU variant and ceiling in one child, in turn, for
    that many rounds (`measure_interleaved`; with `background_load`, each round without and with
    the busy processes), at each model's first batch size.
    """
    threads = threads or len(os.sched_getaffinity(0))
    ceilings = measure_ceilings(threads)
    results, skipped = [], {}
    with common.BusyProcesses(background_load):
        _measure_variants(cache_dir, archs, batch_sizes, threads, min_time_s, min_runs, backends, engines,
                          results, skipped)
    interleaved = [_interleaved(cache_dir, label, arch, batch_sizes[label][0], interleaved_rounds, threads, backends,
                                background_load)
                   for label, arch in archs.items()] if interleaved_rounds else []
    # Measured again at the end and the better of the two kept: on a shared machine the ceiling
    # taken in a quiet moment is the honest yardstick (the fraction can only come out lower).
    for kind, again in measure_ceilings(threads).items():
        first = ceilings.get(kind, {})
        if again.get("tflops", 0) > first.get("tflops", 0):
            again["other_tflops"] = first.get("tflops")
            ceilings[kind] = again
        elif "tflops" in first:
            first["other_tflops"] = again.get("tflops")
    for entry in results:
        ceiling = ceilings.get(ceiling_kind(entry["device"], entry["precision"]), {}).get("tflops")
        for row in entry.get("rows", []):
            if "tflops" in row:
                row["fraction_of_ceiling"] = row["tflops"] / ceiling if ceiling else None
    return {"threads": threads, "ceilings": ceilings, "results": results, "skipped": skipped,
            "background_load": background_load, "interleaved": interleaved}


def _interleaved(cache_dir, label, arch, batch, rounds, threads, backends, background_load) -> dict:
    bundle, _ = common.ensure_bundle(cache_dir, arch)
    variants = [v for v in common.backend_variants()[0]
                if v["device"] == "cpu" and (not backends or v["backend"] in backends)]
    child = common.call_in_child("benchmarks.model_only:measure_interleaved",
                                 {"bundle": str(bundle), "variants": variants, "batch": batch, "rounds": rounds,
                                  "threads": threads, "background_load": background_load}, env=blas_env(threads))
    entry = {"model": label, "peak_rss_bytes": child.peak_rss_bytes}
    if child.returncode != 0 or child.result is None:
        return {**entry, "error": (child.stderr.strip().splitlines() or ["?"])[-1]}
    flops = clip_flops(**{**common.REFERENCE_ARCH, **arch})["total"]
    steps = {(step["name"], step["load"]): step for step in child.result["steps"]}
    rows = []
    for (name, load), step in steps.items():
        row = {"step": name, "runs": len(step["all_s"]), **step}
        if "backend" in step:
            reference = steps.get(("onnxruntime fp32", load), {})
            row["tflops"] = batch * flops / step["median_s"] / 1e12
            if reference:
                row["speedup_vs_onnxruntime_fp32"] = reference["median_s"] / step["median_s"]
            ceiling = steps.get((f"cpu {step['precision']} ceiling", load))
            if ceiling:
                row["fraction_of_ceiling"] = ceiling["median_s"] * row["tflops"] / (2 * GEMM_N**3 / 1e12)
            quiet = steps.get((name, 0), {}).get("median_s")
            row["slowdown_vs_no_added_load"] = step["median_s"] / quiet if quiet else None
        else:
            row["tflops"] = 2 * GEMM_N**3 / step["median_s"] / 1e12
        rows.append(row)
    return {**entry, "batch": batch, "rounds": rounds, "background_load": background_load, "rows": rows}


def _measure_variants(cache_dir, archs, batch_sizes, threads, min_time_s, min_runs, backends, engines,
                      results: list, skipped: dict) -> None:
    for label, arch in archs.items():
        bundle, _ = common.ensure_bundle(cache_dir, arch, engines=engines)
        variants, why_not = common.backend_variants()
        skipped.update(why_not)
        flops = clip_flops(**{**common.REFERENCE_ARCH, **arch})["total"]
        for variant in variants:
            if backends and variant["backend"] not in backends:
                continue
            sizes = batch_sizes["gpu" if variant["device"] == "cuda" else label]
            child = common.call_in_child(
                "benchmarks.model_only:measure_backend",
                {"bundle": str(bundle), **variant, "batch_sizes": sizes, "min_time_s": min_time_s, "min_runs": min_runs,
                 "threads": threads if variant["device"] == "cpu" else None},
                env=blas_env(threads) if variant["device"] == "cpu" else None, sample_gpu=variant["device"] == "cuda")
            entry = {"model": label, "arch": {**common.REFERENCE_ARCH, **arch}, "clip_tflop": flops / 1e12,
                     **variant, "peak_rss_bytes": child.peak_rss_bytes, "peak_gpu_bytes": child.peak_gpu_bytes}
            if child.returncode != 0:
                entry["error"] = (child.stderr.strip().splitlines() or ["?"])[-1]
            else:
                # What ran: a precision refused by its fidelity gate runs (and is reported as) fp32.
                entry.update(precision=child.result["precision"], precision_reason=child.result["precision_reason"])
                for row in child.result["rows"]:
                    if "clips_per_s" in row:
                        row["tflops"] = row["clips_per_s"] * flops / 1e12
                entry["rows"] = child.result["rows"]
            results.append(entry)


def ceiling_kind(device: str, precision: str) -> str:
    """The ceiling a row is measured against: its own precision's on the CPU, FP16's on a GPU."""
    return f"cpu {precision}" if device == "cpu" else device


def measure_ceilings(threads: int) -> dict:
    """`cpu fp32`/`cpu bf16` (oneDNN), `cpu int8` (ONNX Runtime), `cpu fp32 blas` (NumPy), `cuda`.
    A ceiling whose library is missing is recorded with its error (and its rows get no share)."""
    ceilings = {"cpu fp32 blas": common.call_in_child("benchmarks.model_only:cpu_matmul_ceiling", {},
                                                      env=blas_env(threads)).check().result}
    for precision in ("fp32", "bf16", "int8"):
        kind = f"cpu {precision}"
        if precision == "bf16" and native_bf16() is None:
            ceilings[kind] = {"error": "this CPU has no native BF16"}
            continue
        run_ = common.call_in_child("benchmarks.model_only:cpu_gemm_ceiling", {"precision": precision, "threads": threads})
        ceilings[kind] = run_.result if run_.returncode == 0 else {"error": (run_.stderr.strip().splitlines() or ["?"])[-1]}
    if common.gpu_info():
        run_ = common.call_in_child("benchmarks.model_only:gpu_matmul_ceiling", {})
        ceilings["cuda"] = run_.result if run_.returncode == 0 else {"error": (run_.stderr.strip().splitlines() or ["?"])[-1]}
    return ceilings


def flat_rows(result: dict) -> list[dict]:
    rows = []
    for entry in result["results"]:
        if "error" in entry:
            rows.append({"model": entry["model"], "backend": entry["backend"], "precision": entry["precision"],
                         "batch": "–", "error": entry["error"]})
            continue
        for row in entry["rows"]:
            rows.append({"model": entry["model"], "backend": entry["backend"], "precision": entry["precision"],
                         "device": entry["device"], "peak_rss_mib": entry["peak_rss_bytes"] / common.MIB,
                         "peak_gpu_mib": entry["peak_gpu_bytes"] / common.MIB if entry["peak_gpu_bytes"] else None,
                         **row})
    return rows


def markdown(result: dict) -> str:
    lines = []
    for kind, c in result["ceilings"].items():
        if "tflops" in c:
            other = f"; {c['other_tflops'] * 1e3:.1f} in the other measurement" if c.get("other_tflops") else ""
            lines.append(f"- {kind} ceiling: {c['tflops'] * 1e3:.1f} GFLOP/s ({c['dtype']} {c['n']}×{c['n']} "
                         f"matrix product, {c['library']}, best of several"
                         + (f", {c.get('threads')} threads" if kind.startswith("cpu") else "")
                         + f"; measured before and after the backends, the higher kept{other})")
        else:
            lines.append(f"- {kind} ceiling: not measured ({c.get('error')})")
    columns = [("model", "model", ""), ("backend", "backend", ""), ("precision", "precision", ""),
               ("batch", "batch", ""), ("median_s", "s / batch", ".3f"), ("clips_per_s", "clips/s", ".3f"),
               ("tflops", "TFLOP/s", ".4f"), ("fraction_of_ceiling", "of ceiling", ".0%"),
               ("peak_rss_mib", "peak RSS MiB", ".0f"), ("peak_gpu_mib", "peak GPU MiB", ".0f"),
               ("error", "error", "")]
    text = "\n".join(lines) + "\n\n" + common.markdown_table(flat_rows(result), columns)
    for block in result.get("interleaved", []):
        text += (f"\n**Interleaved, {block['model']} model** (one child; every variant and ceiling loaded once, "
                 f"then timed in turn for {block.get('rounds')} rounds at batch {block.get('batch')}: other load "
                 "falls on all alike, so these ratios are the fair ones):\n\n")
        if "error" in block:
            text += f"not measured: {block['error']}\n"
            continue
        text += common.markdown_table(block["rows"], [
            ("step", "engine / ceiling", ""), ("load", "busy processes added", ""), ("median_s", "median s", ".3f"),
            ("best_s", "best s", ".3f"), ("tflops", "TFLOP/s (median)", ".4f"),
            ("speedup_vs_onnxruntime_fp32", "speed vs onnxruntime fp32, medians (same load)", ".2f"),
            ("fraction_of_ceiling", "of own ceiling (same load)", ".0%"),
            ("slowdown_vs_no_added_load", "slowdown from the added load", ".2f")])
    if result.get("background_load"):
        text += (f"\n**Loaded machine**: {result['background_load']} busy processes (`while True: pass`) ran beside "
                 "every backend measurement of the first table, the same for each (the separate ceilings were "
                 "measured without them); the interleaved table runs every round without and with them.\n")
    text += (f"\nFLOPs per clip from the model's shapes (benchmarks/flops.py). CPU backends run with "
             f"{result['threads']} threads, the same as the ceilings; each row's share is of its own precision's "
             "ceiling (`cpu fp32 blas` is NumPy's BLAS, for reference only). Median of timed runs after a warm-up.\n")
    for kind, why in result["skipped"].items():
        text += f"\n{kind}: not measured ({why})."
    return text + "\n"


def plot(result: dict, out_dir: Path) -> list[str]:
    plt = common.pyplot()
    entries = [e for e in result["results"] if "rows" in e]
    if plt is None or not entries:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for e in entries:
        rows = [r for r in e["rows"] if "clips_per_s" in r]
        label = f"{e['model']} {e['backend']} {e['precision']}"
        left.plot([r["batch"] for r in rows], [r["clips_per_s"] for r in rows], "o-", label=label)
        right.plot([r["batch"] for r in rows], [100 * (r["fraction_of_ceiling"] or 0) for r in rows], "o-", label=label)
    batches = sorted({r["batch"] for e in entries for r in e["rows"] if "clips_per_s" in r})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("clips / s")
    right.set_ylabel("% of measured matrix-product ceiling")
    right.set_ylim(0, 110)
    left.legend(fontsize=7)
    fig.suptitle("Model only")
    return [common.save_figure(fig, out_dir / "model_only.png")]


def main(argv: list[str] | None = None) -> int:
    from tsf.runtime.backends import ENGINES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_only", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--cache", type=Path, default=common.DEFAULT_CACHE)
    parser.add_argument("--model", choices=["small", "full"], action="append", help="default: small and full")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="comma-separated, CPU backends (default 1,2,4 small / 1,2 full)")
    parser.add_argument("--gpu-batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per point")
    parser.add_argument("--backend", action="append", choices=sorted(ENGINES), help="default: every usable one")
    parser.add_argument("--engines", action="store_true", help="build TensorRT engines into the bundles (GPU)")
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="N busy processes beside every backend measurement (a loaded node)")
    parser.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                        help="also time every CPU variant and ceiling in turn in one process, ROUNDS rounds")
    args = parser.parse_args(argv)
    prov = common.provenance()
    archs = {"small": common.SMALL_ARCH, "full": common.REFERENCE_ARCH}
    archs = {k: v for k, v in archs.items() if k in (args.model or ["small", "full"])}
    sizes = {"small": args.batch_sizes or [1, 2, 4], "full": args.batch_sizes or [1, 2], "gpu": args.gpu_batch_sizes}
    result = run(args.cache, archs, sizes, args.threads, args.min_time, backends=args.backend, engines=args.engines,
                 background_load=args.background_load, interleaved_rounds=args.interleaved)
    result["plots"] = plot(result, args.out)
    common.save_report(args.out, "model_only", "Model only", prov, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
