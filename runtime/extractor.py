"""`Extractor`: one model bundle and one set of settings; it owns every video's trip to its outputs.

    extractor = Extractor("~/.local/share/tsf/bundles/default", ExtractSettings(heads=True))
    for job in jobs:
        if not extractor.is_done(job):
            extractor.process(job)        # check outputs -> probe -> plan -> pipeline -> write

The engine is chosen and loaded once, on the first video that needs it (a bad first input then
costs no model load). The command line, the Slurm shards and the Ray workers all call this
object; none of them probes, plans or checks outputs on its own.

Several videos at once (`share_among`, from threads of `jobs.run_jobs`) share the one engine:
one model in GPU memory, running one batch at a time (`SharedEngine`), while the videos'
decoders and preprocessing run side by side. Decoding, not the model, is what a GPU waits for
(docs/design.md, "Many decoders"), and a second copy of the model would only take memory.

Resume (docs/design.md, "Outputs"): a job is done when its output set is finished and its
settings fingerprint is this extractor's; a finished set with another fingerprint is an error
saying what differs (`--overwrite` replaces it whole), and the debris of an interrupted run is
removed and redone.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from .backends import ENGINES, Backend, cpu_threads, engine_precisions, select_backend
from .decode_segments import choose_videos_at_once
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
    decoders: int | None = None  # per video; None: decode_segments.choose_decoders
    videos_at_once: int | None = None  # None: decode_segments.choose_videos_at_once
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
        self.sharing = 1  # videos this process runs at once (share_among)
        self._backend: Backend | None = None
        self._loading = threading.Lock()

    @property
    def backend(self) -> Backend:
        with self._loading:
            if self._backend is None:
                s = self.settings
                backend = select_backend(self.bundle, s.backend, s.device, s.precision, s.threads,
                                         FidelityGate(self.bundle))
                log.info("engine: %s %s on %s (%s)", backend.name, backend.precision, backend.device,
                         backend.precision_reason)
                if self.bundle.random_init:
                    log.warning("model bundle %s has random weights (exported with --random-init): "
                                "the features are meaningless except for testing", self.bundle.dir)
                self._backend = backend
        return self._backend

    def share_among(self, videos: int) -> int:
        """How many of `videos` to run at once (`choose_videos_at_once`, logged with its reason);
        from then on each video's decoders are chosen for that share of the machine, the engine
        runs one batch at a time for all of them, and progress bars give way to per-video lines."""
        engines = None
        if videos > 1 and not self.settings.videos_at_once:
            engines = self.nvdec_engines()
        at_once, reason = choose_videos_at_once(self.settings.videos_at_once, videos, engines)
        if at_once > 1:
            log.info("%d videos at once (%s), sharing one %s engine", at_once, reason, self.backend.name)
            self._backend = SharedEngine(self.backend)
            self.show_progress = False
        self.sharing = at_once
        return at_once

    def nvdec_engines(self) -> int | None:
        """The NVDEC engines of the engine's GPU when videos decode there, else None."""
        s, backend = self.settings, self.backend
        if s.decoder == "cpu" or not backend.device.is_cuda or (s.decoder == "auto" and not backend.wants_gpu_input):
            return None
        from .decode_nvdec import nvdec_engines

        return nvdec_engines(backend.device.index)

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
            s = self.settings
            # CPU inference takes its threads' cores; a GPU engine leaves every core to decoding.
            cpus_left = cpu_threads() - (0 if backend.device.is_cuda else cpu_threads(s.threads))
            return extract(info, plan, self.bundle, backend, decoder=s.decoder, decoders=s.decoders,
                           cpus_left=cpus_left, sharing=self.sharing, batch_size=s.batch_size,
                           allow_partial=s.allow_partial, progress=lambda rows, total: bar.update(rows))

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
        log.info("%s -> %s: %d rows x %d, %s %s on %s, %s, %s", job.video, paths["features"],
                 result.rows, result.features.shape[1], self.backend.name, self.backend.precision,
                 self.backend.device, f"{result.decoders} {result.decoder} decoders" if result.decoders > 1
                 else f"{result.decoder} decoder", format_speed(result.timings.get("realtime_factor")))
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
            "decoders": result.decoders,
            "batch_size": result.batch_size,
            "timings": result.timings,
            "partial": partial is not None,
            "partial_reason": str(partial) if partial is not None else None,
            "decoded_until_seconds": float(partial.at_time) if partial is not None else None,
        }


class SharedEngine:
    """One engine serving the pipelines of several videos at once: one batch at a time (a
    TensorRT execution context, an OpenVINO request and a CUDA graph each take one caller)."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self._running = threading.Lock()

    def run(self, video):
        with self._running:
            return self._backend.run(video)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def auto_precisions() -> set[str]:
    """The precisions some engine runs when left to choose (`--precision auto`)."""
    return {offered[0] for name in ENGINES for offered in engine_precisions(name).values() if offered}


def _fraction_text(value) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)

