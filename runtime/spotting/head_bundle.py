"""A head bundle: one trained spotting head in a folder, and spotting events with it.

    HEAD/head.json            format, architecture (kind + hyper-parameters), class names, the
                              features it was trained on (bundle id, width, rows per second),
                              how it was trained (epochs, validation score, seed, data)
    HEAD/weights.safetensors  the weights (and the dense head's feature standardisation)

A head runs only on features like those it was trained on: another feature bundle, width or rate
is a one-line error (`check_features`). Spotting a half: per-row candidates from the model
(`head_models.row_scores`), then per class the greedy non-maximum suppression of `tsf-spot`
(`spot.nms_peaks`) with the head's window. Needs torch and safetensors (the `torch` extra).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ... import __version__
from ..errors import InputError
from ..files import write_files_atomically
from .head_models import build_model, config_dict, make_config, row_scores
from .head_targets import DENSE, KINDS
from .spot import Spot, nms_peaks

HEAD_FILE = "head.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "tsf-spotting-head"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureKind:
    """What a head's input rows are: which feature bundle made them, their width and rows per second."""

    bundle_id: str
    width: int
    rate: float

    def to_json(self) -> dict:
        return {"bundle_id": self.bundle_id, "width": self.width, "rate": self.rate}

    def mismatch(self, other: "FeatureKind") -> str | None:
        """What differs from `other` (this being what a head expects), in words; None if nothing."""
        if other.bundle_id != self.bundle_id:
            return f"feature bundle {other.bundle_id!r}, not {self.bundle_id!r}"
        if other.width != self.width:
            return f"{other.width}-wide features, not {self.width}"
        if not np.isclose(other.rate, self.rate, rtol=0, atol=1e-9):
            return f"{other.rate:g} rows per second, not {self.rate:g}"
        return None


@dataclass
class Head:
    kind: str
    config: object  # NetVLADConfig | DenseConfig
    class_names: tuple[str, ...]
    features: FeatureKind
    model: torch.nn.Module
    training: dict = field(default_factory=dict)
    source: str = ""

    @classmethod
    def new(cls, kind: str, config, class_names, features: FeatureKind) -> "Head":
        model = build_model(kind, config, features.width, len(class_names), features.rate)
        return cls(kind, config, tuple(class_names), features, model)

    @property
    def nms_window_seconds(self) -> float:
        return self.config.nms_window_seconds

    def check_features(self, features: FeatureKind, source: str) -> None:
        problem = self.features.mismatch(features)
        if problem:
            raise InputError(f"{source} has {problem}: head {self.source or 'here'} was trained on "
                             f"{self.features.bundle_id!r} features, {self.features.width} wide, "
                             f"{self.features.rate:g} per second")

    def candidates(self, rows: np.ndarray, row_times: np.ndarray):
        """(times, confidences), each (rows, classes), on the model's device; eval mode is set here."""
        self.model.eval()
        device = next(self.model.parameters()).device
        tensor = torch.as_tensor(np.asarray(rows, dtype=np.float32), device=device)
        radius = self.config.displacement_radius if self.kind == DENSE else None
        return row_scores(self.model, tensor, row_times, radius)

    def spot(self, rows: np.ndarray, row_times: np.ndarray, half: int, nms_window: float | None = None,
             threshold: float = 0.0) -> list[Spot]:
        """The spotted events of one half, in time order."""
        times, confidences = self.candidates(rows, row_times)
        return spots_from_candidates(times, confidences, self.class_names, half,
                                     self.nms_window_seconds if nms_window is None else nms_window, threshold)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "tsf_version": __version__,
                "architecture": {"kind": self.kind, **config_dict(self.config)},
                "class_names": list(self.class_names), "features": self.features.to_json(),
                "training": self.training}


def spots_from_candidates(times, confidences, class_names, half: int, nms_window: float,
                          threshold: float = 0.0) -> list[Spot]:
    """Per class, greedy NMS over the candidates; spots in time order (ties: class order)."""
    spots = []
    for c, label in enumerate(class_names):
        for k in nms_peaks(confidences[:, c], times[:, c], nms_window, threshold):
            spots.append(Spot(half, max(float(times[k, c]), 0.0), label, float(confidences[k, c])))
    order = {label: c for c, label in enumerate(class_names)}
    spots.sort(key=lambda s: (s.half, s.seconds, order[s.label]))
    return spots


def head_files(head: Head) -> dict[str, bytes]:
    state = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in head.model.state_dict().items()}
    return {HEAD_FILE: (json.dumps(head.to_json(), indent=2) + "\n").encode(),
            WEIGHTS_FILE: save_safetensors(state, metadata={"format": FORMAT})}


def save_head(head: Head, folder) -> Path:
    """Write (or replace) the head bundle in `folder`: both files or neither."""
    folder = Path(folder)
    write_files_atomically({folder / name: data for name, data in head_files(head).items()}, overwrite=True)
    return folder


def load_head(folder) -> Head:
    """Read a head bundle; every problem is a one-line InputError naming the folder."""
    folder = os.fspath(folder)
    description = os.path.join(folder, HEAD_FILE)
    if not os.path.isfile(description):
        raise InputError(f"{folder} is not a head bundle (no {HEAD_FILE}; tsf-spot train writes RUN/head)")
    try:
        with open(description, encoding="utf-8") as f:
            document = json.load(f)
        if document.get("format") != FORMAT:
            raise InputError(f"{description} is not a tsf spotting head (format {document.get('format')!r})")
        if document.get("version") != FORMAT_VERSION:
            raise InputError(f"{description} has head format version {document.get('version')!r}; "
                             f"this tsf reads version {FORMAT_VERSION}")
        architecture = dict(document["architecture"])
        kind = architecture.pop("kind")
        if kind not in KINDS:
            raise InputError(f"{description}: unknown head kind {kind!r} (known: {', '.join(KINDS)})")
        config = make_config(kind, architecture)
        features = FeatureKind(str(document["features"]["bundle_id"]), int(document["features"]["width"]),
                               float(document["features"]["rate"]))
        class_names = tuple(str(name) for name in document["class_names"])
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read head description {description} ({type(exc).__name__}: {exc})") from None
    head = Head.new(kind, config, class_names, features)
    head.training = document.get("training", {})
    head.source = folder
    weights = os.path.join(folder, WEIGHTS_FILE)
    try:
        with open(weights, "rb") as f:
            state = load_safetensors(f.read())
        head.model.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load head weights {weights} ({reason})") from None
    head.model.eval()
    return head
