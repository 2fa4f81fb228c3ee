"""Decode -> select -> preprocess -> batch (a producer thread) -> infer, for one probed and planned video.

Decoding and preprocessing run in producer threads feeding a small bounded queue, so they overlap
inference (FFmpeg, NumPy and the engines all release the GIL while they work). With K decoders
(decode_segments.py) there is one producer per segment, each batching its own rows; batches carry
their row numbers, so inference takes them in whatever order they come. The queue bound keeps
memory flat: a producer blocks once two batches are waiting.

On a GPU the threads overlap on the device too (docs/design.md, "GPU streams"): each producer
works on its decoder's non-blocking stream (`gpu.ProducerStream`), the engine on a stream of its
own, and each batch crosses with a CUDA event: the producer records it after the batch's kernels
(`handoff`), the consumer's stream waits for it on the device (`gpu.ConsumerStream.receive`).
No thread ever waits on the host for another's work, and nothing runs on the legacy default
stream, which would order them with each other.
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
from .decode import DecodeError, Decoder, PyAVDecoder
from .decode_segments import Keyframe, Segment, choose_decoders, keyframe_starts, split_rows
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
    decoders: int = 1  # how many decoded it at once (decode_segments.py)

    @property
    def rows(self) -> int:
        return len(self.features)

    @property
    def row_times(self) -> np.ndarray:
        """Each row's window centre, in seconds from the start of the video (float64)."""
        return np.asarray([float(c) for c in self.plan.row_centres[:self.rows]], dtype=np.float64)


def open_decoder(info: VideoInfo, kind: str, backend: Backend, keyframe: Keyframe | None = None,
                 threads: int = 0) -> Decoder:
    """`cpu` (PyAV), `nvdec`, or `auto`: NVDEC when the engine reads GPU batches and NVDEC can run
    on its GPU, else PyAV (NVDEC frames would only travel back to the host). Decoding starts at
    `keyframe` (a segment's, decode_segments.py) or at the start of the file; `threads` are
    FFmpeg's for PyAV (0: one per core)."""
    if kind not in DECODER_CHOICES:
        raise BackendError(f"unknown decoder {kind!r} ({', '.join(DECODER_CHOICES)})")
    if kind == "cpu" or (kind == "auto" and not backend.wants_gpu_input):
        return PyAVDecoder(info, threads, keyframe)
    device = backend.device if backend.device.is_cuda else Device("cuda", 0)
    try:
        from .decode_nvdec import NvdecDecoder

        return NvdecDecoder(info, gpu_id=device.index, keyframe=keyframe)
    except GPU_IMPORT_ERRORS + (EngineUnavailable,) as e:
        if kind == "nvdec":
            raise BackendError(f"--decoder nvdec: {first_line(e)}") from None
        log.info("NVDEC cannot decode %s here (%s); decoding on the CPU", info.path.name, first_line(e))
    return PyAVDecoder(info, threads, keyframe)


