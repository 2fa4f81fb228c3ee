"""The two learned spotting heads as PyTorch modules, their hyper-parameters and their losses.

- `NetVLADPlusPlus`: SoccerNet's baseline (sn-spotting, Benchmarks/TemporallyAwarePooling, "pool
  NetVLAD++"): rows reduced to 512 by a linear layer (when they are not 512 wide), the window
  split at W//2 rows into a before and an after part, each pooled by its own NetVLAD of
  vocabulary/2 clusters, the two concatenated, dropout 0.4, one linear layer to background +
  classes, sigmoid. Trained with binary cross-entropy averaged over windows and outputs.
- `DenseAnchors`: a compact version of spivak's dense detection anchors: rows projected to
  `hidden` channels, a 1-D U-Net (two 3-wide convolutions per level, max-pooling down, transposed
  convolutions up, skips added), and two 3-wide convolutions on top: a confidence logit and a
  displacement (tanh, times `displacement_radius`) per row and class. Loss: confidence binary
  cross-entropy weighted per class (positives carry `positive_share`) plus `displacement_weight`
  times a Huber loss (delta 0.5, divided by 0.5) on the rows with a displacement target.

Every architecture fact is in its hyper-parameters (`NetVLADConfig`, `DenseConfig`), which the
head bundle records; docs/spotting.md gives the sources and the reasons. torch is the `torch` extra.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .head_targets import DENSE, NETVLAD, centred_window_rows



@dataclass(frozen=True)
class NetVLADConfig:
    """SoccerNet's defaults (sn-spotting TemporallyAwarePooling main.py) unless noted."""

    window_seconds: float = 15.0
    vocabulary: int = 64  # clusters in all, half before and half after the candidate time
    reduced_width: int = 512
    dropout: float = 0.4
    nms_window_seconds: float = 30.0
    learning_rate: float = 1e-3
    batch_size: int = 256
    plateau_patience: int = 10  # epochs of no better validation loss before the learning rate drops 10x
    max_epochs: int = 1000

    def window_rows(self, rate: float) -> int:
        return int(self.window_seconds * rate)


@dataclass(frozen=True)
class DenseConfig:
    """spivak's defaults where it has one (confidence radius 3 s, displacement radius 2x that,
    positives 3% of the confidence loss, Huber delta 0.5, 112-s chunks, U-Net down to 16 s,
    NMS window 3 s with displacements, Adam 2e-3 decaying linearly); smaller widths (compact)."""

    hidden: int = 64
    max_channels: int = 256
    coarsest_seconds: float = 16.0
    chunk_seconds: float = 112.0
    confidence_radius: float = 3.0
    displacement_radius: float = 6.0
    positive_share: float = 0.03
    displacement_weight: float = 1.0
    huber_delta: float = 0.5
    nms_window_seconds: float = 3.0
    learning_rate: float = 2e-3
    batch_size: int = 32
    max_epochs: int = 1000

    def levels(self, rate: float) -> int:
        """U-Net levels so that the coarsest row stands for about `coarsest_seconds`."""
        return 1 + max(0, round(math.log2(max(self.coarsest_seconds * rate, 1.0))))

    def chunk_rows(self, rate: float) -> int:
        multiple = 2 ** (self.levels(rate) - 1)
        return multiple * math.ceil(self.chunk_seconds * rate / multiple)


CONFIGS = {NETVLAD: NetVLADConfig, DENSE: DenseConfig}
ZERO_ALLOWED = ("dropout", "displacement_weight")
FRACTIONS = ("dropout", "positive_share")


def make_config(kind: str, overrides: dict | None = None):
    """The kind's hyper-parameters with `overrides` ({name: value or text}) applied and checked."""
    cls = CONFIGS[kind]
    defaults = cls()
    values = {}
    for name, value in (overrides or {}).items():
        if not hasattr(defaults, name):
            names = ", ".join(f.name for f in dataclasses.fields(cls))
            raise InputError(f"the {kind} head has no setting {name!r} (its settings: {names})")
        wanted = type(getattr(defaults, name))
        try:
            values[name] = wanted(float(value)) if wanted is float else int(str(value).strip())
        except (TypeError, ValueError):
            raise InputError(f"{name}={value!r} is not {'a number' if wanted is float else 'a whole number'}") from None
    config = cls(**values)
    if kind == NETVLAD and config.vocabulary % 2:
        raise InputError(f"vocabulary={config.vocabulary} must be even (half the clusters pool before the time, half after)")
    for name, value in dataclasses.asdict(config).items():
        allowed = value >= 0 if name in ZERO_ALLOWED else value > 0
        if not allowed or (name in FRACTIONS and not value < 1):
            raise InputError(f"{name}={value} is out of range ({'>= 0' if name in ZERO_ALLOWED else '> 0'}"
                             f"{' and < 1' if name in FRACTIONS else ''})")
    return config


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


