"""`Extractor`: one model bundle and one set of settings; it owns every video's trip to its outputs.

    extractor = Extractor("~/.local/share/tsf/bundles/default", heads=True)
    result = extractor.extract("match.mkv")     # probe -> plan -> decode, preprocess, batch, infer
    result.features, result.row_times            # arrays; nothing written
    extractor.save(result, "match.npy")          # the output set, written as resume expects

    for job in jobs:                             # what tsf-extract, Slurm shares and Ray workers do
        extractor.process(job)                   # skip a finished set, or extract and save

The engine is chosen and loaded once, on the first video that needs it (a bad first input then
costs no model load). The command line, the Slurm shards and the Ray workers all call this
object; none of them probes, plans or checks outputs on its own. What the output set may be
(skipped, written, refused) is decided by runtime/outputs.py, before any decoding.

Several videos at once (`share_among`, from threads of `JobLoop.run`) share the one engine: one
model in GPU memory, running one batch at a time (`SharedEngine`), while the videos' decoders and
preprocessing run side by side. Decoding, not the model, is what a GPU waits for (docs/design.md,
"Many decoders"), and a second copy of the model would only take memory.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .backends import ENGINES, Backend, cpu_threads, engine_precisions, select_backend
from .bundle import Bundle, default_bundle_dir, load_bundle
from .decode_segments import choose_videos_at_once
from .errors import InputError
from .fidelity import FidelityGate
from .jobs import Job, Outcome
from .outputs import FORMATS, Decision, Expected, OutputSet, fingerprint, identify_input, metadata_document
from .pipeline import Result, extract
from .decode import TimestampsRestart
from .probe import VideoInfo, probe_video
from .progress import VideoProgress, format_speed
from .sample import ALIGNMENTS, plan_windows, stride_for

log = logging.getLogger("tsf")

# Rows per second tsf computes at most: each row is a real window through the model.
MAX_RATE = 25


@dataclass(frozen=True)
class ExtractSettings:
    """How every video of a run becomes outputs. The field names are `tsf-extract`'s option names."""

    align: str = "center"
    rate: int | None = None  # rows per second; None: the bundle's own stride (1 s for the reference)
    batch_size: int | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    decoder: str = "auto"
    decoders: int | None = None  # per video; None: decode_segments.choose_decoders
    videos_at_once: int | None = None  # None: decode_segments.choose_videos_at_once
    heads: bool = False
    format: str = "npy"
    overwrite: bool = False
    allow_partial: bool = False

    def as_options(self) -> list[str]:
        """These settings as tsf-extract's options (those that differ from the defaults), for a
        command that must do the same elsewhere (the Slurm script)."""
        words = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            option = "--" + field.name.replace("_", "-")
            words += [option] if value is True else [option, str(value)]
        return words

    def __post_init__(self):
        if self.align not in ALIGNMENTS:
            raise InputError(f"unknown alignment {self.align!r} ({' or '.join(ALIGNMENTS)})")
        if self.format not in FORMATS:
            raise InputError(f"unknown output format {self.format!r} ({' or '.join(FORMATS)})")
        if self.rate is not None and not (isinstance(self.rate, int) and 1 <= self.rate <= MAX_RATE):
            raise InputError(f"rate {self.rate!r}: rows per second must be a whole number from 1 to {MAX_RATE}")
        for name in ("decoders", "videos_at_once"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name} {value!r}: must be a whole number of at least 1")


