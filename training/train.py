"""`tsf-train fit`: the fine-tuning loop, checkpoints, resume, validation and the metrics log.

Run folder (`output_dir`):
    config.yaml, classes.json      what was trained, for the record
    classes.txt                    class names one per line: `tsf-export --classes RUN/classes.txt`
    checkpoints/epoch_NNNN.pdparams  model weights, reference layout (loads in `tsf-export`)
    checkpoints/epoch_NNNN.pdopt     optimiser (momentum velocities, lr schedule) and AMP scaler
    checkpoints/epoch_NNNN.json      epoch, step, best so far: written last, marks the checkpoint whole
    best.pdparams, best.json       the epoch with the highest validation top-1
    metrics.jsonl                  {"kind": "train", ...} every log_every steps, {"kind": "epoch", ...}

One process per GPU under `python -m paddle.distributed.launch`; with a world size above 1 the
model is wrapped in `paddle.DataParallel` and each rank reads its own shard of every epoch. Every
rank validates a shard of the validation list and rank 0 merges the metrics, logs and writes
checkpoints. Training losses in the log are rank 0's.

Everything runs inside `paddle.utils.unique_name.guard()`: Paddle keys optimiser state by internal
parameter names, which a fresh name generator makes the same in every run, so a checkpoint's
optimiser state matches the resumed model even when the process built other models before.

Dependencies: paddle (model, optimiser, AMP, DataLoader, distributed), NumPy, tqdm (progress bar,
optional).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np
import paddle

from tsf.runtime.console import DeferredInterrupt

from .config import dump_config
from .dataset import ClipDataset, SamplingSettings, read_sample_list
from .errors import TrainingError
from .labels import ClassMap
from .loss import training_loss
from .metrics import ValidationMetrics
from .model import PPTimeSformer, TimeSformerConfig
from .optim import WarmupCosine, build_optimizer
from .weights import load_reference_weights, load_starting_point, read_pdparams, save_pdparams

_CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.json$")


class RunFolder:
    def __init__(self, root: str):
        self.root = root
        self.checkpoints = os.path.join(root, "checkpoints")
        self.metrics = os.path.join(root, "metrics.jsonl")
        self.best = os.path.join(root, "best.pdparams")

    def checkpoint(self, epoch: int, suffix: str) -> str:
        return os.path.join(self.checkpoints, f"epoch_{epoch:04d}.{suffix}")

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


def _atomic(write, path: str):
    """Run `write(tmp_path)` on a temp file next to `path`, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_text(path: str, text: str):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(write, path)


