"""Decode -> select -> preprocess -> batch (a producer thread) -> infer, for one probed and planned video.

Decoding and preprocessing run in a producer thread feeding a small bounded queue, so they overlap
inference (FFmpeg, NumPy and the engines all release the GIL while they work). The queue bound
keeps memory flat: the producer blocks once two batches are waiting.

On a GPU the two threads overlap on the device too (docs/design.md, "GPU streams"): the producer
works on its decoder's non-blocking stream (`gpu.ProducerStream`), the engine on a stream of its
own, and each batch crosses with a CUDA event: the producer records it after the batch's kernels
(`handoff`), the consumer's stream waits for it on the device (`gpu.ConsumerStream.receive`).
Neither thread ever waits on the host for the other's work, and nothing runs on the legacy
default stream, which would order the two with each other.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .backends.registry import Backend
from .batch import BatchStats, window_batches
from .bundle import Bundle
from .decode import Decoder, PyAVDecoder
from .errors import BackendError, EngineUnavailable, InputError, first_line
from .gpu import GPU_IMPORT_ERRORS, ConsumerStream, Device
from .probe import VideoInfo
from .progress import realtime_factor
from .sample import WindowPlan

log = logging.getLogger("tsf")

QUEUE_BATCHES = 2
DECODER_CHOICES = ("auto", "nvdec", "cpu")
# The share of the memory available at the start that a batch may take: the rest is for the
# model, the decoder and whatever else runs.
BATCH_MEMORY_SHARE = 0.75
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

    @property
    def row_times(self) -> np.ndarray:
        """Each row's window centre, in seconds from the start of the video (float64)."""
        return np.asarray([float(c) for c in self.plan.row_centres[:self.rows]], dtype=np.float64)


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


# What ONNX Runtime on the CPU keeps per window at its peak, in token-sized float32 tensors
# ([1 + patches * frames, width]): 81 measured with a 16-frame model, 34 with a 4-frame one
# (benchmarks/RESULTS.md, "Memory per window"); a fifth more for margin.
ACTIVATION_TENSORS_PER_WINDOW = 96


def window_bytes(bundle: Bundle, on_cpu: bool) -> int:
    """About what one window of a batch costs in host memory while batches flow: its float32
    input in every batch in flight (queued, being assembled, being inferred) and, when the engine
    runs on the CPU, its activations."""
    a = bundle.architecture
    tokens = 1 + (a["image_size"] // a["patch_size"]) ** 2 * a["frames"]
    size = 4 * 3 * a["frames"] * a["image_size"] ** 2 * (QUEUE_BATCHES + 2)
    if on_cpu:
        size += 4 * tokens * a["width"] * ACTIVATION_TENSORS_PER_WINDOW
    return size


def available_memory() -> int | None:
    """Bytes this process can still take: the kernel's MemAvailable, capped by a cgroup (v2) limit
    (containers, Slurm jobs); None where neither is readable."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit != "max":
            available = min(available or 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def check_batch_memory(batch_size: int, rows: int, bundle: Bundle, backend: Backend) -> None:
    """Refuse a batch size whose batches would not fit in memory, before any decoding."""
    available = available_memory()
    if available is None:
        return
    per_window = window_bytes(bundle, on_cpu=not backend.device.is_cuda)
    fitting = max(1, int(available * BATCH_MEMORY_SHARE) // per_window)
    windows = min(batch_size, rows)
    if windows > fitting:
        raise InputError(f"--batch-size {batch_size}: a batch of {windows} windows needs about "
                         f"{windows * per_window / 2**30:.1f} GiB here, more than {BATCH_MEMORY_SHARE:.0%} of the "
                         f"{available / 2**30:.1f} GiB available; use --batch-size {fitting} or less")


def extract(info: VideoInfo, plan: WindowPlan, bundle: Bundle, backend: Backend, *, decoder: str = "auto",
            batch_size: int | None = None, allow_partial: bool = False, progress=None) -> Result:
    """Features of one video. `progress(rows_done_now, total_rows)` is called after every batch (may be None)."""
    started = time.monotonic()
    batch_size = int(batch_size or backend.default_batch_size)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    check_batch_memory(batch_size, plan.rows, bundle, backend)
    video_decoder = open_decoder(info, decoder, backend)
    opened = time.monotonic()

    features = np.zeros((plan.rows, bundle.width), dtype=np.float32)
    logits = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
    event_times = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
    stats = BatchStats()
    batches: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()
    producer_stream = video_decoder.gpu_stream  # None: frames, and so batches, in host memory
    consumer_stream = None if producer_stream is None else ConsumerStream(producer_stream.device)
    producing = {"blocked_seconds": 0.0, "seconds": 0.0}

    def put(item) -> bool:
        blocked = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            producing["blocked_seconds"] += time.monotonic() - blocked

    def produce():
        began = time.monotonic()
        try:
            with producer_stream.work() if producer_stream else contextlib.nullcontext():
                for batch in window_batches(video_decoder.frames(), plan, batch_size, bundle.preprocessing,
                                            allow_partial=allow_partial, stats=stats):
                    # A GPU batch travels with the event after its kernels; the host goes on.
                    ready = producer_stream.handoff() if producer_stream else None
                    if not put((batch, ready)):
                        return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it in the caller's thread
            put(e)
        finally:
            producing["seconds"] = time.monotonic() - began - producing["blocked_seconds"]

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
            batch, ready = item
            run_start = time.monotonic()
            # The engine reads a GPU batch on the device after the producer's event (gpu.py). It
            # returns once its results are on the host, so when `batch` is dropped (next turn)
            # nothing reads it any more and CuPy may hand its memory to the producer's stream again.
            with consumer_stream.receive(ready) if ready is not None else contextlib.nullcontext():
                out = backend.run(batch.video)
            inference_seconds += time.monotonic() - run_start
            features[batch.rows] = out["features"]
            logits[batch.rows] = out["logits"]
            event_times[batch.rows] = out["event_times"]
            rows_done += len(batch.rows)
            if progress is not None:
                progress(len(batch.rows), plan.rows)
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
        # The producer's busy time (decoding, preprocessing, batching; not its waits for queue
        # room): with inference_seconds above the wall time, the stages overlapped.
        "producing_seconds": round(producing["seconds"], 3),
        # tsf's one speed figure (progress.py): the seconds of video these rows cover, per wall second.
        "realtime_factor": _rounded(realtime_factor(float(info.duration) * rows_done / plan.rows, wall)),
    }
    return Result(info, plan, features, logits, event_times, stats, video_decoder.name, batch_size, timings)


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")
