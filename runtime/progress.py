"""A progress bar per video: windows done, windows/s, times real time, ETA.

tqdm draws the bar, rate and ETA (and handles non-terminals and resizing); this module only adds
the "x real time" figure, the video seconds covered per wall-clock second.
"""

from __future__ import annotations

import sys
import time


class VideoProgress:
    def __init__(self, total_rows: int, seconds_per_row: float, description: str, enabled: bool = True):
        self.seconds_per_row = seconds_per_row
        self.started = time.monotonic()
        self.done = 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_rows, desc=description, unit="win", file=sys.stderr,
                            dynamic_ncols=True, leave=True, smoothing=0.1)

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is None:
            return
        elapsed = time.monotonic() - self.started
        if elapsed > 0:
            self.bar.set_postfix_str(f"x{self.done * self.seconds_per_row / elapsed:.1f} real time", refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
