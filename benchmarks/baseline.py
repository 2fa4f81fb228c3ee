"""The reference's way of working, re-created with our Paddle model, against `tsf-extract`.

Reference style (docs/reference.md §6): decode the whole video into a RAM list of RGB
frames; for each row, copy the frame list, pick that row's 16 frames by the reference's index
formula, preprocess them, and run the Paddle model eagerly at batch 1. Both sides run the same
weights (one .pdparams; the bundle was exported from it), the same video and the same
preprocessing math (`tsf.runtime.preprocess`), in `--align reference` mode, so their features
must agree (the cosine printed with the ratio proves the comparison is apples to apples).

Two measurements, both from this one command:
- speed ratio: ONE child process loads both and runs them alternately (tsf, baseline, tsf, ...),
  so a noisy machine slows both alike; the ratio of median times is the figure.
- peak memory: each side once more in its own fresh child (`tsf-extract` itself for tsf), so one
  side's high-water mark never includes the other's libraries or buffers.

Paddle's CPU threads are set fairly (docs/toolchain.md): OMP_NUM_THREADS = the thread count and
MKL_DEBUG_CPU_TYPE=5 (Paddle's MKL takes a slow path on AMD otherwise), set before Paddle loads.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from . import common

# What the reference copied per row: "deep" copies every frame's pixels (the whole decoded
# video) once per row, "shallow" only the list of references. The reference's own description
# ("the whole frame list copied once per window") does not say which; deep is the default
# because it matches its measured cost, and the figure is reported with the setting.
LIST_COPY_MODES = ("deep", "shallow")


def paddle_env(threads: int) -> dict:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MKL_DEBUG_CPU_TYPE": "5"}


# ---------------------------------------------------------------------------------------------
# The reference-style side.

def reference_frame_indices(row: int, fps: Fraction, frame_count: int, frames: int = 16,
                            seconds: int = 5) -> list[int]:
    """The reference's frame indices for row i: linspace(floor(i*fps), floor((i+5)*fps), 16), truncated."""
    import numpy as np

    start = math.floor(row * fps)
    end = math.floor((row + seconds) * fps)
    if end == frame_count:
        end -= 1
    return [int(x) for x in np.linspace(start, end, frames)]


def reference_row_count(duration_s: float, seconds: int = 5) -> int:
    return int(int(duration_s) - seconds)


def decode_all_rgb(path: str) -> list:
    """The whole video as a list of H x W x 3 uint8 frames, as the reference held it."""
    import av

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # the same FFmpeg threading as tsf's decoder: compare models, not codecs
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames


class ReferenceStyleExtractor:
    """Paddle eager, batch 1, the whole video in RAM; built once so load time is not timed."""

    def __init__(self, weights: str):
        import paddle

        from tsf.training.model import PPTimeSformer
        from tsf.training.weights import infer_config, load_reference_weights, read_pdparams

        paddle.set_device("cpu")
        state = read_pdparams(weights)
        self.model = PPTimeSformer(infer_config(state))
        load_reference_weights(self.model, state)
        self.model.eval()
        self.paddle = paddle

    def run(self, video: str, list_copy: str = "deep") -> tuple:
        import numpy as np

        from tsf.runtime.bundle import Preprocessing
        from tsf.runtime.preprocess import preprocess_frame

        REFERENCE_PREPROCESSING = Preprocessing.reference()
        from tsf.runtime.probe import probe_video

        info = probe_video(video)
        timings = {"decode": 0.0, "windows": 0.0, "model": 0.0}
        started = time.perf_counter()
        frames = decode_all_rgb(video)
        timings["decode"] = time.perf_counter() - started
        rows = reference_row_count(float(info.duration))
        features = []
        for row in range(rows):
            t0 = time.perf_counter()
            source = [f.copy() for f in frames] if list_copy == "deep" else copy.copy(frames)
            indices = reference_frame_indices(row, info.fps, len(frames), self.model.cfg.frames)
            clip = np.stack([preprocess_frame(source[i], REFERENCE_PREPROCESSING) for i in indices], axis=1)[None]  # 1,3,T,H,W
            del source
            t1 = time.perf_counter()
            with self.paddle.no_grad():
                feature, _, _ = self.model(self.paddle.to_tensor(clip))
            features.append(feature.numpy()[0])
            timings["windows"] += t1 - t0
            timings["model"] += time.perf_counter() - t1
        timings["total"] = time.perf_counter() - started
        return np.stack(features) if features else np.zeros((0, self.model.cfg.width), np.float32), timings


