"""All four benchmarks in one command: results.json, results.md and PNG plots in one folder.

    python -m benchmarks.run_all --quick --out bench-out     # a few minutes on 2 CPU cores
    python -m benchmarks.run_all --full  --out bench-out     # a GPU machine with TensorRT / onnxruntime-gpu

--quick: short videos, the small model (depth 2, otherwise the reference's shapes) everywhere,
plus the full reference model at batch 1 and 2 in model-only and on a 5-s video end to end.
--full: longer videos, both models, batch sizes up to 32 on GPU, 224p and 1080p end to end,
TensorRT engines built into the bundles when TensorRT is usable.
Each section records the load average before and after it: on a shared machine, absolute times
are only as good as the quiet they were taken in (same-process ratios hold regardless).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path

from tsf.runtime.extras import install_hint

from . import baseline, common, decode_only, end_to_end, model_only

SMALL, FULL = common.SMALL_ARCH, common.REFERENCE_ARCH
# --smoke only checks that the benchmark code runs (tests/test_benchmarks.py): its figures mean nothing.
TINY = {**common.REFERENCE_ARCH, "depth": 1, "width": 64, "heads": 2, "frames": 4}

PLANS = {
    "smoke": {
        "decode": {"resolutions": {"224p": 2}, "repeats": 1},
        "model": {"archs": {"tiny": TINY}, "batch_sizes": {"tiny": [1, 2], "gpu": [1, 2]}, "min_time_s": 0.05},
        "e2e": {"archs": {"tiny": TINY}, "videos": {"tiny": [("224p", 3)]}, "command_row": ("tiny",)},
        "baseline": {"arch": TINY, "seconds": 7, "repeats": 1},
    },
    "quick": {
        "decode": {"resolutions": {"224p": 20, "720p": 6, "1080p": 4}, "repeats": 2},
        "model": {"archs": {"small": SMALL, "full": FULL},
                  "batch_sizes": {"small": [1, 2, 4], "full": [1, 2], "gpu": [1, 2, 4, 8]}, "min_time_s": 2.0},
        "e2e": {"archs": {"small": SMALL, "full": FULL},
                "videos": {"small": [("224p", 15)], "full": [("224p", 5)]}, "command_row": ("small", "full")},
        "baseline": {"arch": SMALL, "seconds": 12, "repeats": 2},
    },
    "full": {
        "decode": {"resolutions": {"224p": 60, "720p": 20, "1080p": 20}, "repeats": 3},
        "model": {"archs": {"small": SMALL, "full": FULL},
                  "batch_sizes": {"small": [1, 2, 4, 8], "full": [1, 2, 4], "gpu": [1, 2, 4, 8, 16, 32]},
                  "min_time_s": 3.0},
        "e2e": {"archs": {"small": SMALL, "full": FULL},
                "videos": {"small": [("224p", 60)], "full": [("224p", 120), ("1080p", 60)]},
                "command_row": ("small", "full"), "cpu_seconds": 20},
        "baseline": {"arch": SMALL, "seconds": 20, "repeats": 3},
    },
}


def _section(name: str, results: dict, fn) -> None:
    """Run one benchmark; a failure is recorded (with its traceback) and the others still run."""
    load_before = common.load_average()
    started = time.perf_counter()
    print(f"[run_all] {name} ... (load average {load_before})", flush=True)
    try:
        results[name] = fn()
    except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' numbers
        results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(f"[run_all] {name} FAILED: {e}", flush=True)
    results[name]["seconds"] = round(time.perf_counter() - started, 1)
    results[name]["load_average_before"] = load_before
    results[name]["load_average_after"] = common.load_average()


def run(mode: str, out: Path, cache: Path, only: list[str] | None = None) -> dict:
    plan = PLANS[mode]
    gpu = bool(common.gpu_info())
    prov = common.provenance()
    results: dict = {"mode": mode, "provenance": prov}
    wanted = only or ["model", "e2e", "decode", "baseline"]
    if "model" in wanted:
        p = plan["model"]
        _section("model_only", results, lambda: model_only.run(
            cache, p["archs"], p["batch_sizes"], min_time_s=p["min_time_s"], engines=gpu))
    if "e2e" in wanted:
        p = plan["e2e"]
        _section("end_to_end", results, lambda: end_to_end.run(
            cache, p["archs"], p["videos"], engines=gpu, command_row=p["command_row"],
            cpu_seconds=p.get("cpu_seconds")))
    if "decode" in wanted:
        p = plan["decode"]
        _section("decode_only", results, lambda: decode_only.run(cache, p["resolutions"], p["repeats"]))
    if "baseline" in wanted:
        p = plan["baseline"]
        if importlib.util.find_spec("paddle") is None:
            results["baseline"] = {"error": f"Paddle is not installed here ({install_hint('export')}); baseline skipped"}
        else:
            _section("baseline", results, lambda: baseline.run(
                out, cache, p["arch"], seconds=p["seconds"], repeats=p["repeats"]))
    results["load_average_at_end"] = common.load_average()
    results["plots"] = []
    for name, module in (("model_only", model_only), ("end_to_end", end_to_end), ("decode_only", decode_only)):
        if name in results and "error" not in results[name]:
            results["plots"] += module.plot(results[name], out)
    if "baseline" in results and "error" not in results["baseline"]:
        results["plots"] += baseline.plot([results["baseline"]], out)
    results["headline"] = headline(results)
    common.write_json(out / "results.json", results)
    common.write_text(out / "results.md", markdown(results))
    return results


def headline(results: dict) -> list[dict]:
    """The figures the issue asks for, picked from the sections (whatever was measured)."""
    figures = []

    def add(figure, value, source):
        figures.append({"figure": figure, "value": value, "source": source})

    for row in results.get("end_to_end", {}).get("rows", []):
        if "x_realtime" not in row:
            continue
        where = f"{row['backend']}, {row['decoder']} decoder, {row['precision']}, batch {row.get('batch_size')}"
        if row["backend"].startswith("tsf-extract"):
            add(f"tsf-extract command × real time, {row['model']} model, {row['video']} (start-up and model load "
                f"included)", f"{row['x_realtime']:.3g}", f"end to end: {where}")
        else:
            add(f"× real time, {row['model']} model, {row['video']} (model loaded)", f"{row['x_realtime']:.3g}",
                f"end to end: {where}")
            add(f"45-min half (2,700 windows), {row['model']} model, projected", f"{row['half_projected_s']:.0f} s "
                f"({row['half_projected_s'] / 3600:.2f} h)", f"end to end: {where}")
    base = results.get("baseline", {})
    if "speed_ratio" in base:
        model = f"depth {base['arch']['depth']}"
        add(f"speed ratio, tsf-extract vs reference-style baseline ({model}, same process)",
            f"{base['speed_ratio']:.2f}× ({base['baseline']['median_s'] / base['video']['rows']:.2f} vs "
            f"{base['tsf']['median_s'] / base['video']['rows']:.2f} s per window)", "baseline")
        add(f"peak RSS, tsf-extract ({model}; batch {base['tsf'].get('batch_size')} / batch 1)",
            f"{base['tsf']['peak_rss_bytes'] / common.MIB:.0f} / {base['tsf']['batch1_peak_rss_bytes'] / common.MIB:.0f} MiB",
            f"baseline ({base['video']['seconds']:.0f}-s video)")
        add(f"peak RSS, reference-style baseline ({model})", f"{base['baseline']['peak_rss_bytes'] / common.MIB:.0f} MiB",
            f"baseline ({base['video']['seconds']:.0f}-s video; grows with the video: all frames in RAM)")
        add("feature agreement, baseline vs tsf-extract (min cosine)", f"{base['agreement']['min_cosine']:.6f}", "baseline")
    model = results.get("model_only", {})
    for entry in model.get("results", []):
        rows = [r for r in entry.get("rows", []) if r.get("fraction_of_ceiling")]
        if rows:
            best = max(rows, key=lambda r: r["fraction_of_ceiling"])
            kind = model_only.ceiling_kind(entry["device"], entry["precision"])
            add(f"model inference, share of the {kind} matrix-product ceiling ({entry['model']} model, "
                f"{entry['backend']} {entry['precision']})",
                f"{best['fraction_of_ceiling']:.0%} at batch {best['batch']} ({best['tflops'] * 1e3:.1f} GFLOP/s of "
                f"{model['ceilings'][kind]['tflops'] * 1e3:.1f})", "model only")
    return figures


def markdown(results: dict) -> str:
    prov = results["provenance"]
    text = f"# tsf benchmarks ({results['mode']})\n\n" + common.provenance_markdown(prov)
    text += f"- load average at end: {' / '.join(map(str, results['load_average_at_end']))}\n"
    figures = headline(results)
    if figures:
        text += "\n## Headline figures\n\n" + common.markdown_table(
            figures, [("figure", "figure", ""), ("value", "value", ""), ("source", "from", "")])
    sections = (("model_only", "Model only", model_only.markdown),
                ("end_to_end", "End to end", end_to_end.markdown),
                ("decode_only", "Decode only", decode_only.markdown),
                ("baseline", "Reference-style baseline vs tsf-extract", lambda r: baseline.markdown([r])))
    for key, title, render in sections:
        if key not in results:
            continue
        section = results[key]
        text += f"\n## {title}\n\n"
        if "error" in section:
            text += f"Not measured: {section['error']}\n"
            continue
        text += (f"Took {section['seconds']} s; load average before {section['load_average_before']}, "
                 f"after {section['load_average_after']}.\n\n")
        text += render(section)
    for plot in results.get("plots", []):
        text += f"\n![{plot}]({plot})\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="a few minutes on 2 CPU cores")
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="longer runs, for a GPU machine")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode",
                      help="seconds, a tiny model: checks that the benchmarks run; the figures mean nothing")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (created)")
    parser.add_argument("--cache", type=Path, default=common.DEFAULT_CACHE,
                        help="generated videos and model bundles, reused between runs")
    parser.add_argument("--only", action="append", choices=["model", "e2e", "decode", "baseline"],
                        help="run only these sections (repeatable)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args.mode, args.out, args.cache, args.only)
    print((args.out / "results.md").read_text())
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
