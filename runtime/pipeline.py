"""One video -> features: probe, plan, decode + preprocess + batch (producer thread), infer, metadata.

Decoding and preprocessing run in a producer thread feeding a small bounded queue, so they overlap
inference (FFmpeg, NumPy and ONNX Runtime all release the GIL while they work). The queue bound
keeps memory flat: the producer blocks once two batches are waiting.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .batch import BatchStats, window_batches
from .decode import open_decoder
from .errors import InputError
from .infer import Backend, select_backend
from .preprocess import array_module
from .probe import VideoInfo, probe_video
from .sample import WindowPlan, plan_windows

QUEUE_BATCHES = 2
_DONE = object()


@dataclass
class Result:
    info: VideoInfo
    plan: WindowPlan
    features: np.ndarray  # float32 [N, width]
    logits: np.ndarray  # float32 [N, classes]
    event_times: np.ndarray  # float32 [N, classes]
    stats: BatchStats
    backend: str
    device: str
    precision: str
    decoder: str
    batch_size: int
    timings: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.features)


def extract(video_path, bundle, *, align: str = "center", batch_size: int | None = None,
            backend: Backend | str = "auto", device: str = "auto", decoder: str = "auto",
            allow_partial: bool = False, progress=None, record_selection: bool = False, gpu_id: int = 0) -> Result:
    """Features of one video. `backend` is a ready Backend (reused across videos) or a name for select_backend.

    `progress(rows_done_now, total_rows)` is called after every batch (may be None).
    """
    started = time.monotonic()
    info = probe_video(video_path)
    frames_per_window = int(bundle.architecture["frames"])
    plan = plan_windows(info, align, frames=frames_per_window)
    if isinstance(backend, str):
        backend = select_backend(bundle, backend, device, gpu_id=gpu_id)
    batch_size = int(batch_size or backend.default_batch_size)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    # With a CPU backend, "auto" means the CPU decoder: NVDEC frames would only travel back to the host.
    wants_gpu = getattr(backend, "wants_gpu_input", backend.device == "cuda")
    video_decoder = open_decoder(info, "cpu" if not wants_gpu and decoder == "auto" else decoder, gpu_id=gpu_id)
    opened = time.monotonic()

    width = int(bundle.architecture["width"])
    classes = int(bundle.architecture["classes"])
    features = np.zeros((plan.rows, width), dtype=np.float32)
    logits = np.zeros((plan.rows, classes), dtype=np.float32)
    event_times = np.zeros((plan.rows, classes), dtype=np.float32)
    stats = BatchStats()
    batches: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in window_batches(video_decoder.frames(), plan, batch_size, allow_partial=allow_partial,
                                        stats=stats, record_selection=record_selection,
                                        image_size=int(bundle.architecture["image_size"])):
                if not isinstance(batch.video, np.ndarray):
                    # A CuPy batch: its kernels ran on this thread's stream; finish them before
                    # another thread (with another current stream) reads the batch.
                    array_module(batch.video).cuda.get_current_stream().synchronize()
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it in the caller's thread
            put(e)

    producer = threading.Thread(target=produce, name="tsf-decode", daemon=True)
    producer.start()
    inference_seconds = waiting_seconds = 0.0
    rows_done = 0
    try:
        while True:
            wait_start = time.monotonic()
            item = batches.get()
            waiting_seconds += time.monotonic() - wait_start
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            run_start = time.monotonic()
            out = backend.run(item.video)
            inference_seconds += time.monotonic() - run_start
            features[item.rows] = out["features"]
            logits[item.rows] = out["logits"]
            event_times[item.rows] = out["event_times"]
            rows_done += len(item.rows)
            if progress is not None:
                progress(len(item.rows), plan.rows)
    finally:
        stop.set()
        while producer.is_alive():
            try:  # unblock a producer waiting on a full queue
                batches.get_nowait()
            except queue.Empty:
                pass
            producer.join(timeout=0.05)
        video_decoder.close()

    if stats.partial is not None:
        if rows_done == 0:
            raise stats.partial  # nothing to keep: not even one window before the break
        features, logits, event_times = features[:rows_done], logits[:rows_done], event_times[:rows_done]
    finished = time.monotonic()
    wall = finished - started
    timings = {
        "total_seconds": round(wall, 3),
        "setup_seconds": round(opened - started, 3),
        "inference_seconds": round(inference_seconds, 3),
        "waiting_for_frames_seconds": round(waiting_seconds, 3),
        "realtime_factor": round(float(info.duration) / wall, 2) if wall > 0 else None,
        "windows_per_second": round(rows_done / wall, 2) if wall > 0 else None,
    }
    return Result(info, plan, features, logits, event_times, stats, backend.name, backend.device,
                  backend.precision, video_decoder.name, batch_size, timings)


def _fraction_text(value) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)


def build_metadata(result: Result, bundle, output_paths: dict, fmt: str, tsf_version: str) -> dict:
    info, plan, stats = result.info, result.plan, result.stats
    partial = stats.partial
    return {
        "tsf_version": tsf_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "path": str(info.path),
            "size_bytes": info.size_bytes,
            "mtime": datetime.fromtimestamp(info.mtime, timezone.utc).isoformat(),
        },
        "video": {
            "container": info.container,
            "stream_index": info.stream_index,
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
            "fps": float(info.fps),
            "fps_exact": _fraction_text(info.fps),
            "start_time_seconds": float(info.start_time),
            "duration_seconds": float(info.duration),
            "frames_decoded": stats.frames_decoded,
            "frames_preprocessed": stats.frames_preprocessed,
        },
        "rows": result.rows,
        "alignment": plan.align,
        "window": {"seconds": float(plan.window_seconds), "stride_seconds": float(plan.stride_seconds),
                   "frames": plan.frames_per_window},
        "frame_time_rule": plan.frame_time_rule,
        "row_time_seconds": ("row i describes [i, i + 5] s" if plan.align == "reference"
                             else "row i describes the 5 s centred on i + 0.5 s"),
        "features": {"shape": list(result.features.shape), "dtype": "float32", "format": fmt},
        "bundle": {
            "id": bundle.bundle_id,
            "path": str(Path(bundle.dir).resolve()),
            "weights_sha256": bundle.meta.get("weights", {}).get("sha256"),
            "random_init": bundle.random_init,
            "class_names": list(bundle.class_names),
        },
        "backend": result.backend,
        "device": result.device,
        "precision": result.precision,
        "decoder": result.decoder,
        "batch_size": result.batch_size,
        "timings": result.timings,
        "partial": partial is not None,
        "partial_reason": str(partial) if partial is not None else None,
        "decoded_until_seconds": float(partial.at_time) if partial is not None else None,
        "outputs": {kind: str(path) for kind, path in output_paths.items()},
    }

