"""Decode-only speed: frames/s of the runtime's decoders (PyAV on CPU, NVDEC on GPU) at 224p/720p/1080p,
with K decoders per video (`--decoders`, runtime/decode_segments.py) and V videos at once.

Three ways to consume the same video, through the runtime's own stages:
- `decode`:   every frame decoded, none converted (the codec's floor);
- `rgb-all`:  every frame decoded and converted to RGB (what the reference did before anything else);
- `needed`:   the runtime's producers (`pipeline.extract` with an engine that does nothing): every
              frame decoded, only the frames the windows need (`--align center`, 16 per 5-s window,
              shared by overlapping windows) converted to RGB, preprocessed once and batched.
With K decoders the video is split at keyframes as the runtime splits it (`pipeline.open_decoders`),
each segment decoded in a thread of its own up to the next one's start (`needed`: as far as its
windows need). frames/s counts the video's frames per wall second, so every K and mode compares
directly (`frames decoded` adds what segments decode past their end); × real time is video seconds
per wall second. K values are measured in turn within each repeat, so other users' load falls on
all of them alike. Test videos are generated with PyAV/libx264.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import types
from pathlib import Path

from . import common

MODES = ("decode", "rgb-all", "needed")
SPLIT_GOP_SECONDS = 2  # a keyframe every 2 s, as in broadcast and streaming files


def decoder_kinds() -> dict[str, str | None]:
    """Decoder kind -> None when usable here, else why not."""
    from tsf.runtime.decode_nvdec import nvdec_support

    return {"cpu": None, "nvdec": nvdec_support()}


def _synchronize(kind: str) -> None:
    if kind == "nvdec":
        import cupy

        cupy.cuda.Device().synchronize()


def idle_engine(kind: str):
    """An engine that computes nothing, for the pipeline to feed: on the GPU for NVDEC's frames."""
    import numpy as np

    from tsf.runtime.gpu import CPU, Device

    def run(video):
        zeros = np.zeros((len(video), 1), np.float32)
        return {"features": zeros, "logits": zeros, "event_times": zeros}

    return types.SimpleNamespace(name="none", device=Device("cuda", 0) if kind == "nvdec" else CPU,
                                 precision="fp32", default_batch_size=8, wants_gpu_input=kind == "nvdec", run=run)


def window_bundle():
    """What the pipeline reads of a bundle: the reference's window and preprocessing, one output column."""
    from tsf.runtime.bundle import Bundle, Preprocessing, Window

    return Bundle(dir=Path("."), meta={}, onnx_path=Path("model.onnx"), class_names=("none",),
                  architecture={"frames": 16, "depth": 1, "width": 1, "heads": 1, "classes": 1, "image_size": 224,
                                "patch_size": 16, "mlp_ratio": 4},
                  bundle_id="0" * 16, random_init=True, window=Window.reference(), preprocessing=Preprocessing.reference())


