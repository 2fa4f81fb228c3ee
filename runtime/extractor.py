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
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .backends import ENGINES, Backend, engine_precisions, select_backend
from .bundle import Bundle, default_bundle_dir, load_bundle
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
        with VideoProgress(plan.rows, float(plan.stride_seconds), info.path.name, enabled=self.show_progress) as bar:
            return extract(info, plan, self.bundle, backend, decoder=s.decoder, batch_size=s.batch_size,
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
        log.info("%s -> %s: %d rows x %d, %s %s on %s, %s decoder, %s", result.info.path, paths["features"],
                 result.rows, result.features.shape[1], backend.name, backend.precision, backend.device,
                 result.decoder, format_speed(result.timings.get("realtime_factor")))
        return paths


def auto_precisions() -> set[str]:
    """The precisions some engine runs when left to choose (`--precision auto`)."""
    return {offered[0] for name in ENGINES for offered in engine_precisions(name).values() if offered}
