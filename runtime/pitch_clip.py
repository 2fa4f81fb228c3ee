"""A generated "broadcast" clip: green stripes, pitch lines, a moving ball and players, H.264 by PyAV.

One drawing serves the demo (`python -m tsf.demo`) and the reduced-precision fidelity gate
(`backends/precision.py`): real decoded frames of a pitch-like picture, so the gate's rows go
through the same decode and preprocessing as a match, without shipping a video file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def draw_pitch_clip(path: Path, seconds: int, fps: int = 25, width: int = 456, height: int = 256,
                    crf: int = 23) -> None:
    """A cheap stand-in for a 456x256 broadcast half: green stripes, lines, moving ball and players.
    `crf` as for `write_h264_mkv` (0: lossless, the same pixels every time)."""
    yy, xx = np.mgrid[0:height, 0:width]
    pitch = np.zeros((height, width, 3), np.uint8)
    pitch[..., 1] = np.where((xx // 38) % 2 == 0, 140, 120)
    pitch[..., 0] = 30
    pitch[..., 2] = 40
    lines = (abs(xx - width // 2) < 2) | (abs(np.hypot(xx - width // 2, yy - height // 2) - 40) < 1.5)
    lines |= (yy < 6) | (yy > height - 7)
    pitch[lines] = 235
    rng = np.random.default_rng(7)
    players = rng.uniform([20, 20], [width - 20, height - 20], size=(10, 2))
    velocities = rng.normal(0, 1.5, size=(10, 2))

    def frames():
        for i in range(seconds * fps):
            t = i / fps
            frame = pitch.copy()
            ball = (width / 2 + 150 * np.sin(0.7 * t), height / 2 + 70 * np.sin(1.3 * t))
            frame[np.hypot(xx - ball[0], yy - ball[1]) < 4] = (250, 250, 250)
            players[:] = np.clip(players + velocities, [10, 10], [width - 10, height - 10])
            for k, (px, py) in enumerate(players):
                colour = (200, 30, 30) if k < 5 else (30, 60, 200)
                frame[(abs(xx - px) < 3) & (abs(yy - py) < 7)] = colour
            yield frame

    write_h264_mkv(path, frames(), fps, width, height, crf)


def write_h264_mkv(path: Path, frames: Iterable[np.ndarray], fps: int, width: int, height: int, crf: int = 23,
                   gop: int | None = None) -> None:
    """RGB uint8 frames -> an H.264 Matroska file at `fps`, written under a temporary name, then renamed.

    `crf` 0 is lossless: the decoded pixels are then the same on every run. Lossy libx264 output
    is not reproducible here (the same frames encoded twice decoded up to 85 levels apart, with
    one encoder thread as with several). `gop`: at most this many frames between keyframes
    (libx264's default is 250)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with av.open(str(tmp), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf), **({"g": str(gop)} if gop else {})}
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            video_frame.time_base = Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
