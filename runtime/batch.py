"""Stage 5: decoded frames -> batches of windows, each needed frame converted and preprocessed once.

Neighbouring windows share most of their frames (13 of 16 at 25 fps), so frames are keyed by the
target time they serve, preprocessed when the selector settles them, and kept in a small buffer
until the last row that uses them has been batched. The buffer spans about one window plus one
batch of rows, whatever the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from .bundle import Preprocessing
from .decode import DecodeError
from .preprocess import array_module, preprocess_frame
from .sample import FrameSelector, WindowPlan, unique_targets


@dataclass
class WindowBatch:
    rows: list[int]
    video: Any  # float32 [B, 3, T, S, S], NumPy or CuPy


@dataclass
class BatchStats:
    frames_decoded: int = 0
    frames_preprocessed: int = 0
    peak_buffered_frames: int = 0  # the buffer's high-water mark: memory stays flat with video length
    partial: DecodeError | None = None  # set when --allow-partial kept the rows before a break


def window_batches(frames: Iterator, plan: WindowPlan, batch_size: int, preprocessing: Preprocessing, *,
                   allow_partial: bool = False, stats: BatchStats | None = None) -> Iterator[WindowBatch]:
    """Batches of up to `batch_size` consecutive rows, in row order."""
    stats = stats if stats is not None else BatchStats()
    targets, row_targets = unique_targets(plan.row_times)
    last_row_using = [0] * len(targets)
    for row, indices in enumerate(row_targets):
        for j in indices:
            last_row_using[j] = row
    row_last_target = [max(indices) for indices in row_targets]

    selector = FrameSelector(targets, plan.tolerance)
    buffer: dict[int, Any] = {}
    latest = (None, None)  # (frame number, preprocessed): targets sharing a frame share its array
    next_row = 0
    pending: list[int] = []

    def take(settled):
        nonlocal latest
        for j, frame in settled:
            if latest[0] != frame.number:
                picture = preprocess_frame(frame.to_rgb(), preprocessing, pixel_aspect=plan.pixel_aspect)
                latest = (frame.number, picture)
                stats.frames_preprocessed += 1
            buffer[j] = latest[1]
        stats.peak_buffered_frames = max(stats.peak_buffered_frames, len({id(a) for a in buffer.values()}))

    def ready_batches(flush: bool):
        nonlocal next_row, pending
        settled_count = selector.next_target
        while next_row < len(row_targets) and row_last_target[next_row] < settled_count:
            pending.append(next_row)
            next_row += 1
            if len(pending) == batch_size:
                yield emit(pending)
                pending = []
        if flush and pending:
            yield emit(pending)
            pending = []

    def emit(rows):
        first = buffer[row_targets[rows[0]][0]]
        xp = array_module(first)
        video = xp.stack([xp.stack([buffer[j] for j in row_targets[r]], axis=1) for r in rows])
        done = rows[-1]
        for j in [j for j in buffer if last_row_using[j] <= done]:
            del buffer[j]
        return WindowBatch(list(rows), video)

    try:
        for frame in frames:
            stats.frames_decoded += 1
            take(selector.feed(frame))
            yield from ready_batches(flush=False)
            if selector.done:
                break
        take(selector.finish())
    except DecodeError as error:
        if not allow_partial:
            raise
        # The rows whose frames all came before the last one decoded are kept. That last frame is
        # not trusted: damage may begin inside its packet (the demuxer notices only when the next
        # one does not parse, and decoders conceal rather than fail), as a truncated file cuts
        # its last packet short. Rows needing it, or anything later, are dropped.
        stats.partial = error
    yield from ready_batches(flush=True)
