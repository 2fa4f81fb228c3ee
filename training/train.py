"""`tsf-train fit`: the fine-tuning loop, checkpoints, resume, validation and the metrics log.

The run folder's layout and its record of what ran are `run.py`'s. A checkpoint is written at the
end of every epoch: the steps of an interrupted epoch are run again on resume.

One process per GPU under `python -m paddle.distributed.launch`; with a world size above 1 the
model is wrapped in `paddle.DataParallel` and each rank reads its own shard of every epoch. Every
rank validates a shard of the validation list and rank 0 merges the metrics, logs and writes
checkpoints. Training losses in the log are rank 0's. With `schedule.accumulate_steps` k, the
gradients of k batches make one optimiser step, each batch's loss divided by the number of batches
in its step (as DataParallel averages over GPUs), so the global batch is batch_size x GPUs x k and
the schedule counts optimiser steps.

Everything runs inside `paddle.utils.unique_name.guard()`: Paddle keys optimiser state by internal
parameter names, which a fresh name generator makes the same in every run, so a checkpoint's
optimiser state matches the resumed model even when the process built other models before.

Dependencies: paddle (model, optimiser, AMP, DataLoader, distributed), NumPy, tqdm (progress bar,
optional).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import paddle

from tsf.runtime.console import DeferredInterrupt

from .config import sampling_warnings
from .dataset import ClipDataset, SamplingSettings, read_sample_list
from .errors import TrainingError
from .files import write_atomically, write_text
from .labels import ClassMap
from .loss import training_loss
from .metrics import ValidationMetrics
from .model import PPTimeSformer, TimeSformerConfig
from .optim import WarmupCosine, build_optimizer
from .run import RunFolder
from .weights import ModelRecord, WeightsError, load_reference_weights, load_starting_point, read_checkpoint, save_pdparams

# The reference's starting point (docs/training.md, "Starting weights"): PaddleVideo's release.
KINETICS_WEIGHTS = "ppTimeSformer_k400_16f_distill.pdparams"
AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`; the message says what was saved and how to resume."""