def open_decoders(info: VideoInfo, plan: WindowPlan, kind: str, backend: Backend, requested: int | None,
                  cpus_left: int, sharing: int) -> list[tuple[Segment, Decoder]]:
    """One decoder per segment of the video: as many as `choose_decoders` says and keyframes allow,
    all of the kind the first one turned out to be."""
    first = open_decoder(info, kind, backend)
    opened: list[tuple[Segment, Decoder]] = []
    try:
        count, reason = choose_decoders(requested, first.name, getattr(first, "engines", None), cpus_left, sharing)
        segments = split_rows(plan, info, keyframe_starts(info, count))
        if count > 1 or first.name == "nvdec":  # (one PyAV decoder, the CPU's usual choice, goes unsaid)
            found = "" if len(segments) == count else f"; the keyframes allow {len(segments)}"
            log.info("%s: %d %s decoder%s at once (%s%s)", info.path.name, len(segments), first.name,
                     "s" * (len(segments) > 1), reason, found)
        # PyAV decoders share the CPUs left; one alone keeps FFmpeg's choice (one thread per core).
        threads = max(1, cpus_left // len(segments)) if first.name == "cpu" and len(segments) > 1 else 0
        name = first.name
        if segments[0].keyframe is None and not threads:
            opened.append((segments[0], first))
            first = None
        for segment in segments[len(opened):]:
            opened.append((segment, open_decoder(info, name, backend, segment.keyframe, threads)))
    except BaseException:
        for _, decoder in opened:
            decoder.close()
        raise
    finally:
        if first is not None:
            first.close()
    return opened


# What ONNX Runtime on the CPU keeps per window at its peak, in token-sized float32 tensors
# ([1 + patches * frames, width]): 81 measured with a 16-frame model, 34 with a 4-frame one
# (benchmarks/RESULTS.md, "Memory per window"); a fifth more for margin.
ACTIVATION_TENSORS_PER_WINDOW = 96


def window_bytes(bundle: Bundle, on_cpu: bool, producers: int = 1) -> int:
    """About what one window of a batch costs in host memory while batches flow: its float32
    input in every batch in flight (queued, being inferred, and one being assembled by each
    producer) and, when the engine runs on the CPU, its activations."""
    a = bundle.architecture
    tokens = 1 + (a["image_size"] // a["patch_size"]) ** 2 * a["frames"]
    size = 4 * 3 * a["frames"] * a["image_size"] ** 2 * (QUEUE_BATCHES + 1 + producers)
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


def check_batch_memory(batch_size: int, rows: int, bundle: Bundle, backend: Backend, producers: int = 1) -> None:
    """Refuse a batch size whose batches would not fit in memory, before any decoding."""
    available = available_memory()
    if available is None:
        return
    per_window = window_bytes(bundle, on_cpu=not backend.device.is_cuda, producers=producers)
    fitting = max(1, int(available * BATCH_MEMORY_SHARE) // per_window)
    windows = min(batch_size, rows)
    if windows > fitting:
        raise InputError(f"--batch-size {batch_size}: a batch of {windows} windows needs about "
                         f"{windows * per_window / 2**30:.1f} GiB here, more than {BATCH_MEMORY_SHARE:.0%} of the "
                         f"{available / 2**30:.1f} GiB available; use --batch-size {fitting} or less")


def extract(info: VideoInfo, plan: WindowPlan, bundle: Bundle, backend: Backend, *, decoder: str = "auto",
            decoders: int | None = None, cpus_left: int = 0, sharing: int = 1, batch_size: int | None = None,
            allow_partial: bool = False, progress=None) -> Result:
    """Features of one video. `decoders`: how many decode it at once (None: `choose_decoders`
    decides from the GPU's NVDEC engines, or from `cpus_left`, the CPUs CPU inference leaves;
    `sharing` videos run at once on this machine). `progress(rows_done_now, total_rows)` is
    called after every batch (may be None)."""
    started = time.monotonic()
    batch_size = int(batch_size or backend.default_batch_size)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    check_batch_memory(batch_size, plan.rows, bundle, backend)
    segments = open_decoders(info, plan, decoder, backend, decoders, cpus_left, sharing)
    try:
        check_batch_memory(batch_size, plan.rows, bundle, backend, producers=len(segments))
    except BaseException:
        for _, video_decoder in segments:
            video_decoder.close()
        raise
    opened = time.monotonic()

    features = np.zeros((plan.rows, bundle.width), dtype=np.float32)
    logits = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
    event_times = np.zeros((plan.rows, bundle.num_classes), dtype=np.float32)
    stats = [BatchStats() for _ in segments]
    batches: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()
    dropped = [threading.Event() for _ in segments]  # rows past an earlier segment's break are not kept
    first_stream = segments[0][1].gpu_stream  # None: frames, and so batches, in host memory
    consumer_stream = None if first_stream is None else ConsumerStream(first_stream.device)
    producing = [{"blocked_seconds": 0.0, "seconds": 0.0} for _ in segments]

    def put(index: int, item) -> bool:
        blocked = time.monotonic()
        try:
            while not (stop.is_set() or dropped[index].is_set()):
                try:
                    batches.put((index, item), timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            producing[index]["blocked_seconds"] += time.monotonic() - blocked

    def produce(segment: Segment, video_decoder: Decoder, segment_stats: BatchStats):
        began = time.monotonic()
        producer_stream = video_decoder.gpu_stream
        try:
            with producer_stream.work() if producer_stream else contextlib.nullcontext():
                frames = video_decoder.frames()
                for batch in window_batches(frames, plan.subset(segment.rows), batch_size, bundle.preprocessing,
                                            allow_partial=allow_partial, stats=segment_stats):
                    batch.rows = [segment.rows.start + row for row in batch.rows]
                    # A GPU batch travels with the event after its kernels; the host goes on.
                    ready = producer_stream.handoff() if producer_stream else None
                    if not put(segment.index, (batch, ready)):
                        return
                if segment.end is not None and segment_stats.partial is None:
                    read_to_next_segment(frames, segment.end, segment_stats, allow_partial)
            put(segment.index, _DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it in the caller's thread
            put(segment.index, e)
        finally:
            video_decoder.close()
            producing[segment.index]["seconds"] = (time.monotonic() - began
                                                   - producing[segment.index]["blocked_seconds"])

    producers = [threading.Thread(target=produce, args=(segment, video_decoder, segment_stats),
                                  name="tsf-decode", daemon=True)
                 for (segment, video_decoder), segment_stats in zip(segments, stats)]
    for producer in producers:
        producer.start()
    inference_seconds = waiting_seconds = 0.0
    rows_done = [0] * len(segments)
    broken: dict[int, DecodeError] = {}  # segment -> where its decoding broke
    finished = set()
    try:
        while len(finished) < len(segments):
            wait_start = time.monotonic()
            index, item = batches.get()
            waiting_seconds += time.monotonic() - wait_start
            if item is _DONE or isinstance(item, BaseException):
                if not isinstance(item, DecodeError) and item is not _DONE:
                    raise item
                finished.add(index)
                if item is not _DONE or stats[index].partial is not None:
                    # One decoder stops at the earliest break: the rows of later segments are
                    # dropped, earlier segments finish (and may break earlier still).
                    broken[index] = stats[index].partial or item
                    for later in range(index + 1, len(segments)):
                        dropped[later].set()
                        finished.add(later)
                continue
            if dropped[index].is_set():
                continue
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
            rows_done[index] += len(batch.rows)
            if progress is not None:
                progress(len(batch.rows), plan.rows)
    finally:
        stop.set()
        while any(producer.is_alive() for producer in producers):
            try:  # unblock producers waiting on a full queue
                batches.get_nowait()
            except queue.Empty:
                pass
            for producer in producers:
                producer.join(timeout=0.05)

    total = BatchStats(sum(s.frames_decoded for s in stats), sum(s.frames_preprocessed for s in stats),
                       sum(s.peak_buffered_frames for s in stats))
    kept = plan.rows
    if broken:
        first = min(broken)
        if stats[first].partial is None:
            raise broken[first]
        total.partial = stats[first].partial
        kept = segments[first][0].rows.start + rows_done[first]
        if kept == 0:
            raise total.partial  # nothing to keep: not even one window before the break
        features, logits, event_times = features[:kept], logits[:kept], event_times[:kept]
    finished_at = time.monotonic()
    wall = finished_at - started
    timings = {
        "total_seconds": round(wall, 3),
        "setup_seconds": round(opened - started, 3),
        "inference_seconds": round(inference_seconds, 3),
        "waiting_for_frames_seconds": round(waiting_seconds, 3),
        # The producers' busy time (decoding, preprocessing, batching; not their waits for queue
        # room), summed: with inference_seconds above the wall time, the stages overlapped.
        "producing_seconds": round(sum(p["seconds"] for p in producing), 3),
        # tsf's one speed figure (progress.py): the seconds of video these rows cover, per wall second.
        "realtime_factor": _rounded(realtime_factor(float(info.duration) * kept / plan.rows, wall)),
    }
    return Result(info, plan, features, logits, event_times, total, segments[0][1].name, batch_size, timings,
                  decoders=len(segments))


def read_to_next_segment(frames, end, stats: BatchStats, allow_partial: bool) -> None:
    """Decode on to the next segment's first frame, so that the jump in frame times across the
    boundary is checked as one decoder would check it (the rows rarely leave any to read)."""
    try:
        for frame in frames:
            stats.frames_decoded += 1
            if frame.pts_time >= end:
                return
    except DecodeError as error:
        if not allow_partial:
            raise
        stats.partial = error


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")
