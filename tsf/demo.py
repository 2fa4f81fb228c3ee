"""`python -m tsf.demo`: the whole life of a model on a generated clip, with the real commands.

1. draws a short synthetic "broadcast" clip (a pitch, lines, a ball and players moving) with PyAV;
2. `tsf-export --random-init` makes a bundle of the reference architecture with random weights
   (the published weights are a download we may not redistribute; pass yours to `tsf-export`);
3. `tsf-extract` turns the clip into one feature per second and writes features.npy + metadata.

The features of random weights carry no meaning: the demo shows the pipeline, not the model.
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


def run(command: list[str]) -> None:
    print("$ " + shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsf.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo-out", help="where the clip, bundle and features go")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip")
    parser.add_argument(
        "--small", action="store_true",
        help="a 2-block, 4-frame model instead of the reference architecture (seconds, not minutes, on a laptop CPU)",
    )
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    clip, bundle, features = work / "demo.mkv", work / "bundle", work / "features.npy"

    started = time.perf_counter()
    print(f"[1/3] drawing a {args.seconds}-s 456x256 clip at 25 fps -> {clip}", flush=True)
    draw_pitch_clip(clip, args.seconds)

    print("[2/3] exporting a randomly initialised model bundle (ONNX + parity check vs Paddle)", flush=True)
    export = [str(bin_dir / "tsf-export"), "--random-init", "-o", str(bundle), "--overwrite", "--no-engine"]
    if args.small:
        export += ["--arch", "depth=2,width=128,heads=2,frames=4"]
    run(export)

    print("[3/3] extracting one feature per second", flush=True)
    run([str(bin_dir / "tsf-extract"), str(clip), "-o", str(features), "--model", str(bundle),
         "--heads", "--overwrite"])

    array = np.load(features)
    meta = json.loads(features.with_suffix(".json").read_text())
    print(f"\nfeatures: {features} {array.dtype} {array.shape} (one row per second, align={meta.get('alignment')})")
    print(f"metadata: {features.with_suffix('.json')}")
    print(f"first row, first 6 values: {np.array2string(array[0, :6], precision=4)}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