def select_device(choice: str, amp) -> tuple[bool, str | None]:
    """(use_gpu, the autocast dtype or None for float32) after checking what this Paddle can do."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise TrainingError("device gpu was asked for, but this Paddle build sees no CUDA GPU")
    use_gpu = has_gpu if choice == "auto" else choice == "gpu"
    wanted = "fp16" if amp is True or (amp == "auto" and use_gpu) else (amp if amp in AMP_DTYPES else None)
    if wanted and not use_gpu:
        # Paddle's CPU autocast leaves this model in float32: a "bf16" run there would not be one.
        raise TrainingError(f"amp: {amp} needs a GPU (Paddle's autocast does not apply on the CPU); use amp: false")
    if use_gpu:
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device("cpu")
    if wanted == "bf16" and not paddle.amp.is_bfloat16_supported():
        raise TrainingError("amp: bf16 needs a GPU with bfloat16 arithmetic (compute capability 8.0 or newer, "
                            "e.g. A100, H100); use amp: fp16 or false")
    return use_gpu, AMP_DTYPES.get(wanted)


def model_config(config: dict, num_classes: int) -> TimeSformerConfig:
    m = config["model"]
    try:
        return TimeSformerConfig(frames=int(m["frames"]), depth=int(m["depth"]), width=int(m["width"]),
                                 heads=int(m["heads"]), image_size=int(m["image_size"]),
                                 patch_size=int(m["patch_size"]), num_classes=num_classes,
                                 mlp_ratio=int(m["mlp_ratio"]))
    except ValueError as exc:
        raise TrainingError(f"model config: {exc}") from None


def sampling_settings(config: dict) -> SamplingSettings:
    s = config["sampling"]
    return SamplingSettings(frames=int(config["model"]["frames"]), image_size=int(config["model"]["image_size"]),
                            window_seconds=float(s["window_seconds"]), jitter_seconds=float(s["jitter_seconds"]),
                            short_side_range=tuple(int(v) for v in s["short_side_range"]),
                            flip_probability=float(s["flip_probability"]))


def _autocast(amp: str | None):
    return paddle.amp.auto_cast(enable=amp is not None, dtype=amp or "float16")


def evaluate(model, dataset, class_map: ClassMap, config: dict, amp: str | None, world: int, rank: int) -> dict:
    """Validation metrics over the whole list; each rank runs every world-th sample, rank 0 merges."""
    metrics = ValidationMetrics(list(class_map.names), class_map.background_index,
                                float(config["sampling"]["window_seconds"]))
    shard = list(range(rank, len(dataset), world))
    model.eval()
    if shard:
        loader = paddle.io.DataLoader(paddle.io.Subset(dataset, shard), shuffle=False, drop_last=False,
                                      batch_size=int(config["schedule"]["valid_batch_size"]),
                                      num_workers=int(config["data"]["num_workers"]))
        with paddle.no_grad():
            for video, labels, targets in loader:
                with _autocast(amp):
                    _, logits, event_times = model(video)
                loss, _, _ = training_loss(logits, event_times, labels, targets,
                                           float(config["loss"]["event_time_weight"]), class_map.background_index)
                metrics.add(logits.astype("float32").numpy(), event_times.astype("float32").numpy(),
                            labels.numpy(), targets.numpy(), float(loss.numpy()))
    model.train()
    if world > 1:
        parts = []
        paddle.distributed.all_gather_object(parts, metrics)
        metrics = ValidationMetrics.merged(parts)
    return metrics.summary()


def fit(config: dict, *, resume: bool = False, changes: dict | None = None, stop_after_epochs: int | None = None,
        log=None) -> dict:
    """Train as configured; returns a summary (epochs run, last and best checkpoint, what to export).
    A resumed run is given its own settings and the recorded settings they change (`run.fit_settings`).
    Ctrl-C ends it with `Interrupted`, whose message says what was saved and how to resume."""
    log = log or (lambda message: print(message, file=sys.stderr))
    run = None
    try:
        # Ctrl-C lands between steps (DeferredInterrupt): raised inside Paddle it would abort the process.
        with paddle.utils.unique_name.guard(), DeferredInterrupt() as interrupt:
            run = _Run(config, resume, changes or {}, log, interrupt)
            return run.train(stop_after_epochs)
    except KeyboardInterrupt:
        if run is None:
            raise
        raise Interrupted(run.interrupted_line()) from None


@dataclass
class _State:
    epoch: int = 0
    global_step: int = 0
    best_top1: float | None = None
    best_epoch: int | None = None


class _Run:
    def __init__(self, config: dict, resume: bool, changes: dict, log, interrupt: DeferredInterrupt):
        self.config, self.log, self.interrupt = config, log, interrupt
        self.world, self.rank = paddle.distributed.get_world_size(), paddle.distributed.get_rank()
        self.is_main = self.rank == 0
        self.use_gpu, self.amp = select_device(config["device"], config["amp"])
        if self.world > 1:
            paddle.distributed.init_parallel_env()
        self.run = RunFolder(config["output_dir"])
        done = self.run.epochs()
        if done and not resume:
            raise TrainingError(f"{self.run.root} already holds checkpoints up to epoch {done[-1]}; pass --resume "
                                f"to continue that run, or choose another run folder (-o)")
        if os.path.isfile(self.run.best) and not done:
            raise TrainingError(f"{self.run.best} belongs to a run whose checkpoints are gone; move it away, "
                                f"or choose another run folder (-o)")
        # A new record, unless this resumes a recorded run (which may not have finished an epoch yet).
        self.fresh = not (resume and self.run.has_record())
        if resume and self.fresh:
            log(f"nothing to resume in {self.run.root} (no config.yaml): starting a new run")
        data_dir = config["data"]["dir"]
        self.class_map = ClassMap.load(os.path.join(data_dir, "classes.json"))
        if not self.fresh and ClassMap.load(self.run.classes_json) != self.class_map:
            raise TrainingError(f"the classes of {data_dir} differ from those {self.run.root} was trained with "
                                f"({self.run.classes_json})")
        self.model_cfg = model_config(config, len(self.class_map.names))
        self.record = ModelRecord(self.model_cfg, self.class_map.names)
        if not done and config["start_from"] and not os.path.isfile(config["start_from"]):
            raise TrainingError(f"start_from {config['start_from']}: file not found (the reference starts from "
                                f"PaddleVideo's Kinetics-400 weights, {KINETICS_WEIGHTS}: docs/training.md says "
                                f"where to download them)")
        self.resume_after, self.changes = (done[-1] if done else None), changes
        self.state = _State()
        self.current_epoch = None  # the epoch being trained, until its checkpoint is written

    def train(self, stop_after_epochs: int | None) -> dict:
        config, log = self.config, self.log
        for warning in sampling_warnings(config):
            log(f"warning: {warning}")
        seed = int(config["seed"])
        paddle.seed(seed)
        np.random.seed(seed)
        self.model = PPTimeSformer(self.model_cfg)
        self._build_data(seed)
        self._build_optimiser()
        if self.resume_after is not None:
            self._restore(self.resume_after)
        else:
            self._start()
        if self.is_main:
            self._record()
        if not self._check_schedule():
            return self._summary(0)
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        cfg = self.model_cfg
        log(f"training {cfg.depth}x{cfg.width} ({cfg.heads} heads), {cfg.frames} frames, {cfg.image_size} px on "
            f"{'GPU' if self.use_gpu else 'CPU'} x{self.world}{f' with {self.amp} autocast' if self.amp else ''}: "
            f"{len(self.train_set)} training samples, {len(self.valid_set)} validation; global batch "
            f"{self.batch_size * self.world * self.accumulate} ({self.batch_size} per process x {self.world} "
            f"process(es) x {self.accumulate} accumulated), {self.steps_per_epoch} steps per epoch")
        epochs_run = 0
        for epoch in range(self.state.epoch + 1, self.epochs + 1):
            self._epoch(epoch)
            epochs_run += 1
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                break
        return self._summary(epochs_run)

    # -- setting up ---------------------------------------------------------------------------

    def _build_data(self, seed: int) -> None:
        config, data_dir = self.config, self.config["data"]["dir"]
        num_classes = len(self.class_map.names)
        train_path = os.path.join(data_dir, config["data"]["train_list"])
        train_samples = read_sample_list(train_path, num_classes)
        if not train_samples:
            raise TrainingError(f"no training samples in {train_path}")
        valid_path = os.path.join(data_dir, config["data"]["valid_list"])
        valid_samples = read_sample_list(valid_path, num_classes) if os.path.exists(valid_path) else []
        if not valid_samples:
            self.log(f"warning: no validation samples ({valid_path}): no validation metrics and no best.pdparams; "
                     f"the newest checkpoint is the one to export")
        settings = sampling_settings(config)
        self.train_set = ClipDataset(train_samples, settings, train=True, seed=seed)
        self.valid_set = ClipDataset(valid_samples, settings, train=False, seed=seed)
        schedule = config["schedule"]
        self.batch_size, self.accumulate = int(schedule["batch_size"]), int(schedule["accumulate_steps"])
        self.batch_sampler = paddle.io.DistributedBatchSampler(self.train_set, batch_size=self.batch_size,
                                                               shuffle=True, drop_last=False)
        self.train_loader = paddle.io.DataLoader(self.train_set, batch_sampler=self.batch_sampler,
                                                 num_workers=int(config["data"]["num_workers"]))
        self.steps_per_epoch = math.ceil(len(self.batch_sampler) / self.accumulate)

    def _build_optimiser(self) -> None:
        opt = self.config["optimizer"]
        self.epochs = int(self.config["schedule"]["epochs"])
        self.scheduler = WarmupCosine(float(opt["base_lr"]), self.steps_per_epoch, self.epochs,
                                      float(opt["warmup_epochs"]), float(opt["warmup_start_lr"]))
        self.optimizer = build_optimizer(self.model, self.scheduler, weight_decay=float(opt["weight_decay"]),
                                         momentum=float(opt["momentum"]), nesterov=bool(opt["nesterov"]),
                                         clip_global_norm=float(opt["clip_global_norm"]),
                                         head_lr_multiplier=float(opt["head_lr_multiplier"]),
                                         no_weight_decay=tuple(opt["no_weight_decay"]))
        # Loss scaling keeps float16's small gradients from flushing to zero; bfloat16 has float32's range.
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if self.amp == "float16" else None

    def _restore(self, last: int) -> None:
        run = self.run
        state, record = read_checkpoint(run.checkpoint(last, "pdparams"))
        if record is not None and record.config != self.model_cfg:
            raise TrainingError(f"{run.checkpoint(last, 'pdparams')} holds a model of other settings "
                                f"({record.config.to_dict()}) than {run.config}")
        try:
            load_reference_weights(self.model, state)
        except WeightsError as exc:
            raise TrainingError(f"{run.checkpoint(last, 'pdparams')} does not fit the model of {run.config}: "
                                f"{str(exc)[:300]}") from None
        saved = paddle.load(run.checkpoint(last, "pdopt"))
        self.optimizer.set_state_dict(saved["optimizer"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        with open(run.checkpoint(last, "json"), encoding="utf-8") as f:
            self.state = _State(**json.load(f)["state"])
        self.scheduler.go_to_epoch(self.state.epoch)
        self.log(f"resuming after epoch {last} (step {self.state.global_step}) from {run.checkpoints}")

    def _start(self) -> None:
        start_from = self.config["start_from"]
        if start_from:
            state, _ = read_checkpoint(start_from)
            self.log(f"starting from {start_from}: {load_starting_point(self.model, state)}")
        else:
            self.log(f"warning: starting from random weights (start_from is null); the reference starts from the "
                     f"Kinetics-400 weights {KINETICS_WEIGHTS} (docs/training.md)")

    def _record(self) -> None:
        run = self.run
        os.makedirs(run.checkpoints, exist_ok=True)
        if self.fresh:
            run.record_start(self.config, json.dumps(self.class_map.to_json(), indent=1) + "\n",
                             self.class_map.to_text())
        elif self.changes:
            run.record_change(self.state.epoch, self.changes)
            self.log(f"changed settings, recorded in {run.changes}: "
                     + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in self.changes.items()))
        _trim_metrics(run.metrics, self.state.epoch)

    def _check_schedule(self) -> bool:
        """False when nothing is left to run; warns when every step left would run at learning rate 0."""
        if self.state.epoch >= self.epochs:
            self.log(f"warning: {self.run.root} has run all {self.epochs} epochs of its schedule: nothing to run; "
                     f"to train longer, resume with --set schedule.epochs=N --change-settings")
            return False
        if self.scheduler.peak_from(self.state.epoch * self.steps_per_epoch) <= 0:
            self.log("warning: every step left runs at learning rate 0 (optimizer.base_lr is 0): the weights "
                     "will not change")
        return True

    # -- training -----------------------------------------------------------------------------

    def _epoch(self, epoch: int) -> None:
        started = time.time()
        self.current_epoch = epoch
        self.train_set.set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)
        self.net.train()
        totals, steps = self._train_steps(epoch)
        record = {"kind": "epoch", "epoch": epoch, "step": self.state.global_step,
                  "train_loss": totals[0] / max(steps, 1), "train_cross_entropy": totals[1] / max(steps, 1),
                  "train_event_time_mse": totals[2] / max(steps, 1), "lr": self.optimizer.get_lr()}
        if len(self.valid_set):
            record["valid"] = evaluate(self.model, self.valid_set, self.class_map, self.config, self.amp,
                                       self.world, self.rank)
        if self.is_main:
            record["seconds"] = time.time() - started
            top1 = record.get("valid", {}).get("top1")
            improved = top1 is not None and (self.state.best_top1 is None or top1 > self.state.best_top1)
            self.state.epoch = epoch
            if improved:
                self.state.best_top1, self.state.best_epoch = top1, epoch
            self._save_checkpoint(epoch, improved)
            _append_metrics(self.run.metrics, record)
            self.log(_epoch_line(record, self.epochs))
        self.state.epoch = epoch
        self.current_epoch = None
        if self.world > 1:
            paddle.distributed.barrier()
        self.interrupt.check()

    def _train_steps(self, epoch: int) -> tuple[np.ndarray, int]:
        """One epoch of optimiser steps; returns the summed (loss, cross-entropy, MSE) and the steps."""
        config, batches = self.config, len(self.batch_sampler)
        weight = float(config["loss"]["event_time_weight"])
        log_every = max(1, int(config["log_every"]))
        bar = _progress(self.steps_per_epoch, f"epoch {epoch}/{self.epochs}") \
            if self.is_main and config["progress"] else None
        totals, group, steps = np.zeros(3), np.zeros(3), 0
        for index, (video, labels, targets) in enumerate(self.train_loader):
            first = index - index % self.accumulate
            in_step = min(first + self.accumulate, batches) - first  # batches in this optimiser step
            last = index == first + in_step - 1
            # Other GPUs' gradients are only needed at the step: skip the all-reduce before it.
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                with _autocast(self.amp):
                    _, logits, event_times = self.net(video)
                loss, cross_entropy, mse = training_loss(logits, event_times, labels, targets, weight,
                                                         self.class_map.background_index)
                scaled = loss / in_step
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            group += np.array([float(loss.numpy()), float(cross_entropy.numpy()), float(mse.numpy())]) / in_step
            if last:
                self._step()
                lr = self.optimizer.get_lr()
                self.scheduler.step()
                totals, steps = totals + group, steps + 1
                self.state.global_step += 1
                if bar is not None:
                    bar.update()
                    bar.set_postfix(loss=f"{group[0]:.4f}", lr=f"{lr:.2e}")
                if self.is_main and self.state.global_step % log_every == 0:
                    _append_metrics(self.run.metrics, {"kind": "train", "epoch": epoch, "step": self.state.global_step,
                                                       "loss": group[0], "cross_entropy": group[1],
                                                       "event_time_mse": group[2], "lr": lr})
                group = np.zeros(3)
            self.interrupt.check()
        if bar is not None:
            bar.close()
        return totals, steps

    def _step(self) -> None:
        if self.scaler is not None:
            # step/update, not minimize: Paddle's Optimizer.minimize rejects parameter groups.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()

    def _save_checkpoint(self, epoch: int, improved: bool) -> None:
        run = self.run
        save_pdparams(self.model, run.checkpoint(epoch, "pdparams"), self.record)
        saved = {"optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        write_atomically(run.checkpoint(epoch, "pdopt"), lambda tmp: paddle.save(saved, tmp))
        state = vars(self.state)
        write_text(run.checkpoint(epoch, "json"), json.dumps({"state": state}, indent=1) + "\n")
        if improved:
            write_atomically(run.best, lambda tmp: shutil.copyfile(run.checkpoint(epoch, "pdparams"), tmp))
            write_text(run.best_record, json.dumps({"epoch": epoch, "top1": self.state.best_top1}) + "\n")
        for old in run.epochs()[:-max(1, int(self.config["keep_checkpoints"]))]:
            for suffix in ("json", "pdopt", "pdparams"):  # the marker first: a half-pruned epoch is not "complete"
                path = run.checkpoint(old, suffix)
                if os.path.exists(path):
                    os.unlink(path)

    # -- the end ------------------------------------------------------------------------------

    def interrupted_line(self) -> str:
        saved, epoch = self.state.epoch, self.current_epoch
        when = (f"in epoch {epoch}: its steps are lost (a checkpoint is written at the end of each epoch)"
                if epoch is not None else f"after epoch {saved}" if saved else "before the first epoch began")
        kept = f"epochs 1-{saved} are saved in {self.run.checkpoints}" if saved else "no epoch was saved"
        return f"interrupted {when}; {kept}; resume with: tsf-train fit --resume -o {self.run.root}"

    def _summary(self, epochs_run: int) -> dict:
        last = self.state.epoch
        checkpoint = self.run.checkpoint(last, "pdparams") if last else None
        best = self.run.best if os.path.exists(self.run.best) else None
        export = best or checkpoint
        if self.is_main and export:
            which = (f"the best epoch ({self.state.best_epoch}, validation top-1 {self.state.best_top1:.3f})" if best
                     else f"the last epoch ({last}; without validation samples there is no best.pdparams)")
            self.log(f"to export {which}: tsf-export {export} -o BUNDLE_DIR")
        return {"epochs_run": epochs_run, "last_epoch": last, "checkpoint": checkpoint, "best": best,
                "best_top1": self.state.best_top1, "best_epoch": self.state.best_epoch, "export": export}


def _trim_metrics(path: str, last_epoch: int):
    """Drop log lines of epochs after the checkpoint we resume from (a run cut short mid-epoch)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
    write_text(path, "".join(kept))


def _append_metrics(path: str, record: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs} ({record['seconds']:.0f} s): train loss {record['train_loss']:.4f}"
    valid = record.get("valid")
    if valid:
        line += f", valid top-1 {valid['top1']:.3f}"
        if valid.get("event_time_mae_s") is not None:
            line += f", event-time MAE {valid['event_time_mae_s']:.2f} s"
    return line


def _progress(total: int, description: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="step", leave=False, file=sys.stderr)