# ---------------------------------------------------------------------------------------------
# The tsf side, in-process (for the same-process ratio) and as the real command (for memory).

def tsf_extract_command(video: str, bundle: str, out: str, threads: int, batch_size: int | None = None) -> list[str]:
    command = [*common.tsf_command("tsf-extract"), video, "-o", out, "--model", bundle,
               "--align", "reference", "--device", "cpu", "--decoder", "cpu", "--threads", str(threads),
               "--overwrite"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    return command


class TsfExtractor:
    """tsf's `Extractor` with its engine loaded once, outside the timed part."""

    def __init__(self, bundle: str, threads: int, batch_size: int | None = None):
        from tsf.runtime.extractor import ExtractSettings, Extractor

        # The default path (auto engine and precision), as a user runs it.
        self.extractor = Extractor(bundle, ExtractSettings(align="reference", decoder="cpu", device="cpu",
                                                           threads=threads, batch_size=batch_size))
        self.extractor.backend  # loaded here, not timed

    def run(self, video: str) -> tuple:
        started = time.perf_counter()
        result = self.extractor.extract(video)
        total = time.perf_counter() - started
        return result.features, {"total": total, **(getattr(result, "timings", None) or {})}


def cosine_rows(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return {"rows_a": int(a.shape[0]), "rows_b": int(b.shape[0]), "min_cosine": None, "max_abs": None}
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"rows_a": int(a.shape[0]), "rows_b": int(b.shape[0]), "min_cosine": float(cos.min()),
            "max_abs": float(abs(a - b).max())}


def same_process_pair(video: str, weights: str, bundle: str, repeats: int, list_copy: str, threads: int,
                      batch_size: int | None = None) -> dict:
    """Run in a child with Paddle's thread settings in its environment: tsf and baseline alternately."""
    tsf = TsfExtractor(bundle, threads, batch_size)
    reference = ReferenceStyleExtractor(weights)
    tsf_times, baseline_times, tsf_timings, baseline_timings = [], [], [], []
    for _ in range(repeats):
        tsf_features, timing = tsf.run(video)
        tsf_times.append(timing["total"])
        tsf_timings.append(timing)
        baseline_features, timing = reference.run(video, list_copy)
        baseline_times.append(timing["total"])
        baseline_timings.append(timing)
    return {"tsf_s": tsf_times, "baseline_s": baseline_times, "tsf_timings": tsf_timings,
            "baseline_timings": baseline_timings, "rows": int(len(tsf_features)),
            "agreement": cosine_rows(baseline_features, tsf_features),
            "tsf_backend": f"{tsf.extractor.backend.name} {tsf.extractor.backend.precision}"}


def baseline_alone(video: str, weights: str, list_copy: str) -> dict:
    """The baseline by itself in a fresh child, for its own peak RSS (the child's rusage)."""
    started = time.perf_counter()
    reference = ReferenceStyleExtractor(weights)
    load_s = time.perf_counter() - started
    features, timings = reference.run(video, list_copy)
    return {"load_s": load_s, "timings": timings, "rows": int(len(features))}


# ---------------------------------------------------------------------------------------------

def run(out_dir: Path, cache_dir: Path, arch: dict, seconds: float = 12, resolution: str = "224p",
        repeats: int = 2, threads: int | None = None, list_copy: str = "deep",
        batch_size: int | None = None, video: str | None = None) -> dict:
    threads = threads or len(os.sched_getaffinity(0))
    bundle, weights = common.ensure_bundle(cache_dir, arch)
    video = str(video or common.test_video(cache_dir, resolution, seconds))
    env = paddle_env(threads)
    # Both sides get `threads`: tsf through --threads, Paddle through OMP_NUM_THREADS.
    pair = common.call_in_child("benchmarks.baseline:same_process_pair",
                                {"video": video, "weights": str(weights), "bundle": str(bundle),
                                 "repeats": repeats, "list_copy": list_copy, "threads": threads,
                                 "batch_size": batch_size},
                                env=env).check().result
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "features.npy")
        tsf_run = common.run_child(tsf_extract_command(video, str(bundle), out, threads, batch_size), env=env).check()
        tsf_meta = json.loads(Path(out).with_suffix(".json").read_text())
        # The engine's memory grows with the batch; at batch 1 both sides hold the same activations.
        tsf_batch1 = tsf_run if batch_size == 1 else common.run_child(
            tsf_extract_command(video, str(bundle), out, threads, 1), env=env).check()
    base_run = common.call_in_child("benchmarks.baseline:baseline_alone",
                                    {"video": video, "weights": str(weights), "list_copy": list_copy},
                                    env=env).check()
    from tsf.runtime.probe import probe_video

    duration = float(probe_video(video).duration)
    tsf_median, base_median = statistics.median(pair["tsf_s"]), statistics.median(pair["baseline_s"])
    return {
        "arch": {**common.REFERENCE_ARCH, **arch},
        "video": {"path": video, "seconds": duration, "resolution": resolution, "rows": pair["rows"]},
        "settings": {"threads": threads, "paddle_env": env, "list_copy": list_copy, "repeats": repeats,
                     "batch_size": batch_size, "tsf_backend": pair["tsf_backend"], "baseline_device": "cpu"},
        "same_process": pair,
        "speed_ratio": base_median / tsf_median,
        "tsf": {"median_s": tsf_median, "x_realtime": duration / tsf_median,
                "command_wall_s": tsf_run.wall_s, "peak_rss_bytes": tsf_run.peak_rss_bytes,
                "batch_size": tsf_meta.get("batch_size"), "timings": tsf_meta.get("timings"),
                "batch1_peak_rss_bytes": tsf_batch1.peak_rss_bytes, "batch1_command_wall_s": tsf_batch1.wall_s},
        "baseline": {"median_s": base_median, "x_realtime": duration / base_median,
                     "command_wall_s": base_run.wall_s, "peak_rss_bytes": base_run.peak_rss_bytes,
                     "timings": base_run.result["timings"]},
        "agreement": pair["agreement"],
    }


