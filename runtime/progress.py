"""Progress per video, and tsf's one speed figure, "x real time".

"x real time" is seconds of video per second of wall time (2.0: a 45-minute half takes 22.5
minutes). `realtime_factor` computes it and `format_speed` prints it, for the progress display,
the per-video info line and OUT.json's `timings.realtime_factor` alike; rows (windows) are counted,
never turned into a second speed figure.

On a terminal tqdm draws the bar (and handles resizing); elsewhere (a Slurm log, `make demo > log`)
a redrawn bar would fill the file, so one plain line is printed every `LINE_EVERY_PERCENT` percent.
"""

from __future__ import annotations

import sys
import time

LINE_EVERY_PERCENT = 5


def realtime_factor(video_seconds: float, wall_seconds: float) -> float | None:
    """Seconds of video per second of wall time; None before any time has passed."""
    return video_seconds / wall_seconds if wall_seconds > 0 else None


def format_speed(factor: float | None) -> str:
    """`x0.2 real time`, `x1.2 real time`, `x84 real time`: two significant digits, whole numbers from 10."""
    if factor is None:
        return "x? real time"
    return f"x{factor:.2g} real time" if factor < 10 else f"x{factor:.0f} real time"


class VideoProgress:
    """`update(rows)` after each batch; a row stands for `seconds_per_row` seconds of video."""

    def __init__(self, total_rows: int, seconds_per_row: float, description: str, enabled: bool = True):
        self.total = total_rows
        self.seconds_per_row = seconds_per_row
        self.description = description
        self.stream = sys.stderr
        self.started = time.monotonic()
        self.done = 0
        self.next_line_percent = LINE_EVERY_PERCENT
        self.bar = None
        self.lines = enabled and not _is_terminal(self.stream)
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total_rows, desc=description, unit="window", file=self.stream,
                            dynamic_ncols=True, leave=True, smoothing=0.1,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} windows "
                                       "[{elapsed}<{remaining}{postfix}]")

    def speed(self) -> float | None:
        return realtime_factor(self.done * self.seconds_per_row, time.monotonic() - self.started)

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.set_postfix_str(format_speed(self.speed()), refresh=False)
            self.bar.update(rows)
        elif self.lines:
            percent = 100 * self.done / self.total if self.total else 100
            if percent >= self.next_line_percent or self.done >= self.total:
                self._print_line(percent)
                while self.next_line_percent <= percent:
                    self.next_line_percent += LINE_EVERY_PERCENT

    def _print_line(self, percent: float) -> None:
        from tqdm import tqdm

        elapsed = time.monotonic() - self.started
        left = elapsed * (self.total - self.done) / self.done if self.done else 0.0
        print(f"{self.description}: {percent:3.0f}% ({self.done}/{self.total} windows), {format_speed(self.speed())}, "
              f"{tqdm.format_interval(elapsed)} elapsed, {tqdm.format_interval(left)} left",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without isatty, or already closed
        return False
