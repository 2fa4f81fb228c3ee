"""The model bundle contract: what `tsf-export` writes and `tsf-extract` reads (docs/design.md).

A bundle is a directory holding `model.onnx`, `bundle.json` and optionally TensorRT engines under
`engines/` and quantized models (`model.int8.onnx`). This module owns the names and the
validation, so the writer (tsf.export) and the reader (the runtime) cannot drift apart. It uses only the standard library: `json` for the
metadata, `hashlib` for the ONNX checksum (the bundle id), `os`/`pathlib` for the paths. It never
opens the ONNX itself (no `onnx` import): loading a bundle must stay cheap and Paddle/onnx-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

BUNDLE_FORMAT = "tsf-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
ONNX_FILE = "model.onnx"
ENGINES_DIR = "engines"
ONNX_OPSET = 17
INPUT_NAME = "video"
OUTPUT_NAMES = ("features", "logits", "event_times")
BUNDLE_ID_HEX_DIGITS = 16

# The reference window (docs/reference.md §3): 16 frames over 5 s, one row per second.
WINDOW = {"frames": 16, "seconds": 5.0, "stride_seconds": 1.0}

ARCHITECTURE_KEYS = ("frames", "depth", "width", "heads", "classes", "image_size", "patch_size", "mlp_ratio")


def reference_preprocessing(image_size: int = 224) -> dict:
    """The reference preprocessing (docs/reference.md §4) as bundle.json records it."""
    return {
        "channel_order": "RGB",
        "value_scale": 1.0 / 255.0,
        "mean": [0, 0, 0],
        "std": [1, 1, 1],
        "short_side": image_size,
        "resize": "bilinear-half-pixel-no-antialias",
        "crop": "center",
        "crop_size": image_size,
        "crop_offset_rounding": "half-even",
        "layout": "NCTHW",
    }


def tsf_home() -> Path:
    """`$TSF_HOME`, defaulting to `${XDG_DATA_HOME:-~/.local/share}/tsf`."""
    if os.environ.get("TSF_HOME"):
        return Path(os.environ["TSF_HOME"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data_home).expanduser() / "tsf"


def default_bundle_dir() -> Path:
    """Where `tsf-export` puts a bundle without `-o` and where `tsf-extract` looks without `--model`."""
    return tsf_home() / "bundles" / "default"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_id_from_sha256(onnx_sha256: str) -> str:
    return onnx_sha256[:BUNDLE_ID_HEX_DIGITS]


@dataclass(frozen=True)
class Bundle:
    """A validated bundle. Paths in `meta` (engine files, timing caches) are relative to `dir`."""

    dir: Path
    meta: dict
    onnx_path: Path
    architecture: dict
    class_names: tuple[str, ...]
    bundle_id: str
    random_init: bool
    engines: list[dict] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.architecture["frames"]

    @property
    def image_size(self) -> int:
        return self.architecture["image_size"]

    @property
    def width(self) -> int:
        return self.architecture["width"]

    @property
    def num_classes(self) -> int:
        return self.architecture["classes"]

    def path(self, relative: str) -> Path:
        """A file named in bundle.json (e.g. an engine's `file`), as a path."""
        return self.dir / relative


def _relative_inside(name, what: str, json_path: Path) -> str:
    # bundle.json names files relative to the bundle; refuse anything that would point outside it.
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
        raise InputError(f"{json_path}: {what} must be a file name inside the bundle, got {name!r}")
    return name


def load_bundle(directory: str | os.PathLike, verify: bool = False) -> Bundle:
    """Read and validate a bundle directory; every problem is a one-line `InputError`.

    `verify=True` also checks the ONNX file against the sha256 in bundle.json (reads the whole file).
    """
    bundle_dir = Path(directory).expanduser()
    if not bundle_dir.exists():
        raise InputError(f"no model bundle at {bundle_dir} (make one with tsf-export)")
    if not bundle_dir.is_dir():
        raise InputError(f"{bundle_dir} is not a model bundle directory")
    json_path = bundle_dir / BUNDLE_JSON
    if not json_path.is_file():
        raise InputError(f"{bundle_dir} is not a tsf model bundle: {BUNDLE_JSON} is missing")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{json_path} cannot be read as JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{json_path} is not a tsf bundle description (format is not {BUNDLE_FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{json_path}: bundle format_version {version!r} is not supported (this tsf reads "
            f"{FORMAT_VERSION}); re-export the bundle with this version's tsf-export"
        )

    def section(name: str) -> dict:
        value = meta.get(name)
        if not isinstance(value, dict):
            raise InputError(f"{json_path} is incomplete: section {name!r} is missing")
        return value

    architecture = section("architecture")
    for key in ARCHITECTURE_KEYS:
        value = architecture.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{json_path} is incomplete: architecture.{key} is missing or not a positive integer")
    section("preprocessing")
    section("window")
    weights = section("weights")
    if not isinstance(weights.get("random_init"), bool):
        raise InputError(f"{json_path} is incomplete: weights.random_init is missing")
    onnx_meta = section("onnx")
    onnx_file = _relative_inside(onnx_meta.get("file"), "onnx.file", json_path)
    onnx_sha256 = onnx_meta.get("sha256")
    if not isinstance(onnx_sha256, str) or len(onnx_sha256) != 64:
        raise InputError(f"{json_path} is incomplete: onnx.sha256 is missing")

    class_names = meta.get("class_names")
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise InputError(f"{json_path} is incomplete: class_names is missing or not a list of names")
    if len(class_names) != architecture["classes"]:
        raise InputError(
            f"{json_path}: {len(class_names)} class names for {architecture['classes']} classes"
        )

    engines = meta.get("engines", [])
    if not isinstance(engines, list) or not all(isinstance(e, dict) for e in engines):
        raise InputError(f"{json_path}: engines must be a list of objects")
    for engine in engines:
        _relative_inside(engine.get("file"), "an engine's file", json_path)
        if engine.get("timing_cache") is not None:
            _relative_inside(engine["timing_cache"], "an engine's timing_cache", json_path)

    quantized = meta.get("quantized", {})
    if not isinstance(quantized, dict) or not all(isinstance(e, dict) for e in quantized.values()):
        raise InputError(f"{json_path}: quantized must map precisions to objects")
    for precision, entry in quantized.items():
        name = _relative_inside(entry.get("file"), f"quantized.{precision}.file", json_path)
        if not (bundle_dir / name).is_file():
            raise InputError(f"{bundle_dir} is incomplete: {name} (its {precision} model) is missing")

    onnx_path = bundle_dir / onnx_file
    if not onnx_path.is_file():
        raise InputError(f"{bundle_dir} is incomplete: {onnx_file} is missing")
    if verify and sha256_file(onnx_path) != onnx_sha256:
        raise InputError(f"{onnx_path} does not match the sha256 in {json_path} (modified or corrupt)")

    return Bundle(
        dir=bundle_dir,
        meta=meta,
        onnx_path=onnx_path,
        architecture=dict(architecture),
        class_names=tuple(class_names),
        bundle_id=bundle_id_from_sha256(onnx_sha256),
        random_init=weights["random_init"],
        engines=list(engines),
    )
