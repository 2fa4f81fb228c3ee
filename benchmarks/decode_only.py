"""Decode-only speed: frames/s of the runtime's decoders (PyAV on CPU, NVDEC on GPU) at 224p/720p/1080p.

Three ways to consume the same video, through the runtime's own stages:
- `decode`:   every frame decoded, none converted (the codec's floor);
- `rgb-all`:  every frame decoded and converted to RGB (what the reference did before anything else);
- `needed`:   the runtime's producer: every frame decoded, only the frames the windows need
              (`--align center`, 16 per 5-s window, shared by overlapping windows) converted to RGB,
              preprocessed once and assembled into window batches (`tsf.runtime.batch`).
frames/s counts decoded video frames per wall second in all three, so they compare directly;
× real time is video seconds per wall second. Test videos are generated with PyAV/libx264.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from . import common

MODES = ("decode", "rgb-all", "needed")


def decoder_kinds() -> dict[str, str | None]:
    """Decoder kind -> None when usable here, else why not."""
    from tsf.runtime.decode_nvdec import nvdec_support

    return {"cpu": None, "nvdec": nvdec_support()}


def _synchronize(kind: str) -> None:
    if kind == "nvdec":
        import cupy

        cupy.cuda.Device().synchronize()


def consume(video: str, kind: str, mode: str, batch_size: int = 8) -> dict:
    """One pass over `video`; returns frames decoded, frames converted and wall seconds."""
    from tsf.runtime.batch import BatchStats, window_batches
    from tsf.runtime.bundle import Preprocessing, Window
    from tsf.runtime.decode import PyAVDecoder
    from tsf.runtime.probe import probe_video
    from tsf.runtime.sample import plan_windows

    info = probe_video(video)
    started = time.perf_counter()
    if kind == "nvdec":
        from tsf.runtime.decode_nvdec import NvdecDecoder

        decoder = NvdecDecoder(info)
    else:
        decoder = PyAVDecoder(info)
    decoded = converted = 0
    # NVDEC's frames are read on the decoder's stream, as the pipeline's producer reads them.
    on_stream = decoder.gpu_stream.work() if decoder.gpu_stream else contextlib.nullcontext()
    try:
        with on_stream:
            if mode == "needed":
                stats = BatchStats()
                for _ in window_batches(decoder.frames(), plan_windows(info, Window.reference()), batch_size,
                                          Preprocessing.reference(), stats=stats):
                    pass
                decoded, converted = stats.frames_decoded, stats.frames_preprocessed
            else:
                for frame in decoder.frames():
                    decoded += 1
                    if mode == "rgb-all":
                        frame.to_rgb()
                        converted += 1
        _synchronize(kind)
    finally:
        decoder.close()
    return {"frames_decoded": decoded, "frames_converted": converted, "wall_s": time.perf_counter() - started,
            "video_s": float(info.duration), "width": info.width, "height": info.height}


def run(cache_dir: Path, resolutions: dict[str, float], repeats: int = 3, kinds: list[str] | None = None) -> dict:
    """`resolutions`: name -> seconds of generated video. Best of `repeats` passes per cell."""
    available = decoder_kinds()
    kinds = kinds or list(available)
    rows, skipped = [], {}
    for kind in kinds:
        if available.get(kind):
            skipped[kind] = available[kind]
            continue
        for name, seconds in resolutions.items():
            video = str(common.test_video(cache_dir, name, seconds))
            consume(video, kind, "decode")  # warm-up: file cache, decoder start-up
            for mode in MODES:
                best = min((consume(video, kind, mode) for _ in range(repeats)), key=lambda r: r["wall_s"])
                rows.append({"decoder": kind, "resolution": name, "mode": mode, **best,
                             "frames_per_s": best["frames_decoded"] / best["wall_s"],
                             "x_realtime": best["video_s"] / best["wall_s"]})
    return {"rows": rows, "skipped": skipped, "repeats": repeats}


def markdown(result: dict) -> str:
    columns = [("decoder", "decoder", ""), ("resolution", "video", ""), ("mode", "mode", ""),
               ("frames_decoded", "frames decoded", ""), ("frames_converted", "frames to RGB", ""),
               ("frames_per_s", "frames/s", ".0f"), ("x_realtime", "× real time", ".1f")]
    text = common.markdown_table(result["rows"], columns)
    text += (f"\nBest of {result['repeats']} passes. `decode`: decode only; `rgb-all`: every frame to RGB; "
             "`needed`: the runtime's producer (only the frames the windows need to RGB + preprocessing + "
             "batching). frames/s = decoded frames per wall second.\n")
    for kind, why in result["skipped"].items():
        text += f"\n{kind}: not measured ({why}).\n"
    return text


def plot(result: dict, out_dir: Path) -> list[str]:
    plt = common.pyplot()
    if plt is None or not result["rows"]:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = list(dict.fromkeys((r["decoder"], r["mode"]) for r in result["rows"]))  # measuring order: decode, rgb-all, needed
    names = list(dict.fromkeys(r["resolution"] for r in result["rows"]))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        values = [next((r["frames_per_s"] for r in result["rows"]
                        if (r["decoder"], r["mode"]) == key and r["resolution"] == n), 0) for n in names]
        ax.bar([i + k * width for i in range(len(names))], values, width, label=f"{key[0]} {key[1]}")
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("decoded frames / s")
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
    args = parser.parse_args(argv)
    prov = common.provenance()
    result = run(args.cache, dict(zip(("224p", "720p", "1080p"), args.seconds)), args.repeats, args.decoder)
    result["plots"] = plot(result, args.out)
    common.save_report(args.out, "decode_only", "Decode only", prov, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
