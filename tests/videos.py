"""Test videos generated with PyAV, so the repository ships no binaries.

Every frame is content-rich (gradients and a square that move with the frame number, so resizing
and cropping have something to get wrong) and carries its own frame number as a barcode of
16x16-pixel black/white blocks in the top-left corner, which survives H.264 at the quality used
here. `read_frame_number(rgb)` reads it back, so a test can tell exactly which frame was picked.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BARCODE_BITS = 14  # frame numbers up to 16383: 10 minutes at 25 fps
BLOCK = 16


def frame_image(number: int, width: int, height: int) -> np.ndarray:
    """HxWx3 uint8: moving gradients, a moving square and the frame number as a barcode."""
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = ((x * 255) // max(width - 1, 1) + 7 * number) % 256
    img[..., 1] = ((y * 255) // max(height - 1, 1) + 3 * number) % 256
    img[..., 2] = ((x + y + 11 * number) // 2) % 256
    side = min(width, height) // 4
    sx = (5 * number) % max(width - side, 1)
    sy = BLOCK * 2 + (3 * number) % max(height - side - BLOCK * 2, 1)
    img[sy:sy + side, sx:sx + side] = (255 - 9 * number % 256, 40, 200)
    for bit in range(BARCODE_BITS):
        on = (number >> bit) & 1
        img[0:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if on else 0
    return img


def read_frame_number(rgb: np.ndarray) -> int:
    """The frame number drawn by `frame_image`, read from a decoded (full-size) frame."""
    number = 0
    for bit in range(BARCODE_BITS):
        block = rgb[2:BLOCK - 2, bit * BLOCK + 2:(bit + 1) * BLOCK - 2]
        if block.mean() > 127:
            number |= 1 << bit
    return number


def make_video(
    path: str | os.PathLike,
    *,
    frames: int | None = None,
    seconds: float | None = None,
    fps: Fraction | int = 25,
    size: tuple[int, int] = (456, 256),
    codec: str = "libx264",
    bframes: int = 2,
    pts_seconds: list[Fraction] | None = None,
    with_audio: bool | str = False,
    audio_seconds: float | None = None,
    pix_fmt: str | None = None,
    rotation: int = 0,
    colorspace: int | None = None,
    color_range: int | None = None,
    sample_aspect_ratio: Fraction | None = None,
    interlaced: bool = False,
    cover: str | None = None,
    gop: int = 50,
    open_gop: bool = False,
) -> Path:
    """Encode a test video; the container follows the suffix (.mkv, .mp4, ...).

    `size` is (width, height). `pts_seconds` gives every frame's presentation time for a
    variable-frame-rate file (then `frames` is its length and `fps` only the nominal rate).
    `rotation`: a display matrix turning the picture counter-clockwise (degrees), as phones write.
    `colorspace` / `color_range` (FFmpeg's AVColorSpace / AVColorRange codes) tag the stream and
    convert the pictures with that matrix and range; left out, the stream is untagged (BT.601
    limited range, as FFmpeg converts it). `sample_aspect_ratio`: the pixels' shape (PAL 16:9:
    64/45). `interlaced`: libx264 codes the frames as top-field-first interlaced pictures.
    `cover`: "png" or "mjpeg": a one-frame picture stream ahead of the video, not flagged as
    attached picture (a cover image muxed as a track).
    `gop`: frames from one keyframe to the next (libx264, mpeg4). `open_gop`: libx264 makes its
    keyframes recovery points instead of IDRs, so the B-frames coded after a keyframe but shown
    before it reference the previous GOP (x264 places them when the keyframe does not fall on the
    end of a run of B-frames: `bframes=3` with the default `gop` does).
    """
    path = Path(path)
    fps = Fraction(fps).limit_denominator(1001)
    if pts_seconds is not None:
        frames = len(pts_seconds)
    elif frames is None:
        frames = round(Fraction(seconds).limit_denominator(1000) * fps)
    width, height = size
    if pix_fmt is None:
        # 4:2:0 needs even sizes; odd sizes go to 4:4:4 (libx264 encodes it, FFmpeg decodes it).
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    with av.open(str(path), "w") as container:
        audio = None
        if with_audio == "first":  # audio is stream 0, video stream 1: readers must pick the video
            audio = container.add_stream("aac", rate=48000)
        still = _add_cover(container, cover, width // 2, height // 2) if cover is not None else None
        stream = container.add_stream(codec, rate=fps)
        if pts_seconds is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        # One encoder thread: x264's output (and so the byte offsets the truncation tests cut at)
        # depends on its thread count, which otherwise follows the machine's cores.
        stream.codec_context.thread_count = 1
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast" if bframes == 0 else "veryfast",
                              "bf": str(bframes), "g": str(gop)}
            x264_params = (["interlaced=1", "tff=1"] if interlaced else []) + (["open-gop=1"] if open_gop else [])
            if interlaced:
                stream.options |= {"flags": "+ildct+ilme"}
            if x264_params:
                stream.options["x264-params"] = ":".join(x264_params)
        elif codec.startswith("libvpx"):  # VP8/VP9 for WebM, at their fastest settings
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        else:
            stream.options = {"qscale": "2", "g": str(gop)} if codec == "mpeg4" else {}
        tagged = colorspace is not None or color_range is not None
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if color_range is not None:
            stream.codec_context.color_range = color_range
        if with_audio and audio is None:
            audio = container.add_stream("aac", rate=48000)
        if still is not None:
            _write_cover(container, still)
        for number in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(number, width, height), format="rgb24")
            if tagged:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace or 2, dst_color_range=color_range or 1)
            if pts_seconds is not None:
                frame.pts = int(pts_seconds[number] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            length = Fraction(audio_seconds).limit_denominator(1000) if audio_seconds else Fraction(frames) / fps
            _add_silence(container, audio, length)
    return path


def _add_cover(container, codec: str, width: int, height: int):
    still = container.add_stream(codec, rate=25)
    still.width, still.height = width, height
    still.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
    return still


def _write_cover(container, still) -> None:
    """The cover's one picture (the test pattern upside down), before any video frame."""
    picture = av.VideoFrame.from_ndarray(frame_image(0, still.width, still.height)[::-1].copy(), format="rgb24")
    for packet in still.encode(picture.reformat(format=still.pix_fmt)):
        container.mux(packet)
    for packet in still.encode():
        container.mux(packet)


