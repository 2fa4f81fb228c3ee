"""End to end on one video: every usable (decoder × backend × precision × decoders per video), each in its own process.

Each combination runs the runtime's own pipeline (`Extractor.extract` + `Extractor.save`,
what `tsf-extract` does for one video, minus argument parsing) in a fresh child process, so its
peak RSS is its own; GPU memory is sampled during the run. The backend is built explicitly for
each combination (the command line's `--backend auto` would only ever pick the fastest).

Stage split: the pipeline records inference time and time spent waiting for frames
(`Result.timings`, also in OUT.json); decode, RGB conversion and preprocessing run in the producer
thread and are timed here by wrapping the runtime's decoder and `preprocess_frame` in the child.
The stages overlap (producer thread vs inference), so their sum exceeds the wall time. On NVDEC
the RGB/preprocess figures are kernel launch times (the GPU runs them asynchronously).

One more row runs the real `tsf-extract` command (auto backend and decoder) for the figure a
user sees: wall time including interpreter start-up and model loading.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import common, decode_only


class StageClock:
    """Accumulates seconds per stage; thread-safe because the producer thread reports too."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)
        return timed


class _TimedFrame:
    def __init__(self, frame, clock: StageClock):
        self._frame, self._clock = frame, clock
        self.pts_time, self.number = frame.pts_time, frame.number

    def to_rgb(self):
        return self._clock.wrap("rgb", self._frame.to_rgb)()


class _TimedDecoder:
    """The runtime's decoder with the time spent producing each frame recorded as `decode`."""

    def __init__(self, decoder, clock: StageClock):
        self._decoder, self._clock = decoder, clock
        self.name, self.gpu_stream = decoder.name, decoder.gpu_stream
        self.engines = getattr(decoder, "engines", None)  # what the runtime's choice of K reads

    def frames(self):
        iterator = iter(self._decoder.frames())
        while True:
            started = time.perf_counter()
            try:
                frame = next(iterator)
            except StopIteration:
                self._clock.add("decode", time.perf_counter() - started)
                return
            self._clock.add("decode", time.perf_counter() - started)
            yield _TimedFrame(frame, self._clock)

    def close(self):
        self._decoder.close()


def extract_once(video: str, bundle: str, backend: str, device: str, precision: str, decoder: str,
                 align: str = "center", batch_size: int | None = None, decoders: int | None = None) -> dict:
    """Runs in a child: load, extract, write; returns timings by stage (seconds)."""
    from tsf.runtime import batch as batch_module
    from tsf.runtime import pipeline
    from tsf.runtime.extractor import ExtractSettings, Extractor

    clock = StageClock()
    started = time.perf_counter()
    extractor = Extractor(bundle, ExtractSettings(align=align, batch_size=batch_size, backend=backend, device=device,
                                                  precision=precision, decoder=decoder, decoders=decoders))
    runner = extractor.backend
    load_s = time.perf_counter() - started

    original_open = pipeline.open_decoder
    pipeline.open_decoder = lambda *a, **k: _TimedDecoder(original_open(*a, **k), clock)
    batch_module.preprocess_frame = clock.wrap("preprocess", batch_module.preprocess_frame)

    run_started = time.perf_counter()
    result = extractor.extract(video)
    extract_s = time.perf_counter() - run_started
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.npy"
        write_started = time.perf_counter()
        extractor.save(result, out)
        write_s = time.perf_counter() - write_started
    stages = {"load_model": load_s, "setup": result.timings.get("setup_seconds"), **clock.seconds,
              "inference": result.timings.get("inference_seconds"),
              "waiting_for_frames": result.timings.get("waiting_for_frames_seconds"), "write": write_s}
    return {"rows": result.rows, "video_s": float(result.info.duration), "batch_size": result.batch_size,
            "backend": runner.name, "decoder": result.decoder, "decoders": result.decoders, "precision": runner.precision,
            "extract_s": extract_s, "extract_and_write_s": extract_s + write_s, "stages": stages,
            "frames_decoded": result.stats.frames_decoded, "frames_preprocessed": result.stats.frames_preprocessed,
            "pipeline_timings": result.timings}


def decoder_kinds() -> tuple[list[str], dict[str, str]]:
    from tsf.runtime.decode_nvdec import nvdec_support

    reason = nvdec_support()
    return (["cpu"] if reason else ["cpu", "nvdec"]), ({"nvdec": reason} if reason else {})


