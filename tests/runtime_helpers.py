"""Shared, cached test material for the runtime tests: small bundles and generated videos.

Built once per test process (functools.cache) in one temporary folder, because exporting a bundle
takes ~10 s and encoding a clip a few seconds; tests must treat them as read-only.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

import videos

_ROOT = Path(tempfile.mkdtemp(prefix="tsf-runtime-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

# name -> make_video keyword arguments. 8-s clips: 8 centre rows, 3 reference rows.
VIDEOS = {
    "h264_25fps.mkv": dict(seconds=8, fps=25),
    "h264_25fps.mp4": dict(seconds=8, fps=25),
    "h264_2997fps.mkv": dict(seconds=8, fps=Fraction(30000, 1001)),
    "h264_2997fps_audio.mp4": dict(seconds=8, fps=Fraction(30000, 1001), with_audio="first"),
    "vfr.mkv": dict(pts_seconds=videos.vfr_times(8), fps=25),
    "odd_455x255.mkv": dict(seconds=7, fps=25, size=(455, 255)),
    "portrait_256x456.mp4": dict(seconds=7, fps=25, size=(256, 456)),
    "short_side_224.mkv": dict(seconds=7, fps=25, size=(398, 224)),
    "h264_25fps.ts": dict(seconds=7, fps=25),  # MPEG-TS: the stream starts at 0.08 s, not 0
    "audio_outlasts_video.mkv": dict(seconds=7, fps=25, with_audio=True, audio_seconds=10),
    "long_20s.mkv": dict(seconds=20, fps=25, bframes=0),
    "long_20s.mp4": dict(seconds=20, fps=25, bframes=0),
    "short_5s.mkv": dict(seconds=5, fps=25),
}


@functools.cache
def video(name: str) -> Path:
    folder = _ROOT / "videos"
    folder.mkdir(exist_ok=True)
    return videos.make_video(folder / name, **VIDEOS[name])


SMALL_ARCH = {"depth": 2, "width": 128, "heads": 2, "frames": 4}


@functools.cache
def small_bundle(frames: int = 4) -> Path:
    """A random depth-2, width-128 bundle (fast on 2 CPU cores), built without Paddle."""
    from reference.pdparams import reference_state

    arch = dict(SMALL_ARCH, frames=frames)
    state = reference_state(np.random.default_rng(0), depth=arch["depth"], width=arch["width"], frames=frames)
    return write_bundle(_ROOT / f"bundle_{frames}f", state, heads=arch["heads"])


def write_bundle(directory: Path, state: dict, heads: int, class_names=None, random_init: bool = True) -> Path:
    """A model bundle of `state` (reference layout) as the runtime reads it: the ONNX written by
    tests/reference/onnx_timesformer.py, weights.safetensors and bundle.json (runtime/bundle.py's
    contract). No Paddle: the runtime's tests run where the exporter cannot."""
    from safetensors.numpy import save_file

    from reference.onnx_timesformer import timesformer_onnx
    from tsf.runtime import bundle as contract
    from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES

    proj = state["backbone.patch_embed.proj.weight"]
    frames, classes = state["backbone.time_embed"].shape[1], state["head.fc.bias"].shape[0]
    image_size = int(np.sqrt(state["backbone.pos_embed"].shape[1] - 1)) * proj.shape[2]
    if class_names is None:
        class_names = (list(SOCCERNET_V2_CLASS_NAMES) if classes == len(SOCCERNET_V2_CLASS_NAMES)
                       else [f"class_{i}" for i in range(classes)])
    directory.mkdir(parents=True)
    onnx_path = directory / contract.ONNX_FILE
    onnx_path.write_bytes(timesformer_onnx(state, frames, heads, image_size).SerializeToString())
    weights = directory / contract.WEIGHTS_FILE
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, str(weights))
    onnx_sha256 = contract.sha256_file(onnx_path)
    meta = {
        "format": contract.BUNDLE_FORMAT, "format_version": contract.FORMAT_VERSION,
        "architecture": {"frames": frames, "depth": len({k.split(".")[2] for k in state if ".blocks." in k}),
                         "width": proj.shape[0], "heads": heads, "classes": classes, "image_size": image_size,
                         "patch_size": proj.shape[2], "mlp_ratio": state["backbone.blocks.0.mlp.fc1.weight"].shape[1]
                         // proj.shape[0]},
        "preprocessing": contract.reference_preprocessing(image_size),
        "window": contract.reference_window(frames),
        "class_names": list(class_names),
        "weights": {"file": None, "sha256": None, "random_init": random_init, "seed": 0},
        "onnx": {"file": onnx_path.name, "sha256": onnx_sha256, "opset": contract.ONNX_OPSET,
                 "size_bytes": onnx_path.stat().st_size},
        "safetensors": {"file": weights.name, "sha256": contract.sha256_file(weights),
                        "size_bytes": weights.stat().st_size, "tensors": len(state)},
        "bundle_id": contract.bundle_id(onnx_sha256, class_names),
        "engines": [],
    }
    (directory / contract.BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def decode_all(path: Path) -> tuple[list[Fraction], list[np.ndarray], av.container.InputContainer]:
    """Every frame of the first video stream, decoded straight with PyAV (independent of tsf)."""
    times, images = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate)
        for frame in container.decode(stream):
            times.append(Fraction(frame.pts) * Fraction(stream.time_base))
            images.append(frame.to_ndarray(format="rgb24"))
    return times, images, rate


def independent_features(bundle_dir, rows_of_images, preprocess=None) -> np.ndarray:
    """Features by the independent path: float64 preprocessing of the given frames (`preprocess`,
    default the reference's), onnxruntime directly."""
    import onnxruntime

    from reference.numpy_preprocess import reference_preprocess

    preprocess = preprocess or reference_preprocess
    session = onnxruntime.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for images in rows_of_images:
        clip = np.stack([preprocess(img) for img in images], axis=1)[None]  # 1,3,T,224,224 float64
        out.append(session.run(["features"], {"video": clip.astype(np.float32)})[0][0])
    return np.array(out)


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def extract(video_path, bundle, **settings):
    """One video's `Result` through the runtime's `Extractor` (no files written)."""
    from tsf.runtime.extractor import ExtractSettings, Extractor

    return Extractor(bundle, ExtractSettings(**settings)).extract(video_path)


def record_selection(monkeypatch) -> list:
    """(target time, frame number) for every target the window batcher settles, in order: the
    batcher's FrameSelector is swapped for one that records what it returns."""
    from tsf.runtime import batch
    from tsf.runtime.sample import FrameSelector

    picks: list = []

    class RecordingSelector(FrameSelector):
        def feed(self, frame):
            return self._record(super().feed(frame))

        def finish(self, until=None):
            return self._record(super().finish(until))

        def _record(self, settled):
            picks.extend((self.targets[j], frame.number) for j, frame in settled)
            return settled

    monkeypatch.setattr(batch, "FrameSelector", RecordingSelector)
    return picks


def run_cli(capsys, args, main=None) -> tuple[int, str]:
    """(exit code, stderr) of a command's `main(args)` run in this process (tsf-extract's unless
    another is given); capsys captures its output."""
    if main is None:
        from tsf.runtime.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err
