"""`tsf-spot train`'s loop: a head trained on labelled halves, validated, checkpointed, resumable.

A run folder holds:
    run.json        what is trained on what (kind, settings, classes, features, seed, halves):
                    a resumed run must be the same run (only max_epochs and patience may change)
    checkpoint.pt   the last finished epoch: weights, optimiser, scheduler, random state, best
                    score so far (written atomically after every epoch; --resume continues from it)
    metrics.jsonl   one {"kind": "epoch", ...} line per epoch: losses, learning rate, seconds (training,
                    validation, all) and, on validation epochs, the validation tight average-mAP
    head/           the head bundle of the best validation epoch so far

Each epoch: one pass over the training data in an order drawn from (seed, epoch), the validation
loss, and every `validate_every` epochs (and at the last) the validation halves are spotted and
scored with SoccerNet's tight average-mAP (average_map.py). The best such score keeps its head;
`patience` validations without a better one end the run. NetVLAD++ also follows SoccerNet's
schedule: the learning rate drops 10x after `plateau_patience` epochs without a lower validation
loss, and the run ends when it cannot drop further. On the CPU the same seed gives the same head,
resumed or not. torch is the `torch` extra.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BackendError, InputError
from ..gpu import resolve_device
from ..files import write_files_atomically
from . import average_map
from .head_bundle import FeatureKind, Head, save_head, spots_from_candidates
from .head_models import config_dict, dense_loss, make_config, netvlad_loss
from .head_targets import (DENSE, NETVLAD, LabelledHalf, clip_starts, dense_targets, event_rows, netvlad_clip_targets,
                           positive_negative_weights, window_rows_at)
from .spot import results_document

log = logging.getLogger("tsf")

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
HEAD_FOLDER = "head"
RESUMABLE_CHANGES = ("max_epochs", "patience")  # what a resumed run may change
PLATEAU_MIN_LR = 1e-8  # torch's ReduceLROnPlateau eps; SoccerNet stops below twice it


@dataclass(frozen=True)
class TrainSettings:
    kind: str = DENSE
    overrides: tuple = ()  # (name, value) pairs over the kind's defaults
    seed: int = 0
    validate_every: int = 5
    patience: int = 10  # validations without a better tight average-mAP before stopping
    device: str = "auto"


def torch_device(text: str) -> torch.device:
    """The one place that picks where a head trains: GPU 0 when there is one (and this torch can use
    it), else the CPU; an asked-for `cuda[:N]` that this torch cannot use is an error."""
    device, insisted = resolve_device(text)
    if device.is_cuda and not torch.cuda.is_available():
        if insisted:
            raise BackendError(f"--device {text}: this torch ({torch.__version__}) cannot use CUDA")
        log.warning("a GPU is here but this torch (%s) cannot use CUDA; training on the CPU", torch.__version__)
        return torch.device("cpu")
    return torch.device(str(device))


# ---------------------------------------------------------------- the data ----------------------

class Rows:
    """Every half's rows in one array; a half is an offset and a length into it."""

    def __init__(self, halves: list[LabelledHalf]):
        lengths = [len(h.rows) for h in halves]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if halves else np.zeros(0, np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.rows = torch.from_numpy(np.concatenate([h.rows for h in halves]) if halves else np.zeros((0, 0), np.float32))


class NetVLADData:
    """SoccerNet's training windows: every half cut into non-overlapping windows of W rows."""

    def __init__(self, halves: list[LabelledHalf], window_rows: int, num_classes: int):
        self.all = Rows(halves)
        index, targets = [], []
        for half, offset in zip(halves, self.all.offsets):
            rows = len(half.rows)
            index.append(window_rows_at(clip_starts(rows, window_rows), window_rows, rows) + offset)
            targets.append(netvlad_clip_targets(rows, window_rows, event_rows(half.row_times, half.event_seconds),
                                                half.event_classes, num_classes))
        self.index = np.concatenate(index)
        self.targets = torch.from_numpy(np.concatenate(targets))

    def __len__(self):
        return len(self.index)

    def batches(self, order: np.ndarray, batch_size: int):
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            yield self.all.rows[torch.from_numpy(self.index[chosen])], self.targets[chosen]


class DenseData:
    """spivak's chunks: T consecutive rows at random starts (training) or one after another (validation)."""

    def __init__(self, halves: list[LabelledHalf], chunk_rows: int, num_classes: int, config):
        self.all = Rows(halves)
        self.chunk_rows = chunk_rows
        parts = [dense_targets(h.row_times, h.event_seconds, h.event_classes, num_classes,
                               config.confidence_radius, config.displacement_radius) for h in halves]
        self.confidence = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        self.displacement = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        self.displacement_mask = torch.from_numpy(np.concatenate([p[2] for p in parts]).astype(np.float32))

    def __len__(self):
        return len(self.confidence)

    def positive_negative_counts(self):
        positives = self.confidence.sum(dim=0).double().numpy()
        return positives, len(self.confidence) - positives

    def starts(self, rng: np.random.Generator | None):
        """[(half, first row)]: ceil(N / T) chunks per half, at random starts when rng is given."""
        chosen = []
        for half, length in enumerate(self.all.lengths):
            count = max(1, math.ceil(length / self.chunk_rows))
            if rng is None:
                chosen += [(half, k * self.chunk_rows) for k in range(count)]
            else:
                chosen += [(half, int(s)) for s in rng.integers(0, max(length - self.chunk_rows, 0) + 1, size=count)]
        return chosen

    def batches(self, chunks, batch_size: int):
        steps = np.arange(self.chunk_rows)
        for start in range(0, len(chunks), batch_size):
            part = chunks[start:start + batch_size]
            position = np.stack([first + steps for _, first in part])
            lengths = self.all.lengths[[h for h, _ in part]][:, None]
            index = torch.from_numpy(self.all.offsets[[h for h, _ in part]][:, None] + np.minimum(position, lengths - 1))
            row_mask = torch.from_numpy((position < lengths).astype(np.float32))
            yield (self.all.rows[index], self.confidence[index], self.displacement[index],
                   self.displacement_mask[index], row_mask)


# ---------------------------------------------------------------- the loop ----------------------

class Trainer:
    def __init__(self, run_dir, settings: TrainSettings, class_names, features: FeatureKind,
                 train: list[LabelledHalf], valid: list[LabelledHalf], progress: bool = True):
        if not train:
            raise InputError("no training halves")
        if not valid:
            raise InputError("no validation halves (early stopping needs them)")
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.class_names = tuple(class_names)
        self.features = features
        self.train_halves, self.valid_halves = train, valid
        self.progress = progress
        self.config = make_config(settings.kind, dict(settings.overrides))
        self.device = torch_device(settings.device)

    # -- files

    def run_description(self) -> dict:
        return {"kind": self.settings.kind, "settings": config_dict(self.config), "class_names": list(self.class_names),
                "features": self.features.to_json(), "seed": self.settings.seed,
                "validate_every": self.settings.validate_every, "patience": self.settings.patience,
                "train": [f"{h.game}/{h.half}" for h in self.train_halves],
                "valid": [f"{h.game}/{h.half}" for h in self.valid_halves]}

    def _check_same_run(self, saved: dict, current: dict) -> None:
        for key in current:
            if key == "settings":
                differs = [k for k in current[key]
                           if k not in RESUMABLE_CHANGES and (saved.get(key) or {}).get(k) != current[key][k]]
            else:
                differs = [key] if key not in RESUMABLE_CHANGES and saved.get(key) != current[key] else []
            if differs:
                raise InputError(f"{self.run_dir} holds another run ({', '.join(differs)} differ); resume it with "
                                 f"the same data and settings, or train into another folder")

    def _write(self, name: str, data: bytes) -> None:
        write_files_atomically({self.run_dir / name: data}, overwrite=True)

    # -- the run

    def run(self, resume: bool = False) -> dict:
        """Train (or go on training) until a stop condition; returns the summary of the run."""
        self._claim_run_folder(resume)
        torch.manual_seed(self.settings.seed)
        head = Head.new(self.settings.kind, self.config, self.class_names, self.features)
        model = head.model
        data, valid_data = self._data(model)
        model.to(self.device)
        self.parameter_count = sum(p.numel() for p in model.parameters())
        optimizer, scheduler = self._optimiser(model)
        state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "validations_since_best": 0, "stopped": None}
        if resume:
            state = self._restore(model, optimizer, scheduler) or state
            if state["stopped"]:
                log.info("%s: this run already ended at epoch %d (%s)", self.run_dir, state["epoch"], state["stopped"])
                return self._summary(state)
        log.info("training a %s head on %s: %d training halves (%d %s), %d validation halves, %d parameters",
                 self.settings.kind, self.device, len(self.train_halves), len(data),
                 "windows" if self.settings.kind == NETVLAD else "rows", len(self.valid_halves), self.parameter_count)
        while state["stopped"] is None:
            record = self._epoch(head, data, valid_data, optimizer, scheduler, state)
            # the log line first: a run stopped before its checkpoint redoes the epoch and trims the line
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self._save_checkpoint(model, optimizer, scheduler, state)
            log.info(self._epoch_line(record, state))
        log.info("stopped after epoch %d (%s); best validation tight average-mAP %.4f at epoch %d -> %s",
                 state["epoch"], state["stopped"], state["best_score"], state["best_epoch"], self.run_dir / HEAD_FOLDER)
        return self._summary(state)

    def _claim_run_folder(self, resume: bool) -> None:
        description = self.run_description()
        run_file = self.run_dir / RUN_FILE
        if run_file.exists():
            if not resume:
                raise InputError(f"{self.run_dir} holds a run already; pass --resume to continue it, or choose another folder")
            try:
                with open(run_file, encoding="utf-8") as f:
                    saved = json.load(f)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {run_file} ({exc})") from None
            self._check_same_run(saved, description)
        self._write(RUN_FILE, (json.dumps(description, indent=2) + "\n").encode())

    def _data(self, model):
        """The training and validation data; for the dense head also its class weights and row statistics."""
        config, classes = self.config, len(self.class_names)
        if self.settings.kind == NETVLAD:
            window = config.window_rows(self.features.rate)
            return NetVLADData(self.train_halves, window, classes), NetVLADData(self.valid_halves, window, classes)
        chunk = config.chunk_rows(self.features.rate)
        data = DenseData(self.train_halves, chunk, classes, config)
        positive, negative = positive_negative_weights(*data.positive_negative_counts(), config.positive_share)
        self.class_weights = (torch.from_numpy(positive).to(self.device), torch.from_numpy(negative).to(self.device))
        rows = data.all.rows.double()
        model.mean.copy_(rows.mean(dim=0).float())
        model.std.copy_(rows.std(dim=0).clamp(min=1e-6).float())
        return data, DenseData(self.valid_halves, chunk, classes, config)

    def _optimiser(self, model):
        config = self.config
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        if self.settings.kind == NETVLAD:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", patience=config.plateau_patience,
                                                                   eps=PLATEAU_MIN_LR)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1 - e / config.max_epochs))
        return optimizer, scheduler

    def _restore(self, model, optimizer, scheduler) -> dict | None:
        """The state of the checkpointed epoch, its weights, optimiser and random state loaded; None without one."""
        checkpoint = self.run_dir / CHECKPOINT_FILE
        if not checkpoint.exists():
            log.info("nothing to resume in %s; starting a new run", self.run_dir)
            self._trim_metrics(0)
            return None
        try:
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            state = json.loads(saved["state"])
        except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot resume from {checkpoint} ({reason})") from None
        self._trim_metrics(state["epoch"])
        state["stopped"] = self._stop_reason(state, optimizer, scheduler)  # max_epochs or patience may have changed
        if not state["stopped"]:
            log.info("resuming %s after epoch %d", self.run_dir, state["epoch"])
        return state

    def _epoch(self, head: Head, data, valid_data, optimizer, scheduler, state: dict) -> dict:
        """One epoch: train, validation loss, the schedule's step, and on validation epochs the score
        (a better one saves the head). Updates `state`; returns the epoch's log record."""
        model, config = head.model, self.config
        epoch = state["epoch"] + 1
        started = time.monotonic()
        train_loss = self._train_epoch(model, data, optimizer, epoch)
        trained = time.monotonic()
        valid_loss = self._validation_loss(model, valid_data)
        record = {"kind": "epoch", "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                  "lr": optimizer.param_groups[0]["lr"], "train_seconds": round(trained - started, 3)}
        if self.settings.kind == NETVLAD:
            scheduler.step(valid_loss)
        else:
            scheduler.step()
        if epoch % self.settings.validate_every == 0 or epoch >= config.max_epochs:
            score = self.validation_score(head)
            record["valid_tight_average_map"] = score
            if score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch, validations_since_best=0)
                head.training = self._training_record(state)
                save_head(head, self.run_dir / HEAD_FOLDER)
            else:
                state["validations_since_best"] += 1
        record["validation_seconds"] = round(time.monotonic() - trained, 3)
        record["seconds"] = round(time.monotonic() - started, 3)
        state["epoch"] = epoch
        state["stopped"] = self._stop_reason(state, optimizer, scheduler)
        return record

    def _stop_reason(self, state, optimizer, scheduler) -> str | None:
        if state["epoch"] >= self.config.max_epochs:
            return "max_epochs"
        if state["validations_since_best"] >= self.settings.patience:
            return "patience"
        if (self.settings.kind == NETVLAD and optimizer.param_groups[0]["lr"] < 2 * PLATEAU_MIN_LR
                and scheduler.num_bad_epochs >= scheduler.patience):
            return "plateau"  # SoccerNet's end: the learning rate cannot drop further
        return None

    def _summary(self, state) -> dict:
        return {"epochs": state["epoch"], "stopped": state["stopped"], "best_epoch": state["best_epoch"],
                "valid_tight_average_map": state["best_score"], "head": str(self.run_dir / HEAD_FOLDER)}

    def _training_record(self, state) -> dict:
        return {"epoch": state["best_epoch"], "valid_tight_average_map": state["best_score"],
                "parameters": self.parameter_count,
                "seed": self.settings.seed, "train_halves": len(self.train_halves),
                "valid_halves": len(self.valid_halves)}

    def _train_epoch(self, model, data, optimizer, epoch: int) -> float:
        model.train()
        rng = np.random.default_rng([self.settings.seed, epoch])
        config = self.config
        if self.settings.kind == NETVLAD:
            order = rng.permutation(len(data))
            batches = data.batches(order, config.batch_size)
            steps = math.ceil(len(order) / config.batch_size)
        else:
            chunks = data.starts(rng)
            chunks = [chunks[k] for k in rng.permutation(len(chunks))]
            batches = data.batches(chunks, config.batch_size)
            steps = math.ceil(len(chunks) / config.batch_size)
        total, count = 0.0, 0
        bar = _progress(steps, f"epoch {epoch}", self.progress)
        for batch in batches:
            loss = self._loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch[0])
            count += len(batch[0])
            if bar is not None:
                bar.set_postfix_str(f"loss {total / count:.4f}", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        return total / max(count, 1)

    def _loss(self, model, batch):
        batch = [part.to(self.device) for part in batch]
        if self.settings.kind == NETVLAD:
            windows, targets = batch
            return netvlad_loss(model(windows), targets)
        rows, confidence, displacement, displacement_mask, row_mask = batch
        logits, predicted = model(rows)
        return dense_loss(logits, predicted, confidence, displacement, displacement_mask, row_mask,
                          *self.class_weights, self.config)[0]

    @torch.no_grad()
    def _validation_loss(self, model, data) -> float:
        model.eval()
        if self.settings.kind == NETVLAD:
            batches = data.batches(np.arange(len(data)), self.config.batch_size)
        else:
            batches = data.batches(data.starts(None), self.config.batch_size)
        total, count = 0.0, 0
        for batch in batches:
            total += float(self._loss(model, batch)) * len(batch[0])
            count += len(batch[0])
        return total / max(count, 1)

    @torch.no_grad()
    def validation_score(self, head: Head) -> float:
        """SoccerNet's tight average-mAP of the head on the validation halves (through results documents
        as `tsf-spot` writes them, so the score is the one the files would get)."""
        vectors = []
        for half in self.valid_halves:
            times, confidences = head.candidates(half.rows, half.row_times)
            spots = spots_from_candidates(times, confidences, self.class_names, half.half, head.nms_window_seconds)
            detections = average_map.predictions_to_detections(results_document(half.game, spots), self.class_names)
            targets = average_map.events_to_targets(half.labelled_events(self.class_names), self.class_names)
            vectors.append(average_map.half_vectors(targets, detections)[half.half - 1])
        return average_map.average_map(vectors, average_map.TOLERANCES["tight"]).average_map

    def _save_checkpoint(self, model, optimizer, scheduler, state) -> None:
        buffer = io.BytesIO()
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "state": json.dumps(state)}, buffer)
        self._write(CHECKPOINT_FILE, buffer.getvalue())

    def _trim_metrics(self, last_epoch: int) -> None:
        """Drop the log lines of epochs after the checkpoint (a run cut short before its checkpoint)."""
        path = self.run_dir / METRICS_FILE
        if path.exists():
            with open(path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
            self._write(METRICS_FILE, "".join(kept).encode())

    @staticmethod
    def _epoch_line(record: dict, state: dict) -> str:
        line = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, valid loss {record['valid_loss']:.4f}"
        if "valid_tight_average_map" in record:
            line += (f", valid tight average-mAP {record['valid_tight_average_map']:.4f} "
                     f"(best {state['best_score']:.4f} at epoch {state['best_epoch']})")
        return line + f", lr {record['lr']:.3g} ({record['seconds']:.1f} s)"


def _progress(total: int, description: str, enabled: bool):
    """A tqdm bar of batches on a terminal (none elsewhere: the epoch lines are the log)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)
