"""The run report (`--report FILE`): one JSON line per video, appended and fsynced as it happens.

A killed run keeps what it reported and a resumed run adds to the same file; the last line for a
video is its current state. Only the standard library is needed.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from ..errors import OutputError
from ..outputs import os_error_reason, output_paths
from ..jobs import Job


def metadata_rows(job: Job) -> int | None:
    """Rows recorded in a finished output's metadata (None if absent or unreadable)."""
    try:
        with open(output_paths(job.output)["metadata"], encoding="utf-8") as f:
            return int(json.load(f)["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunReport:
    """One JSON line per video: video, output, status (done | skipped | failed), rows, seconds, error.

    Lines are appended and flushed one by one, so a killed run keeps what it reported and a
    resumed run adds to the same file (the last line for a video is its current state).
    """

    def __init__(self, path: str | os.PathLike | None, shard: tuple[int, int] | None = None):
        self.path = path
        self.shard = shard
        self.host = socket.gethostname()
        self.file = None
        if path is not None:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "a", encoding="utf-8")
            except OSError as e:
                raise OutputError(f"cannot write the report {path}: {os_error_reason(e)}") from None

    def record(self, job: Job, status: str, seconds: float | None = None, error: str | None = None,
               rows: int | None = None, worker: str | None = None, attempts: int | None = None) -> None:
        if self.file is None:
            return
        if status == "skipped":
            rows = metadata_rows(job)
        line = {"video": str(job.video), "output": str(job.output), "status": status, "rows": rows,
                "seconds": round(seconds, 3) if seconds is not None else None, "error": error,
                "host": worker or self.host, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.shard is not None:
            line["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        if attempts is not None:
            line["attempts"] = attempts
        try:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:
            self._drop()  # its buffer cannot be written either: closing must not try again
            raise OutputError(f"cannot write the report {self.path}: {os_error_reason(e)}") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _drop(self) -> None:
        file, self.file = self.file, None
        try:
            file.close()
        except OSError:
            pass
