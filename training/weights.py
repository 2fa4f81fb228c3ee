"""Reading, strictly loading and writing reference-layout `.pdparams` files.

A `.pdparams` is a pickle of `structured name -> numpy array` (plus the bookkeeping key
`StructuredToParameterName@@`). Unpickling runs code: weights must come from a trusted source.

A checkpoint tsf writes also carries, under the key `tsf@@model`, what the tensors cannot say: the
architecture it was trained with (heads included: the shapes do not give the head count) and its
class names. The reference's loaders ignore a key that names no parameter, as they ignore the
bookkeeping key, so such a file still loads there; `read_checkpoint` returns the record.

Two explicit paths:
- `load_reference_weights`: a file that *is* this model (reference release, tsf checkpoint).
  Every missing, unexpected or mis-shaped key is an error naming all of them. The reference
  skipped such keys silently and ran a wrong file with random weights.
- `load_starting_point`: a file to *fine-tune from* (Kinetics-400 16-frame weights): a head of
  another class count is dropped, `time_embed` is resampled to our frame count, and the report
  says what was done. The backbone must still match exactly.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field

import numpy as np

from .files import write_atomically
from .model import TimeSformerConfig

BOOKKEEPING_KEY = "StructuredToParameterName@@"
MODEL_RECORD_KEY = "tsf@@model"
HEAD_PREFIX = "head."


class WeightsError(ValueError):
    """A weights file that cannot be used; the message is one line naming the problem."""


@dataclass(frozen=True)
class ModelRecord:
    """What a model is beyond its tensors: the architecture it was built with and its class names."""

    config: TimeSformerConfig
    class_names: tuple[str, ...]

    def to_json(self) -> dict:
        return {"architecture": self.config.to_dict(), "class_names": list(self.class_names)}

    @classmethod
    def from_json(cls, value, where: str) -> "ModelRecord":
        try:
            config = TimeSformerConfig(**value["architecture"])
            names = tuple(str(n) for n in value["class_names"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{where}: the model record is damaged ({type(exc).__name__}: {exc})") from None
        if len(names) != config.num_classes:
            raise WeightsError(f"{where}: the model record names {len(names)} classes for {config.num_classes}")
        return cls(config, names)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], ModelRecord | None]:
    """Unpickle a weights file: `name -> float32/float64 ndarray` (bookkeeping key dropped), and the
    model record a tsf checkpoint carries (None in a reference file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f"{path} is a directory, not a .pdparams weights file")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:  # pickle raises many types on garbage; all mean "not a weights pickle"
        raise WeightsError(f"{path} is not a .pdparams weights pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} is not a .pdparams weights pickle (holds a {type(obj).__name__}, not a dict)")
    record = ModelRecord.from_json(obj[MODEL_RECORD_KEY], path) if MODEL_RECORD_KEY in obj else None
    state = {}
    for name, value in obj.items():
        if name in (BOOKKEEPING_KEY, MODEL_RECORD_KEY):
            continue
        array = np.asarray(value)
        if not isinstance(name, str) or array.dtype.kind not in "fiu":
            raise WeightsError(f"{path} is not a .pdparams weights pickle (entry {name!r} is not a numeric array)")
        state[name] = array
    if not state:
        raise WeightsError(f"{path} holds no tensors")
    return state, record


def read_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a weights file (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


def non_finite_tensors(state: dict[str, np.ndarray]) -> list[str]:
    """`name (n NaN, m inf)` for every tensor holding a value that is not a finite number."""
    found = []
    for name, array in state.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            nan = int(np.isnan(array).sum())
            found.append(f"{name} ({nan} NaN, {int(array.size - np.isfinite(array).sum()) - nan} inf)")
    return found


_BLOCK_RE = re.compile(r"^backbone\.blocks\.(\d+)\.")


# The tensors the architecture is read from, with their rank and layout (docs/reference.md §2).
ARCHITECTURE_TENSORS = {
    "backbone.cls_token": (3, "[1, 1, width]"),
    "backbone.patch_embed.proj.weight": (4, "[width, 3, patch, patch]"),
    "backbone.pos_embed": (3, "[1, 1 + patches, width]"),
    "backbone.time_embed": (3, "[1, frames, width]"),
    "head.fc.weight": (2, "[width, classes]"),
    "backbone.blocks.0.mlp.fc1.weight": (2, "[width, mlp_ratio * width]"),
}


def infer_config(state: dict[str, np.ndarray], heads: int | None = None) -> TimeSformerConfig:
    """Architecture from a state dict: depth from the blocks, width/patch/frames/classes from shapes.
    A tensor of the wrong rank is a `WeightsError` naming it and the layout it should have."""

    def shape(key, optional=False):
        if key not in state:
            if optional:
                return None
            raise WeightsError(f"cannot infer the architecture: key {key} is missing")
        rank, layout = ARCHITECTURE_TENSORS[key]
        found = tuple(state[key].shape)
        if len(found) != rank or 0 in found:
            raise WeightsError(f"{key} has shape {list(found)}, expected {layout}")
        return found

    width = shape("backbone.cls_token")[-1]
    patch = shape("backbone.patch_embed.proj.weight")[-1]
    tokens = shape("backbone.pos_embed")[1]
    grid = int(round((tokens - 1) ** 0.5))
    if grid * grid != tokens - 1:
        raise WeightsError(f"backbone.pos_embed has {tokens} tokens, not 1 + a square number of patches")
    frames = shape("backbone.time_embed")[1]
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_RE.match(k))}
    depth = max(blocks) + 1 if blocks else 0
    head = shape("head.fc.weight", optional=True)
    classes = head[-1] if head else TimeSformerConfig.num_classes
    fc1 = shape("backbone.blocks.0.mlp.fc1.weight", optional=True)
    mlp_ratio = fc1[1] // width if fc1 else 4
    if heads is None:
        if width % 64:
            raise WeightsError(f"width {width} is not a multiple of 64; pass the number of heads explicitly")
        heads = width // 64
    try:
        return TimeSformerConfig(
            frames=frames, depth=depth, width=width, heads=heads, image_size=grid * patch,
            patch_size=patch, num_classes=classes, mlp_ratio=mlp_ratio,
        )
    except ValueError as exc:
        raise WeightsError(f"inconsistent architecture in weights: {exc}") from None