def run(cache_dir: Path, archs: dict[str, dict], videos: dict[str, list[tuple[str, float]]],
        batch_size: int | None = None, engines: bool = False, command_row: tuple[str, ...] = ("small",),
        backends: list[str] | None = None, cpu_seconds: float | None = None,
        decoder_counts: list[int] | None = None) -> dict:
    """`archs`: label -> arch; `videos`: label -> [(resolution, seconds), ...] of generated video.

    `cpu_seconds` caps the video length for CPU backends (a GPU-sized video would take hours there);
    `command_row`: the model labels that also get a row for the real `tsf-extract` command;
    `decoder_counts`: the decoders per video (`--decoders`) to measure in turn, on videos with a
    keyframe every 2 s (default: the runtime's own choice only).
    """
    gop = decode_only.SPLIT_GOP_SECONDS if decoder_counts and max(decoder_counts) > 1 else None
    decoders, skipped = decoder_kinds()
    rows = []
    for label, arch in archs.items():
        bundle, _ = common.ensure_bundle(cache_dir, arch, engines=engines)
        variants, why_not = common.backend_variants()
        skipped.update(why_not)
        for resolution, seconds in videos[label]:
            for variant in variants:
                if backends and variant["backend"] not in backends:
                    continue
                length = min(seconds, cpu_seconds) if cpu_seconds and variant["device"] == "cpu" else seconds
                video = str(common.test_video(cache_dir, resolution, length, gop_seconds=gop))
                for decoder in decoders:
                    if decoder == "nvdec" and variant["device"] != "cuda":
                        continue  # GPU-decoded frames travelling back for a CPU model: not a real setup
                    for count in decoder_counts or [None]:
                        rows.append(_combination_row(label, arch, bundle, video, resolution, length, variant,
                                                     decoder, batch_size, count))
        if label in command_row:
            resolution, seconds = videos[label][0]
            length = seconds if common.gpu_info() or not cpu_seconds else min(seconds, cpu_seconds)
            video = str(common.test_video(cache_dir, resolution, length, gop_seconds=gop))
            rows.append(_command_row(label, arch, bundle, video, resolution, length, batch_size))
    return {"rows": rows, "skipped": skipped}


def _combination_row(label, arch, bundle, video, resolution, seconds, variant, decoder, batch_size,
                     decoders=None) -> dict:
    child = common.call_in_child(
        "benchmarks.end_to_end:extract_once",
        {"video": video, "bundle": str(bundle), **variant, "decoder": decoder, "batch_size": batch_size,
         "decoders": decoders},
        sample_gpu=variant["device"] == "cuda")
    row = {"model": label, "depth": arch.get("depth"), "video": f"{resolution} {seconds:g} s",
           "decoder": decoder, **variant, "peak_rss_bytes": child.peak_rss_bytes,
           "peak_gpu_bytes": child.peak_gpu_bytes, "child_wall_s": child.wall_s}
    if child.returncode != 0 or child.result is None:
        row["error"] = (child.stderr.strip().splitlines() or ["?"])[-1]
        return row
    r = child.result
    row.update(r, windows_per_s=r["rows"] / r["extract_and_write_s"],
               x_realtime=r["video_s"] / r["extract_and_write_s"],
               half_projected_s=HALF_WINDOWS * r["extract_and_write_s"] / r["rows"])
    return row


def _command_row(label, arch, bundle, video, resolution, seconds, batch_size) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.npy"
        command = [*common.tsf_command("tsf-extract"), video, "-o", str(out), "--model", str(bundle),
                   "--overwrite", "--quiet"]
        if batch_size:
            command += ["--batch-size", str(batch_size)]
        child = common.run_child(command, sample_gpu=bool(common.gpu_info()))
        row = {"model": label, "depth": arch.get("depth"), "video": f"{resolution} {seconds:g} s",
               "decoder": "auto", "backend": "tsf-extract (auto)", "precision": "", "command": " ".join(command[1:]),
               "peak_rss_bytes": child.peak_rss_bytes, "peak_gpu_bytes": child.peak_gpu_bytes,
               "child_wall_s": child.wall_s}
        if child.returncode != 0:
            row["error"] = (child.stderr.strip().splitlines() or ["?"])[-1]
            return row
        meta = json.loads(out.with_suffix(".json").read_text())
    video_s = meta["video"]["duration_seconds"]
    row.update(rows=meta["rows"], video_s=video_s, backend=f"tsf-extract ({meta['backend']})",
               decoder=meta["decoder"], precision=meta["precision"], batch_size=meta["batch_size"],
               pipeline_timings=meta["timings"], extract_and_write_s=child.wall_s,
               windows_per_s=meta["rows"] / child.wall_s, x_realtime=video_s / child.wall_s)
    # Start-up and model loading are paid once per command, not per window: project from the
    # pipeline's own steady-state rate instead.
    total, rows = meta["timings"].get("total_seconds"), meta["rows"]
    row["half_projected_s"] = HALF_WINDOWS * total / rows if total and rows else None
    return row