def _add_silence(container, audio, seconds: Fraction) -> None:
    samples_left = int(seconds * 48000)
    pts = 0
    while samples_left > 0:
        n = min(1024, samples_left)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, n), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, pts
        pts += n
        samples_left -= n
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


def make_audio_only(path: str | os.PathLike, seconds: float = 2.0) -> Path:
    """A container (e.g. .mka/.mkv) holding one audio stream and no video."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=48000)
        _add_silence(container, audio, Fraction(seconds).limit_denominator(1000))
    return path


def make_truncated(source: str | os.PathLike, path: str | os.PathLike, keep: float = 0.5) -> Path:
    """The first `keep` share of a file's bytes: what an interrupted download or copy leaves."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_corrupt_middle(source: str | os.PathLike, path: str | os.PathLike, at: float = 0.5,
                        length: int = 65536, seed: int = 0) -> Path:
    """The file with `length` random bytes written over it at `at` of its size."""
    data = bytearray(Path(source).read_bytes())
    start = int(len(data) * at)
    rng = np.random.default_rng(seed)
    data[start:start + length] = rng.integers(0, 256, size=min(length, len(data) - start), dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def vfr_times(seconds: float, seed: int = 0) -> list[Fraction]:
    """Presentation times of a variable-frame-rate clip: stretches at 25, 12.5 and 50 fps."""
    rng = np.random.default_rng(seed)
    times, t = [], Fraction(0)
    end = Fraction(seconds).limit_denominator(1000)
    while t < end:
        times.append(t)
        t += Fraction(int(rng.choice([20, 40, 80])), 1000)
    return times


def remux(source: str | os.PathLike, path: str | os.PathLike, offset: Fraction = Fraction(0),
          stream_metadata: dict | None = None, only: set[int] | None = None) -> Path:
    """`source`'s packets, every stream (or the streams whose index is in `only`), copied into the
    container `path`'s suffix names, with every timestamp shifted by `offset` seconds (what
    `ffmpeg -c copy -output_ts_offset` does). `stream_metadata` is written as the video stream's tags."""
    path = Path(path)
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if only is None or s.index in only}
        for s in inp.streams.video:
            if s.index in streams:
                streams[s.index].metadata.update(stream_metadata or {})
        for packet in inp.demux(*(s for s in inp.streams if s.index in streams)):
            if packet.dts is None and packet.pts is None:
                continue  # the flush packets at the end
            shift = int(offset / packet.stream.time_base)
            if packet.pts is not None:
                packet.pts += shift
            if packet.dts is not None:
                packet.dts += shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return path