def expected_shapes(model) -> dict[str, tuple]:
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def _format_problems(missing, unexpected, misshaped) -> str:
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"{k} {list(s)}" for k, s in missing))
    if unexpected:
        parts.append("unexpected " + ", ".join(f"{k} {list(s)}" for k, s in unexpected))
    if misshaped:
        parts.append("mis-shaped " + ", ".join(f"{k} (expected {list(e)}, got {list(a)})" for k, e, a in misshaped))
    return "; ".join(parts)


def check_state(model, state: dict[str, np.ndarray]) -> None:
    """Raise `WeightsError` naming every missing, unexpected and mis-shaped key."""
    expected = expected_shapes(model)
    missing = [(k, s) for k, s in expected.items() if k not in state]
    unexpected = [(k, state[k].shape) for k in state if k not in expected]
    misshaped = [(k, s, state[k].shape) for k, s in expected.items() if k in state and tuple(state[k].shape) != s]
    if missing or unexpected or misshaped:
        raise WeightsError("weights do not match the model: " + _format_problems(missing, unexpected, misshaped))


def _assign(model, state: dict[str, np.ndarray]) -> None:
    params = model.state_dict()
    for name, array in state.items():
        param = params[name]
        param.set_value(np.ascontiguousarray(array, dtype=np.float32).astype(str(param.dtype).split(".")[-1]))


def load_reference_weights(model, state: dict[str, np.ndarray]) -> None:
    """Load a complete reference-layout state dict, refusing any mismatch."""
    check_state(model, state)
    _assign(model, state)


@dataclass
class StartingPointReport:
    dropped: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        if self.dropped:
            lines.append("dropped (head of another class count): " + ", ".join(self.dropped))
        if self.resampled:
            lines.append("resampled to the model's frame count: " + ", ".join(self.resampled))
        if self.initialised:
            lines.append("freshly initialised: " + ", ".join(self.initialised))
        return "\n".join(lines) or "all weights loaded as they are"


def resample_time_embed(time_embed: np.ndarray, frames: int) -> np.ndarray:
    """Linear interpolation of a [1, T, D] time embedding to `frames` steps (half-pixel centres)."""
    src = time_embed.shape[1]
    positions = (np.arange(frames) + 0.5) * src / frames - 0.5
    positions = np.clip(positions, 0, src - 1)
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = (positions - lo)[None, :, None]
    return (time_embed[:, lo] * (1 - w) + time_embed[:, hi] * w).astype(time_embed.dtype)


def load_starting_point(model, state: dict[str, np.ndarray]) -> StartingPointReport:
    """Load fine-tuning starting weights: backbone strictly, head only if its shapes match."""
    report = StartingPointReport()
    expected = expected_shapes(model)
    state = dict(state)
    te = "backbone.time_embed"
    if te in state and te in expected and tuple(state[te].shape) != expected[te]:
        if state[te].ndim != 3 or state[te].shape[2] != expected[te][2]:
            raise WeightsError(f"{te} has shape {list(state[te].shape)}, expected [1, frames, {expected[te][2]}]")
        state[te] = resample_time_embed(state[te], expected[te][1])
        report.resampled.append(f"{te} {list(state[te].shape)}")
    for key in [k for k in state if k.startswith(HEAD_PREFIX)]:
        if key not in expected or tuple(state[key].shape) != expected[key]:
            report.dropped.append(f"{key} {list(state[key].shape)}")
            del state[key]
    for key in expected:
        if key.startswith(HEAD_PREFIX) and key not in state:
            report.initialised.append(key)
            state[key] = model.state_dict()[key].numpy()
    check_state(model, state)
    _assign(model, state)
    return report


def state_of(model) -> dict[str, np.ndarray]:
    return {name: p.numpy() for name, p in model.state_dict().items()}


def save_pdparams(model_or_state, path: str | os.PathLike, record: ModelRecord | None = None) -> None:
    """Write the reference layout (pickle protocol 4 of name -> float32 array), atomically; with
    `record`, the model record beside the tensors (see the module's docstring)."""
    state = model_or_state if isinstance(model_or_state, dict) else state_of(model_or_state)
    contents = {k: np.asarray(v) for k, v in state.items()}
    if record is not None:
        contents[MODEL_RECORD_KEY] = record.to_json()

    def write(tmp):
        with open(tmp, "wb") as f:
            pickle.dump(contents, f, protocol=4)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(os.fspath(path), write)