def markdown(results: list[dict]) -> str:
    rows = []
    for r in results:
        rows.append({
            "model": f"depth {r['arch']['depth']}",
            "video": f"{r['video']['resolution']}, {r['video']['seconds']:.0f} s, {r['video']['rows']} rows",
            "tsf_s": r["tsf"]["median_s"], "base_s": r["baseline"]["median_s"], "ratio": r["speed_ratio"],
            "tsf_w": r["tsf"]["median_s"] / max(r["video"]["rows"], 1),
            "base_w": r["baseline"]["median_s"] / max(r["video"]["rows"], 1),
            "tsf_mem": r["tsf"]["peak_rss_bytes"] / common.MIB,
            "tsf_mem1": r["tsf"]["batch1_peak_rss_bytes"] / common.MIB, "tsf_batch": r["tsf"].get("batch_size"),
            "base_mem": r["baseline"]["peak_rss_bytes"] / common.MIB,
            "cos": r["agreement"]["min_cosine"],
        })
    columns = [("model", "model", ""), ("video", "video", ""), ("tsf_s", "tsf-extract s (median)", ".2f"),
               ("base_s", "baseline s (median)", ".2f"), ("ratio", "speed ratio", ".2f"),
               ("tsf_w", "tsf s / window", ".3f"), ("base_w", "baseline s / window", ".3f"),
               ("tsf_batch", "tsf batch", ""), ("tsf_mem", "tsf peak RSS MiB", ".0f"),
               ("tsf_mem1", "tsf peak RSS MiB, batch 1", ".0f"), ("base_mem", "baseline peak RSS MiB", ".0f"),
               ("cos", "min cosine", ".6f")]
    settings = results[0]["settings"] if results else {}
    note = (f"\nBaseline: Paddle eager on CPU, batch 1, whole video decoded to RAM, frame list copied "
            f"({settings.get('list_copy')}) per row; environment {settings.get('paddle_env')}. "
            f"tsf: `tsf-extract --align reference` on {settings.get('tsf_backend')}. Times are the median of "
            f"{settings.get('repeats')} alternating runs in one process, model load excluded; peak RSS is "
            f"each side alone in a fresh process, everything included.\n")
    return common.markdown_table(rows, columns) + note


