"""`python -m tsf.demo`: the whole life of a model on a generated clip, with the real commands.

1. draws a short synthetic "broadcast" clip (a pitch, lines, a ball and players moving) with PyAV;
2. `tsf-export --random-init` makes a bundle of the reference architecture with random weights
   (the published weights are a download we may not redistribute; pass yours to `tsf-export`);
3. `tsf-extract` turns the clip into one feature per second and writes features.npy + metadata.

Then it prints the commands that do the same to the user's own video. The features of random
weights carry no meaning: the demo shows the pipeline, not the model. `--small` (a 2-block model)
works in its own folder, so it never replaces the full demo's bundle and features.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tsf.runtime.pitch_clip import draw_pitch_clip
from tsf.runtime.progress import format_speed

SMALL_ARCH = "depth=2,width=128,heads=2,frames=4"
HALF_SECONDS = 45 * 60

# What to expect on the 2-core development machine (benchmarks/RESULTS.md, "make demo"). No GPU
# figure exists yet; the demo says so rather than guess.
EXPECTED = {
    False: ("the reference-sized model (12 blocks x 768, 16 frames). On a 2-core CPU this takes "
            "about 3 minutes when the cores are free and about 7 when they are shared, mostly exporting; "
            "extraction there runs at about x1 real time with native BF16 (a 45-minute half: about 50 "
            "minutes) and about x0.5 without (about 1.5 hours)"),
    True: "a 2-block, 4-frame test model. On a 2-core CPU this takes about 10 seconds",
}


def default_workdir(small: bool) -> Path:
    """demo-out for the reference-sized model, demo-out-small for --small: neither replaces the other."""
    return Path("demo-out-small" if small else "demo-out")


def shown(path: Path) -> str:
    """A path as the user would type it from here: relative when it lies below the current folder."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def run(command: list[str]) -> None:
    print("$ " + shlex.join(command), flush=True)
    status = subprocess.run(command, check=False).returncode
    if status != 0:
        print(f"demo: `{Path(command[0]).name}` failed (exit {status}); its error is above", file=sys.stderr)
        sys.exit(status)


def next_steps(tools: Path, bundle: Path, features: Path, speed: float | None) -> str:
    """The commands that take a user from this demo to their own video, ready to copy."""
    extract, export, spot = (shlex.quote(shown(tools / name)) for name in ("tsf-extract", "tsf-export", "tsf-spot"))
    half = f"{_about(HALF_SECONDS / speed)} here" if speed else "hours on a CPU"
    lines = [
        "",
        (f"Next: your own video. The tools are in {shown(tools)}/ "
         f"(`source {shlex.quote(shown(tools / 'activate'))}` puts them on your PATH)."),
        "  # the demo's model on your video (random weights: this tries the pipeline, not real features)",
        f"  {extract} PATH/TO/YOUR_VIDEO.mkv -o my_features.npy --model {shlex.quote(shown(bundle))}",
        f"  # a 45-minute half with this model takes {half}; cut a minute to try it first, e.g.",
        "  #   ffmpeg -ss 600 -i YOUR_VIDEO.mkv -t 60 -c copy minute.mkv",
        "  # real features: export your weights once to the default bundle, then no --model is needed",
        f"  {export} weights.pdparams",
        f"  {extract} PATH/TO/YOUR_VIDEO.mkv -o my_features.npy",
        "  # events from the heads (the demo's random bundle carries SoccerNet's class names)",
        f"  {spot} --half1 {shlex.quote(shown(features.with_suffix('.heads.npz')))}",
    ]
    return "\n".join(lines)


def _about(seconds: float) -> str:
    return f"about {seconds / 3600:.1f} hours" if seconds >= 3600 else f"about {max(1, round(seconds / 60))} minutes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsf.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path,
                        help="where the clip, bundle and features go [default: demo-out, or demo-out-small with --small]")
    parser.add_argument("--seconds", type=int, default=6, help="length of the generated clip")
    parser.add_argument(
        "--small", action="store_true",
        help="a 2-block, 4-frame model instead of the reference architecture (seconds, not minutes, on a laptop CPU)",
    )
    args = parser.parse_args(argv)
    work = args.workdir if args.workdir is not None else default_workdir(args.small)
    work.mkdir(parents=True, exist_ok=True)
    tools = Path(sys.executable).parent
    clip, bundle, features = work / "demo.mkv", work / "bundle", work / "features.npy"

    print(f"tsf demo in {shown(work)}/, on the CPU, with {EXPECTED[args.small]}.\n"
          "(No GPU has run tsf yet, so there is no GPU figure: benchmarks/RESULTS.md.)", flush=True)
    started = time.perf_counter()
    print(f"\n[1/3] drawing a {args.seconds}-s 456x256 clip at 25 fps -> {shown(clip)}", flush=True)
    draw_pitch_clip(clip, args.seconds)

    print("\n[2/3] exporting a randomly initialised model bundle: Paddle -> ONNX, then both run on 4 clips and "
          "compared (the longest step)", flush=True)
    export = [str(tools / "tsf-export"), "--random-init", "-o", str(bundle), "--overwrite", "--no-engine"]
    if args.small:
        export += ["--arch", SMALL_ARCH]
    run(export)

    print(f"\n[3/3] extracting one feature per second of the {args.seconds}-s clip", flush=True)
    run([str(tools / "tsf-extract"), str(clip), "-o", str(features), "--model", str(bundle), "--heads", "--overwrite"])

    array = np.load(features)
    meta = json.loads(features.with_suffix(".json").read_text())
    speed = meta["timings"]["realtime_factor"]
    print(f"\nfeatures: {shown(features)} {array.dtype} {array.shape} (one row per second, align={meta['alignment']})")
    print(f"metadata: {shown(features.with_suffix('.json'))}; heads: {shown(features.with_suffix('.heads.npz'))}")
    print(f"first row, first 6 values: {np.array2string(array[0, :6], precision=4)}")
    print(f"extraction ran at {format_speed(speed)} on this machine; the demo took {time.perf_counter() - started:.0f} s")
    print(next_steps(tools, bundle, features, speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
