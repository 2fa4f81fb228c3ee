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
from ..jobs import Job, Outcome
from ..files import os_error_reason


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

    def record(self, job: Job, outcome: Outcome) -> None:
        if self.file is None:
            return
        line = {"video": str(job.video), "output": str(job.output), "status": outcome.status, "rows": outcome.rows,
                "seconds": round(outcome.seconds, 3) if outcome.seconds is not None else None, "error": outcome.error,
                "host": outcome.host or self.host, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.shard is not None:
            line["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        if outcome.attempts is not None:
            line["attempts"] = outcome.attempts
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
