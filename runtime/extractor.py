"""`Extractor`: one model bundle and one set of settings; it owns every video's trip to its outputs.

    extractor = Extractor("~/.local/share/tsf/bundles/default", ExtractSettings(heads=True))
    for job in jobs:
        if not extractor.is_done(job):
            extractor.process(job)        # check outputs -> probe -> plan -> pipeline -> write

The engine is chosen and loaded once, on the first video that needs it (a bad first input then
costs no model load). The command line, the Slurm shards and the Ray workers all call this
object; none of them probes, plans or checks outputs on its own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from .backends import Backend, select_backend
from .bundle import Bundle, default_bundle_dir, load_bundle
from .pipeline import Result, extract
from .probe import probe_video
from .progress import VideoProgress
from .sample import plan_windows
from .scale.jobs import Job
from .write import check_outputs, is_complete, write_outputs

log = logging.getLogger("tsf")


@dataclass(frozen=True)
class ExtractSettings:
    """How every video of a run becomes outputs. The field names are `tsf-extract`'s option names."""

    align: str = "center"
    batch_size: int | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    decoder: str = "auto"
    heads: bool = False
    fmt: str = "npy"
    overwrite: bool = False
    allow_partial: bool = False


class Extractor:
    def __init__(self, model: str | Path | Bundle | None = None, settings: ExtractSettings = ExtractSettings(),
                 *, show_progress: bool = False):
        self.bundle = model if isinstance(model, Bundle) else load_bundle(model or default_bundle_dir())
        self.settings = settings
        self.show_progress = show_progress
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            s = self.settings
            self._backend = select_backend(self.bundle, s.backend, s.device, s.precision, s.threads)
            log.info("engine: %s %s on %s (%s)", self._backend.name, self._backend.precision, self._backend.device,
                     self._backend.precision_reason)
            if self.bundle.random_init:
                log.warning("model bundle %s has random weights (exported with --random-init): "
                            "the features are meaningless except for testing", self.bundle.dir)
        return self._backend

    def is_done(self, job: Job) -> bool:
        """True when a previous run finished this job's outputs (and they may be kept)."""
        return not self.settings.overwrite and is_complete(job.output, self.settings.heads)

    def extract(self, video: str | Path) -> Result:
        """One video's features in memory: probe -> plan -> decode, preprocess, batch, infer."""
        info = probe_video(video)
        plan = plan_windows(info, self.settings.align, frames=self.bundle.frames)
        backend = self.backend  # loaded, and its choice logged, before the progress bar starts
        with VideoProgress(plan.rows, float(info.duration) / plan.rows, Path(video).name,
                           enabled=self.show_progress) as bar:
            return extract(info, plan, self.bundle, backend, decoder=self.settings.decoder,
                           batch_size=self.settings.batch_size, allow_partial=self.settings.allow_partial,
                           progress=lambda rows, total: bar.update(rows))

    def process(self, job: Job) -> Result:
        """One job: its outputs checked (before any decoding), extracted, written atomically."""
        s = self.settings
        paths = check_outputs(job.output, s.heads, s.overwrite)
        result = self.extract(job.video)
        write_outputs(job.output, features=result.features, logits=result.logits, event_times=result.event_times,
                      metadata=self.metadata(result, paths), heads=s.heads, fmt=s.fmt, overwrite=s.overwrite)
        if result.stats.partial is not None:
            log.warning("%s: kept %d rows decoded before the break (%s)", job.video, result.rows, result.stats.partial)
        log.info("%s -> %s: %d rows x %d, %s %s on %s, %s decoder, x%.1f real time", job.video, job.output,
                 result.rows, result.features.shape[1], self.backend.name, self.backend.precision,
                 self.backend.device, result.decoder, result.timings.get("realtime_factor") or 0)
        return result

    def metadata(self, result: Result, paths: dict[str, Path]) -> dict:
        """`OUT.json`: what produced the features, from which input, with which settings."""
        info, plan, stats, backend = result.info, result.plan, result.stats, self.backend
        partial = stats.partial
        return {
            "tsf_version": __version__,
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
            "features": {"shape": list(result.features.shape), "dtype": "float32", "format": self.settings.fmt},
            "bundle": {
                "id": self.bundle.bundle_id,
                "path": str(Path(self.bundle.dir).resolve()),
                "weights_sha256": self.bundle.meta.get("weights", {}).get("sha256"),
                "random_init": self.bundle.random_init,
                "class_names": list(self.bundle.class_names),
            },
            "settings": asdict(self.settings),
            "backend": backend.name,
            "device": str(backend.device),
            "precision": backend.precision,
            "precision_reason": backend.precision_reason,
            "engine": backend.describe(),
            "decoder": result.decoder,
            "batch_size": result.batch_size,
            "timings": result.timings,
            "partial": partial is not None,
            "partial_reason": str(partial) if partial is not None else None,
            "decoded_until_seconds": float(partial.at_time) if partial is not None else None,
            "outputs": {kind: str(path) for kind, path in paths.items()},
        }


def _fraction_text(value) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)