def consume(video: str, kind: str, mode: str, batch_size: int = 8, decoders: int = 1) -> dict:
    """One pass over `video` with `decoders` decoders; returns frames decoded, frames converted and wall seconds."""
    from tsf.runtime.backends import cpu_threads
    from tsf.runtime.pipeline import extract, open_decoders
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    info = probe_video(video)
    bundle, engine = window_bundle(), idle_engine(kind)
    plan = plan_windows(info, bundle.window)
    started = time.perf_counter()
    if mode == "needed":
        result = extract(info, plan, bundle, engine, decoder=kind, decoders=decoders, cpus_left=cpu_threads(),
                         batch_size=batch_size)
        _synchronize(kind)
        decoded, converted, used = result.stats.frames_decoded, result.stats.frames_preprocessed, result.decoders
    else:
        segments = open_decoders(info, plan, kind, engine, decoders, cpu_threads(), 1)
        counts = [[0, 0] for _ in segments]

        def decode(index, segment, decoder):
            # NVDEC's frames are read on the decoder's stream, as the pipeline's producers read them.
            try:
                with decoder.gpu_stream.work() if decoder.gpu_stream else contextlib.nullcontext():
                    for frame in decoder.frames():
                        if segment.end is not None and frame.pts_time >= segment.end:
                            break
                        counts[index][0] += 1
                        if mode == "rgb-all":
                            frame.to_rgb()
                            counts[index][1] += 1
                    _synchronize(kind)
            finally:
                decoder.close()

        threads = [threading.Thread(target=decode, args=(i, segment, decoder)) for i, (segment, decoder)
                   in enumerate(segments)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        decoded, converted, used = sum(c[0] for c in counts), sum(c[1] for c in counts), len(segments)
    return {"frames_decoded": decoded, "frames_converted": converted, "decoders": used,
            "wall_s": time.perf_counter() - started, "video_s": float(info.duration),
            "video_frames": info.frame_count_estimate, "width": info.width, "height": info.height}


def consume_at_once(video: str, kind: str, mode: str, videos: int, decoders: int = 1) -> dict:
    """`videos` passes over `video` at once, in threads, each with `decoders` decoders (a season's
    halves on one GPU); frames and seconds of video are their sums, wall time the whole."""
    results: list[dict] = []
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(consume(video, kind, mode, decoders=decoders)))
               for _ in range(videos)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(results) != videos:
        raise RuntimeError(f"{videos - len(results)} of {videos} passes failed")
    total = {key: sum(r[key] for r in results) for key in ("frames_decoded", "frames_converted", "video_s",
                                                            "video_frames")}
    return {**results[0], **total, "videos": videos, "wall_s": wall}


def scaling(video: str, kind: str, decoder_counts: list[int], video_counts: list[int] = (1,), mode: str = "decode",
            repeats: int = 1) -> list[dict]:
    """Decode throughput of `video` with each K of `decoder_counts` (one video), then with each V of
    `video_counts` videos at once (one decoder each): the device check's GPU rows. Best of `repeats`,
    the settings taken in turn within each repeat."""
    settings = [(1, k) for k in decoder_counts] + [(v, 1) for v in video_counts if v > 1]
    consume(video, kind, "decode")  # warm-up: file cache, decoder start-up
    runs: dict = {s: [] for s in settings}
    for _ in range(repeats):
        for videos, decoders in settings:
            runs[(videos, decoders)].append(consume_at_once(video, kind, mode, videos, decoders))
    rows = []
    for (videos, decoders), measured in runs.items():
        best = min(measured, key=lambda r: r["wall_s"])
        rows.append({"decoder": kind, "mode": mode, "videos_at_once": videos, "decoders_asked": decoders, **best,
                     "frames_per_s": best["video_frames"] / best["wall_s"], "x_realtime": best["video_s"] / best["wall_s"]})
    single = next((r["frames_per_s"] for r in rows if r["videos_at_once"] == 1 and r["decoders"] == 1), None)
    for row in rows:
        streams = row["videos_at_once"] * row["decoders"]
        row["vs_one_decoder"] = row["frames_per_s"] / single if single else None
        row["share_of_ideal"] = row["frames_per_s"] / (streams * single) if single else None
    return rows


def device_rows(video: str, decoder_counts: list[int] | None = None, video_counts: list[int] | None = None,
                modes: tuple[str, ...] = ("decode", "needed"), repeats: int = 1) -> dict:
    """The device check's GPU rows (benchmarks/device_check.py calls this in a child process):
    NVDEC's throughput on `video` with K = 1 .. the GPU's engine count decoders, then with 2 and
    `engines` videos at once, one decoder each, in `decode` and `needed` modes. Each row has its
    frames/s, its speed-up over one decoder (`vs_one_decoder`) and its share of K (or V) times one
    decoder's rate (`share_of_ideal`, the issue's target: >= 0.7 up to the engine count)."""
    from tsf.runtime.decode_nvdec import nvdec_engines, nvdec_support

    reason = nvdec_support()
    if reason is not None:
        return {"skipped": reason}
    engines = nvdec_engines() or 1
    decoder_counts = decoder_counts or list(range(1, engines + 1))
    video_counts = video_counts or sorted({2, engines})
    rows = [row for mode in modes for row in scaling(video, "nvdec", decoder_counts, video_counts, mode, repeats)]
    return {"engines": engines, "rows": rows}