# ---------------------------------------------------------------- NetVLAD++ ---------------------

class NetVLAD(nn.Module):
    """NetVLAD pooling of (batch, rows, D) to (batch, D * clusters), as SoccerNet's netvlad.py:
    rows L2-normalised, soft-assigned to clusters, residuals to learned centres summed, each
    cluster's sum L2-normalised, then the flattened (D-major) vector L2-normalised."""

    def __init__(self, clusters: int, dimension: int):
        super().__init__()
        self.clusters = clusters
        self.dimension = dimension
        scale = 1 / math.sqrt(dimension)
        self.assignment = nn.Parameter(scale * torch.randn(dimension, clusters))
        self.centres = nn.Parameter(scale * torch.randn(1, dimension, clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, p=2, dim=2)
        weights = torch.softmax(x @ self.assignment, dim=2)  # (B, T, K)
        residuals = torch.einsum("btk,btd->bdk", weights, x) - weights.sum(dim=1, keepdim=True) * self.centres
        residuals = F.normalize(residuals, p=2, dim=1)
        return F.normalize(residuals.reshape(len(x), self.dimension * self.clusters), p=2, dim=1)


class NetVLADPlusPlus(nn.Module):
    """(batch, W, width) windows -> (batch, 1 + classes) logits; column 0 is background."""

    def __init__(self, width: int, num_classes: int, window_rows: int, config: NetVLADConfig):
        super().__init__()
        self.window_rows = window_rows
        reduced = config.reduced_width
        self.reduce = nn.Linear(width, reduced) if width != reduced else None
        self.before = NetVLAD(config.vocabulary // 2, reduced)
        self.after = NetVLAD(config.vocabulary // 2, reduced)
        self.dropout = nn.Dropout(config.dropout)
        self.classify = nn.Linear(reduced * (config.vocabulary // 2) * 2, num_classes + 1)

    def reduce_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The per-row linear reduction; applied once per row, it is the same as per window."""
        return self.reduce(rows) if self.reduce is not None else rows

    def pooled_logits(self, reduced_windows: torch.Tensor) -> torch.Tensor:
        half = reduced_windows.shape[1] // 2
        pooled = torch.cat([self.before(reduced_windows[:, :half]), self.after(reduced_windows[:, half:])], dim=1)
        return self.classify(self.dropout(pooled))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.pooled_logits(self.reduce_rows(windows))


def netvlad_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SoccerNet's loss: binary cross-entropy of the sigmoid outputs, averaged over windows and outputs
    (computed from logits, which is the same value without log(0))."""
    return F.binary_cross_entropy_with_logits(logits, targets)


# ---------------------------------------------------------------- dense anchors -----------------

def _double_convolution(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(channels_in, channels_out, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(channels_out, channels_out, 3, padding=1), nn.ReLU())


class DenseAnchors(nn.Module):
    """(batch, T, width) rows -> (confidence logits, displacement in [-1, 1]), each (batch, T, classes).

    T must be a multiple of 2 ** (levels - 1). `mean` and `std` standardise the rows; they are
    set from the training features and saved with the weights.
    """

    def __init__(self, width: int, num_classes: int, levels: int, config: DenseConfig):
        super().__init__()
        self.levels = levels
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        channels = [min(config.max_channels, config.hidden * 2 ** level) for level in range(levels)]
        self.project = nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU())
        self.down = nn.ModuleList(_double_convolution(config.hidden if level == 0 else channels[level - 1], channels[level])
                                  for level in range(levels))
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(channels[level + 1], channels[level], 2, stride=2)
                                      for level in range(levels - 1))
        self.up = nn.ModuleList(_double_convolution(channels[level], channels[level]) for level in range(levels - 1))
        self.confidence = nn.Conv1d(channels[0], num_classes, 3, padding=1)
        self.displacement = nn.Conv1d(channels[0], num_classes, 3, padding=1)

    @property
    def row_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, rows: torch.Tensor):
        x = self.project((rows - self.mean) / self.std).transpose(1, 2)  # (B, hidden, T)
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool1d(x, 2) if level else x)
            skips.append(x)
        for level in reversed(range(self.levels - 1)):
            x = self.up[level](F.relu(self.upsample[level](x)) + skips[level])
        return self.confidence(x).transpose(1, 2), torch.tanh(self.displacement(x)).transpose(1, 2)


def dense_loss(confidence_logits, displacement, confidence_targets, displacement_targets, displacement_mask,
               row_mask, positive_weight, negative_weight, config: DenseConfig):
    """(total, confidence part, displacement part).

    row_mask (batch, T): 1 for real rows, 0 for padding; the confidence part is the weighted
    binary cross-entropy averaged over real rows and classes, the displacement part the Huber
    loss averaged over the (row, class) pairs that have a displacement target.
    """
    weights = torch.where(confidence_targets > 0.5, positive_weight, negative_weight) * row_mask[..., None]
    cross_entropy = F.binary_cross_entropy_with_logits(confidence_logits, confidence_targets, reduction="none")
    confidence_part = (weights * cross_entropy).sum() / (row_mask.sum() * confidence_targets.shape[-1]).clamp(min=1)
    mask = displacement_mask * row_mask[..., None]
    huber = F.huber_loss(displacement, displacement_targets, reduction="none", delta=config.huber_delta) / config.huber_delta
    displacement_part = (huber * mask).sum() / mask.sum().clamp(min=1)
    return confidence_part + config.displacement_weight * displacement_part, confidence_part, displacement_part


def build_model(kind: str, config, width: int, num_classes: int, rate: float) -> nn.Module:
    if kind == NETVLAD:
        return NetVLADPlusPlus(width, num_classes, config.window_rows(rate), config)
    return DenseAnchors(width, num_classes, config.levels(rate), config)


# ---------------------------------------------------------------- per-row scores ----------------

INFERENCE_BATCH = 256  # windows per forward pass when scoring a half with NetVLAD++, as SoccerNet


def pad_rows(rows: torch.Tensor, multiple: int) -> torch.Tensor:
    """(T, width) -> (T', width), T' the next multiple, the last row repeated (as the video's edge is)."""
    missing = -len(rows) % multiple
    return torch.cat([rows, rows[-1:].expand(missing, -1)]) if missing else rows


@torch.no_grad()
def row_scores(model: nn.Module, rows: torch.Tensor, row_times, displacement_radius: float | None = None):
    """A half's candidate events: (times, confidences), each (rows, classes) NumPy float64.

    NetVLAD++ scores each row from the window centred on it (rows t - W//2 ... t - W//2 + W - 1,
    clamped) and places the candidate at the row's time. Dense anchors score every row at once
    and move each candidate by its predicted displacement, kept inside the half's first and last
    row times. The model must be in eval mode; `rows` (rows, width) on the model's device.
    """
    row_times = np.asarray(row_times, dtype=np.float64)
    count = len(rows)
    if isinstance(model, NetVLADPlusPlus):
        reduced = model.reduce_rows(rows)
        index = torch.as_tensor(centred_window_rows(count, model.window_rows), device=rows.device)
        parts = [torch.sigmoid(model.pooled_logits(reduced[index[start:start + INFERENCE_BATCH]]))[:, 1:]
                 for start in range(0, count, INFERENCE_BATCH)]
        confidences = torch.cat(parts).double().cpu().numpy()
        return np.repeat(row_times[:, None], confidences.shape[1], axis=1), confidences
    logits, displacement = model(pad_rows(rows, model.row_multiple)[None])
    confidences = torch.sigmoid(logits[0, :count]).double().cpu().numpy()
    moved = row_times[:, None] + displacement[0, :count].double().cpu().numpy() * displacement_radius
    return np.clip(moved, row_times[0], row_times[-1]), confidences