def plot(results: list[dict], out_dir: Path) -> list[str]:
    """One pair of panels per result: seconds per window, peak RSS (values written on the bars)."""
    plt = common.pyplot()
    if plt is None or not results:
        return []
    fig, axes = plt.subplots(len(results), 2, figsize=(9, 3.2 * len(results)), squeeze=False)
    for (speed, memory), r in zip(axes, results):
        rows = max(r["video"]["rows"], 1)
        bars = speed.bar(["reference-style\nbaseline", "tsf-extract"],
                         [r["baseline"]["median_s"] / rows, r["tsf"]["median_s"] / rows], color=["tab:gray", "tab:blue"])
        speed.bar_label(bars, fmt="%.2f s")
        speed.set_title(f"depth {r['arch']['depth']}: seconds per window, same process "
                        f"(tsf {r['speed_ratio']:.2f}× faster)", fontsize=9)
        bars = memory.bar(["reference-style\nbaseline", f"tsf-extract\nbatch {r['tsf'].get('batch_size')}",
                           "tsf-extract\nbatch 1"],
                          [r["baseline"]["peak_rss_bytes"] / common.MIB, r["tsf"]["peak_rss_bytes"] / common.MIB,
                           r["tsf"]["batch1_peak_rss_bytes"] / common.MIB],
                          color=["tab:gray", "tab:blue", "tab:cyan"])
        memory.bar_label(bars, fmt="%.0f MiB")
        memory.set_title(f"peak RSS, each alone in its own process ({r['video']['seconds']:.0f}-s video)", fontsize=9)
        for ax in (speed, memory):
            ax.margins(y=0.15)
    return [common.save_figure(fig, out_dir / "baseline.png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--cache", type=Path, default=common.DEFAULT_CACHE, help="videos and bundles cache")
    parser.add_argument("--small-model", action="store_true", help="depth 2 instead of 12 (same width, frames)")
    parser.add_argument("--seconds", type=float, default=12, help="length of the generated test video")
    parser.add_argument("--resolution", default="224p", choices=sorted(common.RESOLUTIONS))
    parser.add_argument("--video", help="use this video instead of a generated one")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side")
    parser.add_argument("--threads", type=int, help="CPU threads for both sides (default: all usable)")
    parser.add_argument("--list-copy", choices=LIST_COPY_MODES, default="deep")
    parser.add_argument("--batch-size", type=int, help="tsf-extract batch size (default: its own)")
    args = parser.parse_args(argv)
    prov = common.provenance()
    arch = common.SMALL_ARCH if args.small_model else common.REFERENCE_ARCH
    result = run(args.out, args.cache, arch, args.seconds, args.resolution, args.repeats, args.threads,
                 args.list_copy, args.batch_size, args.video)
    plots = plot([result], args.out)
    common.write_json(args.out / "baseline.json", {"provenance": prov, "results": [result], "plots": plots})
    text = "## Reference-style baseline vs tsf-extract (CPU)\n\n" + common.provenance_markdown(prov) + "\n" + markdown([result])
    common.write_text(args.out / "baseline.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
