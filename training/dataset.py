"""The training/validation dataset: one prepared sample -> (video, class index, event-time target).

Randomness (window shift, scale, crop, flip) comes from a generator seeded by (seed, epoch, sample
index), so a sample looks the same whichever DataLoader worker builds it and a resumed run
replays the epochs it would have run.

Dependencies: paddle (`paddle.io.Dataset`, the base its DataLoader expects), NumPy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import paddle

from .augment import eval_transform, train_transform
from .errors import TrainingError
from .sampler import draw_shift, event_time_target, read_frames_at, window_frame_times, window_start

REQUIRED_KEYS = ("clip", "label", "event_time", "clip_seconds")


def read_sample_list(path: str, num_classes: int | None = None) -> list[dict]:
    """A prepared `*.jsonl` list; clip paths become absolute (they are relative to the list)."""
    base = os.path.dirname(os.path.abspath(path))
    samples = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise TrainingError(f"cannot read sample list {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError:
            raise TrainingError(f"{path} line {number} is not JSON") from None
        missing = [k for k in REQUIRED_KEYS if k not in sample]
        if missing:
            raise TrainingError(f"{path} line {number}: missing {', '.join(missing)}")
        if num_classes is not None and not 0 <= int(sample["label"]) < num_classes:
            raise TrainingError(f"{path} line {number}: label {sample['label']} is not a class index < {num_classes}")
        sample["clip"] = os.path.join(base, sample["clip"])
        samples.append(sample)
    # Checked up front: a missing clip would otherwise stop training hours in, inside a worker.
    missing = [s["clip"] for s in samples if not os.path.isfile(s["clip"])]
    if missing:
        raise TrainingError(f"{path}: {len(missing)} clip(s) missing, e.g. {missing[0]}; rerun `tsf-train prepare`")
    return samples


@dataclass(frozen=True)
class SamplingSettings:
    frames: int = 16
    image_size: int = 224
    window_seconds: float = 5.0
    jitter_seconds: float = 2.5
    short_side_range: tuple[int, int] = (225, 256)
    flip_probability: float = 0.5


class ClipDataset(paddle.io.Dataset):
    """`dataset[i] -> (video float32 [3, T, S, S], label int64 [], target float32 [])`."""

    def __init__(self, samples: list[dict], settings: SamplingSettings, train: bool, seed: int = 0):
        super().__init__()
        self.samples = samples
        self.settings = settings
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        s, sample = self.settings, self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shift = draw_shift(rng, s.jitter_seconds) if self.train else 0.0
        event_time = float(sample["event_time"])
        start = window_start(event_time, float(sample["clip_seconds"]), s.window_seconds, shift)
        frames = read_frames_at(sample["clip"], window_frame_times(start, s.window_seconds, s.frames))
        if self.train:
            video = train_transform(frames, rng, s.image_size, s.short_side_range, s.flip_probability)
        else:
            video = eval_transform(frames, s.image_size)
        target = event_time_target(event_time, start, s.window_seconds)
        return video, np.array(int(sample["label"]), dtype=np.int64), np.array(target, dtype=np.float32)
