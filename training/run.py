"""The run folder of `tsf-train fit`, and the rule that it is the truth about what ran.

    config.yaml                      the settings the run started with: written once, never rewritten
    changes.jsonl                    settings changed on resume (`--change-settings`), one line per
                                     resume: {"after_epoch", "time", "changes": {key: {"from", "to"}}}
    classes.json, classes.txt        the class map trained (classes.txt: `tsf-export --classes`)
    checkpoints/epoch_NNNN.pdparams  model weights, reference layout, with the model record (heads,
                                     class names) that `tsf-export` reads
    checkpoints/epoch_NNNN.pdopt     optimiser (momentum velocities) and AMP scaler
    checkpoints/epoch_NNNN.json      epoch, step, best so far: written last, marks the checkpoint whole
    best.pdparams, best.json         the epoch with the highest validation top-1
    metrics.jsonl                    {"kind": "train", ...} every log_every steps, {"kind": "epoch", ...}

`fit --resume` trains with the run's own settings (config.yaml, then changes.jsonl in order). What
the command line asks for is compared with them: a key that changes what is trained and differs is
an error naming it, unless `--change-settings` makes it a change, recorded in changes.jsonl. Keys
that only say how to run (`RUNNING_KEYS`) may differ freely. The architecture never changes within
a run: its checkpoints hold that model.

Paddle-free (the exporter reads run folders before it loads Paddle). Dependencies: PyYAML through
`config`.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone

from .config import default_config, dump_config, flatten, merged, read_config_file, requested_settings, validate
from .errors import TrainingError
from .files import write_text

# Keys that say how to run, not what to train: a resumed run takes the command line's.
RUNNING_KEYS = ("output_dir", "progress", "log_every", "keep_checkpoints", "data.num_workers")
# Paths are recorded absolute, so that a run resumes (and compares) from any working directory.
PATH_KEYS = ("data.dir", "start_from")
_CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.json$")


class RunFolder:
    def __init__(self, root: str):
        self.root = root
        self.checkpoints = os.path.join(root, "checkpoints")
        self.metrics = os.path.join(root, "metrics.jsonl")
        self.best = os.path.join(root, "best.pdparams")
        self.best_record = os.path.join(root, "best.json")
        self.config = os.path.join(root, "config.yaml")
        self.changes = os.path.join(root, "changes.jsonl")
        self.classes_json = os.path.join(root, "classes.json")
        self.classes_txt = os.path.join(root, "classes.txt")

    @classmethod
    def holding(cls, weights_path: str) -> "RunFolder | None":
        """The run folder a weights file belongs to (its best.pdparams or one of its checkpoints), if any."""
        folder = os.path.dirname(os.path.abspath(weights_path))
        for root in (folder, os.path.dirname(folder)):
            run = cls(root)
            if run.has_record() and os.path.abspath(weights_path) in (run.best, *map(run.weights, run.epochs())):
                return run
        return None

    def has_record(self) -> bool:
        return os.path.isfile(self.config)

    def checkpoint(self, epoch: int, suffix: str) -> str:
        return os.path.join(self.checkpoints, f"epoch_{epoch:04d}.{suffix}")

    def weights(self, epoch: int) -> str:
        return os.path.abspath(self.checkpoint(epoch, "pdparams"))

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint (the .json is written last)."""
        if not os.path.isdir(self.checkpoints):
            return []
        found = []
        for name in os.listdir(self.checkpoints):
            m = _CHECKPOINT_RE.match(name)
            if m and all(os.path.exists(self.checkpoint(int(m.group(1)), s)) for s in ("pdparams", "pdopt")):
                found.append(int(m.group(1)))
        return sorted(found)

    def exportable(self) -> list[str]:
        """The weights files worth exporting: best.pdparams, then the checkpoints newest first."""
        best = [self.best] if os.path.isfile(self.best) else []
        return best + [self.checkpoint(e, "pdparams") for e in reversed(self.epochs())]

    def recorded_settings(self) -> dict:
        """config.yaml with every recorded change applied: the settings the run trains with now."""
        # Over the defaults: a run recorded before a key existed ran with that key's default.
        config = merged(default_config(), flatten(read_config_file(self.config)))
        for change in self.recorded_changes():
            config = merged(config, {key: values["to"] for key, values in change["changes"].items()})
        return config

    def recorded_model(self):
        """The run's `ModelRecord` from its settings: for checkpoints written before they carried one."""
        from .labels import ClassMap
        from .train import model_config  # Paddle: only callers that load the weights ask
        from .weights import ModelRecord

        names = ClassMap.load(self.classes_json).names
        return ModelRecord(model_config(self.recorded_settings(), len(names)), names)

    def recorded_changes(self) -> list[dict]:
        if not os.path.exists(self.changes):
            return []
        try:
            with open(self.changes, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as exc:
            raise TrainingError(f"cannot read {self.changes} ({exc})".splitlines()[0]) from None

    def record_start(self, config: dict, classes_json: str, classes_txt: str) -> None:
        """The record of a new run (replacing that of a run in this folder that saved no checkpoint)."""
        if os.path.exists(self.changes):
            os.unlink(self.changes)  # it changed the replaced record
        write_text(self.config, dump_config(config))
        write_text(self.classes_json, classes_json)
        write_text(self.classes_txt, classes_txt)

    def record_change(self, after_epoch: int, changes: dict) -> None:
        line = {"after_epoch": after_epoch, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "changes": {key: {"from": old, "to": new} for key, (old, new) in changes.items()}}
        with open(self.changes, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def _absolute_paths(flat: dict) -> dict:
    return {key: os.path.abspath(value) if key in PATH_KEYS and isinstance(value, str) else value
            for key, value in flat.items()}


def fit_settings(config_path: str | None, overrides, output: str | None, resume: bool,
                 change_settings: bool) -> tuple[dict, dict]:
    """(the config to train with, the recorded settings a resume changes: key -> (from, to))."""
    if change_settings and not resume:
        raise TrainingError("--change-settings changes a run's recorded settings: it goes with --resume")
    requested = _absolute_paths(requested_settings(config_path, overrides))
    if output is not None:
        requested["output_dir"] = output
    run = RunFolder(requested.get("output_dir") or default_config()["output_dir"])
    if not (resume and run.has_record()):
        config = merged(default_config(), requested)
        validate(config)
        return config, {}
    recorded = flatten(run.recorded_settings())
    recorded.update(_absolute_paths(recorded))
    changes = {key: (recorded.get(key), value) for key, value in requested.items()
               if key not in RUNNING_KEYS and recorded.get(key) != value}
    listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
    fixed = [key for key in changes if key.startswith("model.")]
    if fixed:
        raise TrainingError(f"{run.root} holds a model of other settings ({listed}): a run keeps its architecture; "
                            f"start a new run (-o NEW) with start_from={run.root}/best.pdparams to continue from it")
    if changes and not change_settings:
        raise TrainingError(f"--resume trains with {run.root}'s own settings ({run.config}), and these differ: "
                            f"{listed}; drop them, or add --change-settings to train on with them "
                            f"(recorded in {run.changes})")
    config = merged(default_config(), {**recorded, **requested, "output_dir": run.root})
    validate(config)
    return config, changes
