"""Which frames a training sample shows: an event-centred 5-s window inside a 10-s clip.

The window is centred on the event, shifted by U(-jitter, +jitter) s in training (0 in
validation), then moved (never shrunk) to lie inside the clip. Its 16 frame times are an
inclusive linspace over the window, and the event-time target is where the event sits in the
window as a fraction of it: (event - window start) / window length, in [0, 1].

Frames are picked by timestamp with the runtime's rule (design.md, stage 3): the frame shown at
time t is the last frame with pts_time <= t + a quarter frame; times before the first frame take
the first frame, after the last frame the last. Only the picked frames are converted to RGB, and
decoding starts at the keyframe before the window and stops at its last frame.

Dependencies: PyAV (decoding), NumPy.
"""

from __future__ import annotations

import numpy as np

from .errors import TrainingError


def window_start(event_time: float, clip_seconds: float, window_seconds: float, shift: float = 0.0) -> float:
    """Start of the window centred on `event_time + shift`, moved inside [0, clip_seconds]."""
    start = event_time - window_seconds / 2 + shift
    return float(min(max(start, 0.0), max(clip_seconds - window_seconds, 0.0)))


def window_frame_times(start: float, window_seconds: float, frames: int) -> np.ndarray:
    """`frames` times from start to start + window, both ends included."""
    return np.linspace(start, start + window_seconds, frames)


def event_time_target(event_time: float, start: float, window_seconds: float) -> float:
    return (event_time - start) / window_seconds


def draw_shift(rng: np.random.Generator, jitter_seconds: float) -> float:
    return float(rng.uniform(-jitter_seconds, jitter_seconds)) if jitter_seconds > 0 else 0.0


def _frames_from(container, stream, seek_seconds: float):
    origin = stream.start_time or 0
    if seek_seconds > 0:
        container.seek(origin + int(seek_seconds / stream.time_base), stream=stream, backward=True)
    for frame in container.decode(stream):
        if frame.pts is not None:
            yield float((frame.pts - origin) * stream.time_base), frame


def _pick(frames, times: np.ndarray, tolerance: float):
    """Assign each target time its frame; returns (RGB arrays, time of the first decoded frame).

    A frame's target times are known only once the next frame arrives, so the previous frame is
    kept undecoded to RGB until then (and converted once however many targets it serves).
    """
    picked = [None] * len(times)
    k = 0
    held, held_rgb = None, None  # the latest frame, and its RGB once converted
    first_time = None

    def rgb_of_held():
        nonlocal held_rgb
        if held_rgb is None:
            held_rgb = held.to_ndarray(format="rgb24")
        return held_rgb

    for t, frame in frames:
        if first_time is None:
            first_time = t
        if held is None:
            held = frame  # times before the first frame show the first frame
        while k < len(times) and t > times[k] + tolerance:
            picked[k] = rgb_of_held()
            k += 1
        if k == len(times):
            break
        held, held_rgb = frame, None
    while held is not None and k < len(times):  # past the last frame: the last frame
        picked[k] = rgb_of_held()
        k += 1
    return picked, first_time


def read_frames_at(path: str, times: np.ndarray) -> np.ndarray:
    """RGB uint8 [T, H, W, 3] of the frames shown at `times` (seconds from the clip's start)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # DataLoader workers already run in parallel
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            tolerance = 0.25 / fps
            picked, first_time = _pick(_frames_from(container, stream, float(times[0])), times, tolerance)
            if first_time is not None and first_time > times[0] + tolerance and times[0] > 0:
                # The seek landed after the window start (a file without a keyframe index): decode
                # from the beginning instead.
                container.seek(0)
                picked, _ = _pick(_frames_from(container, stream, 0.0), times, tolerance)
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise TrainingError(f"cannot read clip {path}: {exc}".splitlines()[0]) from None
    if any(p is None for p in picked):
        raise TrainingError(f"clip {path} has no frames")
    return np.stack(picked)