HALF_WINDOWS = 2700  # a 45-minute half at one window per second

STAGES = ("load_model", "setup", "decode", "rgb", "preprocess", "inference", "waiting_for_frames", "write")


def markdown(result: dict) -> str:
    table = []
    for row in result["rows"]:
        flat = {**row, "peak_rss_mib": row["peak_rss_bytes"] / common.MIB,
                "peak_gpu_mib": row["peak_gpu_bytes"] / common.MIB if row.get("peak_gpu_bytes") else None}
        for stage in STAGES:
            flat[stage] = (row.get("stages") or {}).get(stage)
        table.append(flat)
    columns = [("model", "model", ""), ("video", "video", ""), ("decoder", "decoder", ""),
               ("decoders", "decoders (K)", ""), ("backend", "backend", ""),
               ("precision", "precision", ""), ("batch_size", "batch", ""), ("rows", "windows", ""),
               ("extract_and_write_s", "wall s", ".2f"), ("windows_per_s", "windows/s", ".3g"),
               ("x_realtime", "× real time", ".3g"), ("half_projected_s", "45-min half s (projected)", ".0f"),
               ("peak_rss_mib", "peak RSS MiB", ".0f"),
               ("peak_gpu_mib", "peak GPU MiB", ".0f")] + [(s, f"{s} s", ".2f") for s in STAGES] + [
               ("error", "error", "")]
    text = common.markdown_table(table, columns)
    text += ("\nwall s: extraction + writing the outputs, model already loaded (its load time is `load_model`); "
             "for the `tsf-extract` row, the whole command including start-up. × real time = video seconds / "
             "wall seconds. 45-min half: 2,700 windows at the measured windows/s (model load excluded). "
             "Stage columns are busy seconds per stage; decode/RGB/preprocess run in the producer "
             "thread while inference runs, so they overlap.\n")
    for kind, why in result["skipped"].items():
        text += f"\n{kind}: not measured ({why})."
    return text + "\n"


def plot(result: dict, out_dir: Path) -> list[str]:
    plt = common.pyplot()
    rows = [r for r in result["rows"] if "stages" in r]
    if plt is None or not rows:
        return []
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows)))
    labels = [f"{r['model']} {r['video']} {r['decoder']} {r['backend']} {r['precision']}" for r in rows]
    for k, stage in enumerate(s for s in STAGES if s not in ("waiting_for_frames",)):
        values = [(r["stages"].get(stage) or 0) for r in rows]
        left = [sum((r["stages"].get(s) or 0) for s in STAGES[:STAGES.index(stage)] if s != "waiting_for_frames")
                for r in rows]
        ax.barh(labels, values, left=left, label=stage, color=plt.cm.tab10(k))
    ax.scatter([r["extract_and_write_s"] + (r["stages"].get("load_model") or 0) + 0 for r in rows], labels,
               marker="|", s=300, color="black", label="wall (load + extract + write)", zorder=3)
    ax.set_xlabel("seconds (stages overlap: bars are busy time, the mark is wall time)")
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return [common.save_figure(fig, out_dir / "end_to_end.png")]


def main(argv: list[str] | None = None) -> int:
    from tsf.runtime.backends import ENGINES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--cache", type=Path, default=common.DEFAULT_CACHE)
    parser.add_argument("--model", choices=["small", "full"], action="append", help="default: small and full")
    parser.add_argument("--resolution", nargs="+", default=["224p"], choices=sorted(common.RESOLUTIONS))
    parser.add_argument("--decoders", type=int, nargs="+", metavar="K",
                        help="decoders per video to measure (default: the runtime's choice)")
    parser.add_argument("--seconds", type=float, nargs=2, default=(30, 10), metavar=("SMALL", "FULL"),
                        help="seconds of generated video for the small and the full model")
    parser.add_argument("--batch-size", type=int, help="default: each backend's own")
    parser.add_argument("--backend", action="append", choices=sorted(ENGINES), help="default: every usable one")
    parser.add_argument("--engines", action="store_true", help="build TensorRT engines into the bundles (GPU)")
    args = parser.parse_args(argv)
    prov = common.provenance()
    archs = {"small": common.SMALL_ARCH, "full": common.REFERENCE_ARCH}
    archs = {k: v for k, v in archs.items() if k in (args.model or ["small", "full"])}
    videos = {"small": [(r, args.seconds[0]) for r in args.resolution],
              "full": [(r, args.seconds[1]) for r in args.resolution]}
    result = run(args.cache, archs, videos, args.batch_size, args.engines, backends=args.backend,
                 command_row=tuple(archs), decoder_counts=args.decoders)
    result["plots"] = plot(result, args.out)
    common.save_report(args.out, "end_to_end", "End to end", prov, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
