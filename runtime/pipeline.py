"""Decode -> select -> preprocess -> batch (a producer thread) -> infer, for one probed and planned video.

Decoding and preprocessing run in a producer thread feeding a small bounded queue, so they overlap
inference (FFmpeg, NumPy and the engines all release the GIL while they work). The queue bound
keeps memory flat: the producer blocks once two batches are waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .backends import Backend
from .batch import BatchStats, window_batches
from .bundle import Bundle
from .decode import Decoder, PyAVDecoder
from .errors import BackendError, EngineUnavailable, InputError, first_line
from .gpu import GPU_IMPORT_ERRORS, Device, device_scope
from .preprocess import array_module
from .probe import VideoInfo
from .sample import WindowPlan

log = logging.getLogger("tsf")

QUEUE_BATCHES = 2
DECODER_CHOICES = ("auto", "nvdec", "cpu")
_DONE = object()


@dataclass
class Result:
    info: VideoInfo
    plan: WindowPlan
    features: np.ndarray  # float32 [N, width]
    logits: np.ndarray  # float32 [N, classes]
    event_times: np.ndarray  # float32 [N, classes]
    stats: BatchStats
    decoder: str
    batch_size: int
    timings: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.features)


def open_decoder(info: VideoInfo, kind: str, backend: Backend) -> Decoder:
    """`cpu` (PyAV), `nvdec`, or `auto`: NVDEC when the engine reads GPU batches and NVDEC can run
    on its GPU, else PyAV (NVDEC frames would only travel back to the host)."""
    if kind not in DECODER_CHOICES:
        raise BackendError(f"unknown decoder {kind!r} ({', '.join(DECODER_CHOICES)})")
    if kind == "cpu" or (kind == "auto" and not backend.wants_gpu_input):
        return PyAVDecoder(info)
    device = backend.device if backend.device.is_cuda else Device("cuda", 0)
    try:
        from .decode_nvdec import NvdecDecoder

        return NvdecDecoder(info, gpu_id=device.index)
    except GPU_IMPORT_ERRORS + (EngineUnavailable,) as e:
        if kind == "nvdec":
            raise BackendError(f"--decoder nvdec: {first_line(e)}") from None
        log.info("NVDEC cannot decode %s here (%s); decoding on the CPU", info.path.name, first_line(e))
    return PyAVDecoder(info)


def extract(info: VideoInfo, plan: WindowPlan, bundle: Bundle, backend: Backend, *, decoder: str = "auto",
            batch_size: int | None = None, allow_partial: bool = False, progress=None) -> Result:
    """Features of one video. `progress(rows_done_now, total_rows)` is called after every batch (may be None)."""
    started = time.monotonic()
    batch_size = int(batch_size or backend.default_batch_size)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    video_decoder = open_decoder(info, decoder, backend)
    opened = time.monotonic()

    features = np.zeros((plan.rows, bundle.width), dtype=np.float32)
    logits = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
    event_times = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
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
            # NVDEC frames live on the decoder's GPU, which this thread must make current.
            with device_scope(video_decoder.device):
                for batch in window_batches(video_decoder.frames(), plan, batch_size, allow_partial=allow_partial,
                                            stats=stats, image_size=bundle.image_size):
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
    return Result(info, plan, features, logits, event_times, stats, video_decoder.name, batch_size, timings)
