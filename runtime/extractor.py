"""`Extractor`: one model bundle and one set of settings; it owns every video's trip to its outputs.

    extractor = Extractor("~/.local/share/tsf/bundles/default", ExtractSettings(heads=True))
    for job in jobs:
        if not extractor.is_done(job):
            extractor.process(job)        # check outputs -> probe -> plan -> pipeline -> write

The engine is chosen and loaded once, on the first video that needs it (a bad first input then
costs no model load). The command line, the Slurm shards and the Ray workers all call this
object; none of them probes, plans or checks outputs on its own.

Resume (docs/design.md, "Outputs"): a job is done when its output set is finished and its
settings fingerprint is this extractor's; a finished set with another fingerprint is an error
saying what differs (`--overwrite` replaces it whole), and the debris of an interrupted run is
removed and redone.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from .backends import ENGINES, Backend, engine_precisions, select_backend
from .bundle import Bundle, default_bundle_dir, load_bundle
from .errors import OutputError
from .pipeline import Result, extract
from .probe import probe_video
from .progress import VideoProgress, format_speed
from .fidelity import FidelityGate
from .sample import plan_windows
from .jobs import Job
from .outputs import (ABSENT, FINISHED, FOREIGN, OutputSet, check_outputs, clear_unfinished, feature_file_description,
                    inspect_outputs, write_outputs)

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
            self._backend = select_backend(self.bundle, s.backend, s.device, s.precision, s.threads,
                                           FidelityGate(self.bundle))
            log.info("engine: %s %s on %s (%s)", self._backend.name, self._backend.precision, self._backend.device,
                     self._backend.precision_reason)
            if self.bundle.random_init:
                log.warning("model bundle %s has random weights (exported with --random-init): "
                            "the features are meaningless except for testing", self.bundle.dir)
        return self._backend

    def fingerprint(self, precision: str) -> dict:
        """The settings that shape the numbers of an output set, with the `precision` the engine
        ran; OUT.json records them and resume keeps only a set that has the same. Engine, device,
        batch size, threads and decoder are left out: they change how fast the numbers come, not
        which numbers (within the precision)."""
        s = self.settings
        return {"bundle_id": self.bundle.bundle_id, "alignment": s.align, "format": s.fmt,
                "window": {"frames": self.bundle.window.frames, "seconds": float(self.bundle.window.seconds),
                           "stride_seconds": float(self.bundle.window.stride_seconds)},
                "precision": precision}

    def is_done(self, job: Job) -> bool:
        """True when a previous run finished this job's outputs with these settings (and they may be kept)."""
        existing = inspect_outputs(job.output)
        return (not self.settings.overwrite and existing.state == FINISHED and not self._differences(existing)
                and (not self.settings.heads or "heads" in existing.kinds))

    def _differences(self, existing: OutputSet) -> list[str]:
        """What differs between a finished set's fingerprint and this run's, decided without loading
        the engine: `--precision auto` accepts a set made at any engine's own choice, a named
        precision only a set made at that precision."""
        recorded = existing.metadata.get("fingerprint") or {}
        requested = self.settings.precision
        differences = [f"{key} {recorded.get(key)!r} there, {value!r} here"
                       for key, value in self.fingerprint(requested).items()
                       if key != "precision" and recorded.get(key) != value]
        made_at = recorded.get("precision")
        if made_at not in (auto_precisions() if requested == "auto" else (requested,)):
            differences.append(f"precision {made_at!r} there, {requested!r} here")
        if existing.metadata.get("partial") and not self.settings.allow_partial:
            differences.append("partial there (--allow-partial), whole here")
        return differences

    def _prepare_outputs(self, job: Job) -> bool:
        """Before any decoding: clear what an interrupted run left, refuse what may not be replaced.
        True when an existing finished set is to be replaced whole."""
        s = self.settings
        existing = clear_unfinished(job.output)
        if s.overwrite or existing.state == ABSENT:
            return existing.state != ABSENT
        if existing.state == FOREIGN:
            raise OutputError(f"{existing.problem} (use --overwrite to replace it)")
        differences = self._differences(existing)
        if differences:
            raise OutputError(f"{job.output} was extracted with other settings ({'; '.join(differences)}); "
                              "use --overwrite to replace it")
        heads = existing.paths["heads"]
        if s.heads and "heads" not in existing.kinds and heads.exists():
            raise OutputError(f"{heads} exists but {existing.paths['metadata'].name} does not vouch for it "
                              "(use --overwrite to replace it)")
        return True  # finished with these settings, but without the heads asked for: rewritten with them

    def extract(self, video: str | Path) -> Result:
        """One video's features in memory: probe -> plan -> decode, preprocess, batch, infer."""
        info = probe_video(video)
        plan = plan_windows(info, self.bundle.window, self.settings.align)
        backend = self.backend  # loaded, and its choice logged, before the progress bar starts
        with VideoProgress(plan.rows, float(info.duration) / plan.rows, Path(video).name,
                           enabled=self.show_progress) as bar:
            return extract(info, plan, self.bundle, backend, decoder=self.settings.decoder,
                           batch_size=self.settings.batch_size, allow_partial=self.settings.allow_partial,
                           progress=lambda rows, total: bar.update(rows))

    def process(self, job: Job) -> Result:
        """One job: its outputs checked (before any decoding), extracted, written atomically."""
        s = self.settings
        replace = self._prepare_outputs(job)
        check_outputs(job.output, s.heads, s.fmt)
        result = self.extract(job.video)
        paths = write_outputs(job.output, features=result.features, logits=result.logits,
                              event_times=result.event_times, metadata=self.metadata(result), heads=s.heads,
                              fmt=s.fmt, replace=replace)
        if result.stats.partial is not None:
            log.warning("%s: kept %d rows decoded before the break (%s)", job.video, result.rows, result.stats.partial)
        log.info("%s -> %s: %d rows x %d, %s %s on %s, %s decoder, %s", job.video, paths["features"],
                 result.rows, result.features.shape[1], self.backend.name, self.backend.precision,
                 self.backend.device, result.decoder, format_speed(result.timings.get("realtime_factor")))
        return result

    def metadata(self, result: Result) -> dict:
        """`OUT.json`: what produced the features, from which input, with which settings (the
        writer adds the manifest of the set's files)."""
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
                "rotation_degrees": info.rotation,
                "frames_decoded": stats.frames_decoded,
                "frames_preprocessed": stats.frames_preprocessed,
                "peak_frames_buffered": stats.peak_buffered_frames,
            },
            "rows": result.rows,
            "alignment": plan.align,
            "window": {"seconds": float(plan.window_seconds), "stride_seconds": float(plan.stride_seconds),
                       "frames": plan.frames_per_window},
            "frame_time_rule": plan.frame_time_rule,
            "row_time_seconds": ("row i describes [i, i + 5] s" if plan.align == "reference"
                                 else "row i describes the 5 s centred on i + 0.5 s"),
            "features": feature_file_description(self.settings.fmt, result.features, result.logits,
                                                 result.event_times),
            "bundle": {
                "id": self.bundle.bundle_id,
                "path": str(Path(self.bundle.dir).resolve()),
                "weights_sha256": self.bundle.meta.get("weights", {}).get("sha256"),
                "random_init": self.bundle.random_init,
                "class_names": list(self.bundle.class_names),
            },
            "settings": asdict(self.settings),
            "fingerprint": self.fingerprint(backend.precision),
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
        }


def auto_precisions() -> set[str]:
    """The precisions some engine runs when left to choose (`--precision auto`)."""
    return {offered[0] for name in ENGINES for offered in engine_precisions(name).values() if offered}


def _fraction_text(value) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)