def run(cache_dir: Path, resolutions: dict[str, float], repeats: int = 3, kinds: list[str] | None = None,
        decoder_counts: list[int] = (1,)) -> dict:
    """`resolutions`: name -> seconds of generated video. Best of `repeats` passes per cell; within
    each repeat every K of `decoder_counts` is measured in turn. With K > 1 the videos have a
    keyframe every 2 s, as broadcasts do (else libx264's every 10 s)."""
    available = decoder_kinds()
    kinds = kinds or list(available)
    rows, skipped = [], {}
    for kind in kinds:
        if available.get(kind):
            skipped[kind] = available[kind]
            continue
        for name, seconds in resolutions.items():
            video = str(common.test_video(cache_dir, name, seconds, gop_seconds=SPLIT_GOP_SECONDS
                                          if max(decoder_counts) > 1 else None))
            consume(video, kind, "decode")  # warm-up: file cache, decoder start-up
            for mode in MODES:
                runs: dict[int, list[dict]] = {k: [] for k in decoder_counts}
                for _ in range(repeats):
                    for k in decoder_counts:
                        runs[k].append(consume(video, kind, mode, decoders=k))
                for k, measured in runs.items():
                    best = min(measured, key=lambda r: r["wall_s"])
                    rows.append({"decoder": kind, "resolution": name, "mode": mode, "decoders_asked": k, **best,
                                 "frames_per_s": best["video_frames"] / best["wall_s"],
                                 "x_realtime": best["video_s"] / best["wall_s"]})
    return {"rows": rows, "skipped": skipped, "repeats": repeats}


def markdown(result: dict) -> str:
    columns = [("decoder", "decoder", ""), ("resolution", "video", ""), ("mode", "mode", ""),
               ("decoders", "decoders (K)", ""), ("frames_decoded", "frames decoded", ""),
               ("frames_converted", "frames to RGB", ""), ("frames_per_s", "frames/s", ".0f"),
               ("x_realtime", "× real time", ".1f")]
    text = common.markdown_table(result["rows"], columns)
    text += (f"\nBest of {result['repeats']} passes, the K values taken in turn within each. `decode`: decode only; "
             "`rgb-all`: every frame to RGB; `needed`: the runtime's producers (only the frames the windows need "
             "to RGB + preprocessing + batching). frames/s = the video's frames per wall second; frames decoded "
             "include what segments decode past their end.\n")
    for kind, why in result["skipped"].items():
        text += f"\n{kind}: not measured ({why}).\n"
    return text


def plot(result: dict, out_dir: Path) -> list[str]:
    plt = common.pyplot()
    if plt is None or not result["rows"]:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = list(dict.fromkeys((r["decoder"], r["mode"], r["decoders"]) for r in result["rows"]))  # measuring order
    names = list(dict.fromkeys(r["resolution"] for r in result["rows"]))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        values = [next((r["frames_per_s"] for r in result["rows"]
                        if (r["decoder"], r["mode"], r["decoders"]) == key and r["resolution"] == n), 0) for n in names]
        ax.bar([i + k * width for i in range(len(names))], values, width, label=f"{key[0]} {key[1]} K={key[2]}")
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("video frames / s")
    ax.set_yscale("log")
    ax.set_title("Decode only")
    ax.legend(fontsize=8)
    return [common.save_figure(fig, out_dir / "decode_only.png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_only", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--cache", type=Path, default=common.DEFAULT_CACHE)
    parser.add_argument("--seconds", type=float, nargs=3, default=(20, 8, 8), metavar=("S224", "S720", "S1080"),
                        help="seconds of generated video at 224p, 720p, 1080p")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoder", action="append", choices=["cpu", "nvdec"], help="default: every one")
    parser.add_argument("--decoders", type=int, nargs="+", default=[1], metavar="K",
                        help="decoders per video to measure, in turn (default: 1)")
    args = parser.parse_args(argv)
    prov = common.provenance()
    result = run(args.cache, dict(zip(("224p", "720p", "1080p"), args.seconds)), args.repeats, args.decoder,
                 args.decoders)
    result["plots"] = plot(result, args.out)
    common.save_report(args.out, "decode_only", "Decode only", prov, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