def select_device(choice: str, amp) -> tuple[bool, bool]:
    """(use_gpu, use_amp) after checking what this Paddle build can do."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise TrainingError("device gpu was asked for, but this Paddle build sees no CUDA GPU")
    use_gpu = has_gpu if choice == "auto" else choice == "gpu"
    if amp is True and not use_gpu:
        raise TrainingError("amp: true needs a GPU (Paddle's float16 autocast is CUDA-only); use amp: auto")
    if use_gpu:
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device("cpu")
    return use_gpu, (use_gpu if amp == "auto" else bool(amp))


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


def evaluate(model, dataset, class_map: ClassMap, config: dict, use_amp: bool, world: int, rank: int) -> dict:
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
                with paddle.amp.auto_cast(enable=use_amp):
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


def fit(config: dict, *, resume: bool = False, stop_after_epochs: int | None = None, log=None) -> dict:
    """Train as configured; returns a summary (epochs run, last and best checkpoint, best top-1)."""
    # Ctrl-C lands between steps (DeferredInterrupt): raised inside Paddle it would abort the process.
    with paddle.utils.unique_name.guard(), DeferredInterrupt() as interrupt:
        return _fit(config, resume, stop_after_epochs, log or (lambda message: print(message, file=sys.stderr)),
                    interrupt)


def _fit(config: dict, resume: bool, stop_after_epochs: int | None, log, interrupt: DeferredInterrupt) -> dict:
    world, rank = paddle.distributed.get_world_size(), paddle.distributed.get_rank()
    is_main = rank == 0
    use_gpu, use_amp = select_device(config["device"], config["amp"])
    if world > 1:
        paddle.distributed.init_parallel_env()

    data_dir = config["data"]["dir"]
    class_map = ClassMap.load(os.path.join(data_dir, "classes.json"))
    num_classes = len(class_map.names)
    cfg = model_config(config, num_classes)
    run = RunFolder(config["output_dir"])
    done = run.epochs()
    if done and not resume:
        raise TrainingError(f"{run.root} already holds checkpoints up to epoch {done[-1]}; "
                            f"pass --resume to continue that run, or choose another output_dir")

    seed = int(config["seed"])
    paddle.seed(seed)
    np.random.seed(seed)
    model = PPTimeSformer(cfg)

    train_samples = read_sample_list(os.path.join(data_dir, config["data"]["train_list"]), num_classes)
    if not train_samples:
        raise TrainingError(f"no training samples in {os.path.join(data_dir, config['data']['train_list'])}")
    valid_path = os.path.join(data_dir, config["data"]["valid_list"])
    valid_samples = read_sample_list(valid_path, num_classes) if os.path.exists(valid_path) else []
    settings = sampling_settings(config)
    train_set = ClipDataset(train_samples, settings, train=True, seed=seed)
    valid_set = ClipDataset(valid_samples, settings, train=False, seed=seed)
    schedule = config["schedule"]
    batch_sampler = paddle.io.DistributedBatchSampler(train_set, batch_size=int(schedule["batch_size"]),
                                                      shuffle=True, drop_last=False)
    workers = int(config["data"]["num_workers"])
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=batch_sampler, num_workers=workers)

    epochs = int(schedule["epochs"])
    opt = config["optimizer"]
    scheduler = WarmupCosine(float(opt["base_lr"]), len(batch_sampler), epochs, float(opt["warmup_epochs"]),
                             float(opt["warmup_start_lr"]))
    optimizer = build_optimizer(model, scheduler, weight_decay=float(opt["weight_decay"]),
                                momentum=float(opt["momentum"]), nesterov=bool(opt["nesterov"]),
                                clip_global_norm=float(opt["clip_global_norm"]),
                                head_lr_multiplier=float(opt["head_lr_multiplier"]),
                                no_weight_decay=tuple(opt["no_weight_decay"]))
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if use_amp else None

    state = {"epoch": 0, "global_step": 0, "best_top1": None, "best_epoch": None}
    if done:
        last = done[-1]
        load_reference_weights(model, read_pdparams(run.checkpoint(last, "pdparams")))
        saved = paddle.load(run.checkpoint(last, "pdopt"))
        optimizer.set_state_dict(saved["optimizer"])
        scheduler.set_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        with open(run.checkpoint(last, "json"), encoding="utf-8") as f:
            state.update(json.load(f)["state"])
        log(f"resuming after epoch {last} (step {state['global_step']}) from {run.checkpoints}")
    else:
        if resume:
            log(f"nothing to resume in {run.root}; starting a new run")
        if config["start_from"]:
            report = load_starting_point(model, read_pdparams(config["start_from"]))
            log(f"starting from {config['start_from']}: {report}")
        else:
            log("starting from random weights (start_from is null)")

    if is_main:
        os.makedirs(run.checkpoints, exist_ok=True)
        _write_text(os.path.join(run.root, "config.yaml"), dump_config(config))
        _write_text(os.path.join(run.root, "classes.json"), json.dumps(class_map.to_json(), indent=1) + "\n")
        _write_text(os.path.join(run.root, "classes.txt"), class_map.to_text())
        _trim_metrics(run.metrics, state["epoch"])
    net = paddle.DataParallel(model) if world > 1 else model
    weight = float(config["loss"]["event_time_weight"])
    log_every = max(1, int(config["log_every"]))
    log(f"training {cfg.depth}x{cfg.width}, {cfg.frames} frames, {cfg.image_size} px on "
        f"{'GPU' if use_gpu else 'CPU'} x{world}{' with AMP' if use_amp else ''}: {len(train_samples)} training "
        f"samples, {len(valid_samples)} validation, {len(batch_sampler)} steps per epoch")

    epochs_run = 0
    for epoch in range(state["epoch"] + 1, epochs + 1):
        started = time.time()
        train_set.set_epoch(epoch)
        batch_sampler.set_epoch(epoch)
        net.train()
        totals = np.zeros(3)
        steps = 0
        bar = _progress(len(batch_sampler), f"epoch {epoch}/{epochs}") if is_main and config["progress"] else None
        for video, labels, targets in train_loader:
            with paddle.amp.auto_cast(enable=use_amp):
                _, logits, event_times = net(video)
            loss, cross_entropy, mse = training_loss(logits, event_times, labels, targets, weight,
                                                     class_map.background_index)
            if scaler is not None:
                # step/update, not minimize: Paddle's Optimizer.minimize rejects parameter groups.
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.clear_grad()
            lr = optimizer.get_lr()
            scheduler.step()
            values = np.array([float(loss.numpy()), float(cross_entropy.numpy()), float(mse.numpy())])
            totals += values
            steps += 1
            state["global_step"] += 1
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{values[0]:.4f}", lr=f"{lr:.2e}")
            if is_main and state["global_step"] % log_every == 0:
                _append_metrics(run.metrics, {"kind": "train", "epoch": epoch, "step": state["global_step"],
                                              "loss": values[0], "cross_entropy": values[1],
                                              "event_time_mse": values[2], "lr": lr})
            interrupt.check()
        if bar is not None:
            bar.close()

        record = {"kind": "epoch", "epoch": epoch, "step": state["global_step"],
                  "train_loss": totals[0] / max(steps, 1), "train_cross_entropy": totals[1] / max(steps, 1),
                  "train_event_time_mse": totals[2] / max(steps, 1), "lr": optimizer.get_lr()}
        if valid_samples:
            record["valid"] = evaluate(model, valid_set, class_map, config, use_amp, world, rank)
        if is_main:
            record["seconds"] = time.time() - started
            state["epoch"] = epoch
            top1 = record.get("valid", {}).get("top1")
            improved = top1 is not None and (state["best_top1"] is None or top1 > state["best_top1"])
            if improved:
                state["best_top1"], state["best_epoch"] = top1, epoch
            _save_checkpoint(run, epoch, model, optimizer, scheduler, scaler, state, improved,
                             int(config["keep_checkpoints"]))
            _append_metrics(run.metrics, record)
            log(_epoch_line(record))
        state["epoch"] = epoch
        if world > 1:
            paddle.distributed.barrier()
        epochs_run += 1
        interrupt.check()
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break

    last = state["epoch"]
    return {"epochs_run": epochs_run, "last_epoch": last,
            "checkpoint": run.checkpoint(last, "pdparams") if last else None,
            "best": run.best if os.path.exists(run.best) else None,
            "best_top1": state["best_top1"], "best_epoch": state["best_epoch"]}


def _save_checkpoint(run: RunFolder, epoch, model, optimizer, scheduler, scaler, state, improved, keep):
    save_pdparams(model, run.checkpoint(epoch, "pdparams"))
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None}
    _atomic(lambda tmp: paddle.save(saved, tmp), run.checkpoint(epoch, "pdopt"))
    _write_text(run.checkpoint(epoch, "json"), json.dumps({"state": state}, indent=1) + "\n")
    if improved:
        _atomic(lambda tmp: shutil.copyfile(run.checkpoint(epoch, "pdparams"), tmp), run.best)
        _write_text(os.path.join(run.root, "best.json"), json.dumps({"epoch": epoch, "top1": state["best_top1"]}) + "\n")
    for old in run.epochs()[:-max(1, keep)]:
        for suffix in ("json", "pdopt", "pdparams"):  # the marker first: a half-pruned epoch is not "complete"
            path = run.checkpoint(old, suffix)
            if os.path.exists(path):
                os.unlink(path)


def _trim_metrics(path: str, last_epoch: int):
    """Drop log lines of epochs after the checkpoint we resume from (a run cut short mid-epoch)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
    _write_text(path, "".join(kept))


def _append_metrics(path: str, record: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _epoch_line(record: dict) -> str:
    line = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    valid = record.get("valid")
    if valid:
        line += f", valid top-1 {valid['top1']:.3f}"
        if valid.get("event_time_mae_s") is not None:
            line += f", event-time MAE {valid['event_time_mae_s']:.2f} s"
    return line + f" ({record['seconds']:.0f} s)"


def _progress(total: int, description: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="step", leave=False, file=sys.stderr)