class Extractor:
    def __init__(self, model: str | Path | Bundle | None = None, settings: ExtractSettings | None = None, *,
                 show_progress: bool = False, **options):
        """`model`: a bundle directory (default: the one tsf-export writes without -o) or a loaded
        Bundle. Settings as an `ExtractSettings`, or as its fields by name (`rate=2, heads=True`)."""
        if settings is not None and options:
            raise TypeError("give settings as an ExtractSettings or as keyword options, not both")
        known = {f.name for f in fields(ExtractSettings)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown Extractor option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        self.bundle = model if isinstance(model, Bundle) else load_bundle(model or default_bundle_dir())
        self.settings = settings if settings is not None else ExtractSettings(**options)
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

    def fingerprint(self, precision: str | None) -> dict:
        s = self.settings
        return fingerprint(self.bundle.bundle_id, self.bundle.window, stride_for(self.bundle.window, s.rate), s.align,
                           s.format, precision)

    # ------------------------------------------------------------------------------ one video

    def extract(self, video: str | Path) -> Result:
        """One video's features in memory: probe -> plan -> decode, preprocess, batch, infer."""
        info = probe_video(video)
        try:
            return self._extract(info)
        except TimestampsRestart as restart:
            log.info("%s; scanning the whole file for where its parts start", restart)
            return self._extract(probe_video(video, scan_restarts=True))

    def _extract(self, info: VideoInfo) -> Result:
        s = self.settings
        plan = plan_windows(info, self.bundle.window, s.align, s.rate)
        backend = self.backend  # loaded, and its choice logged, before the progress bar starts
        # CPU inference takes its threads' cores; a GPU engine leaves every core to decoding.
        cpus_left = cpu_threads() - (0 if backend.device.is_cuda else cpu_threads(s.threads))
        with VideoProgress(plan.rows, float(plan.stride_seconds), info.path.name, enabled=self.show_progress) as bar:
            return extract(info, plan, self.bundle, backend, decoder=s.decoder, decoders=s.decoders,
                           cpus_left=cpus_left, sharing=self.sharing, batch_size=s.batch_size,
                           allow_partial=s.allow_partial, progress=lambda rows, total: bar.update(rows))

    def check(self, job: Job) -> Decision:
        """Whether `job`'s output set is to be skipped or written (an OutputError if it may not be
        touched); decided from what is on disk, without loading the engine or decoding."""
        s = self.settings
        accepted = auto_precisions() if s.precision == "auto" else {s.precision}
        expected = Expected(Path(job.video), self.fingerprint(None), frozenset(accepted), s.format, s.heads,
                            s.allow_partial)
        return OutputSet(job.output).decide(expected, s.overwrite)

    def process(self, job: Job) -> Outcome:
        """One job: skipped when finished with these settings from this input; otherwise checked
        (before any decoding), extracted and saved."""
        decision = self.check(job)
        if decision.skip:
            return Outcome("skipped", decision.rows)
        OutputSet(job.output).check_writable(self.settings.format, self.settings.heads)
        result = self.extract(job.video)
        self._write(result, job.output, decision)
        return Outcome("done", result.rows)

    def save(self, result: Result, output: str | Path) -> dict[str, Path]:
        """Write `result` (from `extract`) as the output set `output` (OUT.npy or OUT), under the
        same rules as tsf-extract: an existing set is replaced only with `overwrite`, or when it is
        the unfinished debris of an interrupted run."""
        decision = self.check(Job(Path(result.info.path), Path(output)))
        if decision.skip:
            raise InputError(f"{output} already holds these features (finished with these settings from this "
                             "input); nothing to write")
        return self._write(result, Path(output), decision)

    def _write(self, result: Result, output: Path, decision: Decision) -> dict[str, Path]:
        s = self.settings
        backend = self.backend
        metadata = metadata_document(result, self.bundle, backend, asdict(s), self.fingerprint(backend.precision),
                                     identify_input(result.info.path))
        paths = OutputSet(output).write(decision, features=result.features, logits=result.logits,
                                        event_times=result.event_times, metadata=metadata, fmt=s.format, heads=s.heads)
        if result.stats.partial is not None:
            log.warning("%s: kept %d rows decoded before the break (%s)", result.info.path, result.rows,
                        result.stats.partial)
        log.info("%s -> %s: %d rows x %d, %s %s on %s, %s, %s", result.info.path, paths["features"],
                 result.rows, result.features.shape[1], backend.name, backend.precision, backend.device,
                 f"{result.decoders} {result.decoder} decoders" if result.decoders > 1 else f"{result.decoder} decoder",
                 format_speed(result.timings.get("realtime_factor")))
        return paths


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
