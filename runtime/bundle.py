"""The model bundle contract: what `tsf-export` writes and `tsf-extract` reads (docs/design.md).

A bundle is a directory holding `model.onnx`, `bundle.json`, `weights.safetensors` (bundles
exported before it existed lack it) and optionally TensorRT engines under `engines/` and
quantized models (`model.int8.onnx`). This module owns the names and the validation, so the
writer (tsf.export) and the reader (the runtime) cannot drift apart. Loading verifies the bundle:
every file bundle.json names with a sha256 is hashed (once: the digest is cached by size and
times, in the bundle where it is writable, else under TSF_HOME), and the ONNX graph's input and
output shapes are read and matched against the architecture. It uses only the standard library:
`json`, `hashlib`, and a few lines of protobuf wire-format reading for the ONNX shapes, so that
loading a bundle stays cheap and Paddle/onnx-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .errors import InputError
from .files import usual_file_mode

BUNDLE_FORMAT = "tsf-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
ONNX_FILE = "model.onnx"
# The weights under the reference's names and layout (docs/reference.md §2), float32: what the
# ONNX was converted from, for engines that build the model themselves (the torch engine).
WEIGHTS_FILE = "weights.safetensors"
ENGINES_DIR = "engines"
ONNX_OPSET = 17
INPUT_NAME = "video"
OUTPUT_NAMES = ("features", "logits", "event_times")
BUNDLE_ID_HEX_DIGITS = 16
VERIFIED_CACHE = ".tsf-verified.json"  # relative file -> size, times and sha256 when last hashed

CACHE_RECORDS = "records.json"  # in $TSF_HOME/cache/<bundle id>/: what a read-only bundle cannot hold

ARCHITECTURE_KEYS = ("frames", "depth", "width", "heads", "classes", "image_size", "patch_size", "mlp_ratio")


@dataclass(frozen=True)
class Window:
    """What one row of features looks at: `frames` frames spread over `seconds`; consecutive rows
    are `stride_seconds` apart unless a run asks for another rate (rows per second)."""

    frames: int
    seconds: Fraction
    stride_seconds: Fraction

    @classmethod
    def reference(cls, frames: int = 16) -> "Window":
        """The reference's (docs/reference.md §3): `frames` frames over 5 s, one row per second."""
        return cls(frames, Fraction(5), Fraction(1))


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded RGB frame becomes the model's input (docs/reference.md §4), as bundle.json says:
    resize so the short side is `short_side` (bilinear, half-pixel centres, no antialiasing), crop
    `crop_size` square from the centre (offset rounded half to even), then per channel
    `(value * value_scale - mean) / std`, channels in `channel_order`. The runtime runs exactly
    this; a bundle.json asking for anything else is refused when it is loaded."""

    short_side: int
    crop_size: int
    value_scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str  # "RGB" or "BGR"

    @classmethod
    def reference(cls, image_size: int = 224) -> "Preprocessing":
        """The reference's (docs/reference.md §4): what `reference_preprocessing` writes into bundle.json."""
        return cls(image_size, image_size, 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB")

    @property
    def normalises(self) -> bool:
        """False when mean is 0 and std is 1 (the reference's): only the value scale applies."""
        return any(self.mean) or any(v != 1 for v in self.std)


# What the runtime's preprocessing can do besides its numbers: anything else is refused.
SUPPORTED_PREPROCESSING = {"resize": "bilinear-half-pixel-no-antialias", "crop": "center",
                           "crop_offset_rounding": "half-even", "layout": "NCTHW"}
CHANNEL_ORDERS = ("RGB", "BGR")


def reference_window(frames: int = 16) -> dict:
    """The reference window as bundle.json records it."""
    window = Window.reference(frames)
    return {"frames": window.frames, "seconds": float(window.seconds), "stride_seconds": float(window.stride_seconds)}


def reference_preprocessing(image_size: int = 224) -> dict:
    """The reference preprocessing (docs/reference.md §4) as bundle.json records it."""
    spec = Preprocessing.reference(image_size)
    return {"channel_order": spec.channel_order, "value_scale": spec.value_scale, "mean": list(spec.mean),
            "std": list(spec.std), "short_side": spec.short_side, "crop_size": spec.crop_size,
            **SUPPORTED_PREPROCESSING}


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


def bundle_id(onnx_sha256: str, class_names) -> str:
    """What a bundle is to its outputs: the model (its ONNX bytes) and the names of its classes, which
    give the heads their meaning. Computed whenever a bundle is loaded, so bundles written by older
    versions (whose id was the ONNX sha256 alone) load unchanged and get this id."""
    identity = json.dumps({"onnx_sha256": onnx_sha256, "class_names": list(class_names)}, separators=(",", ":"))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:BUNDLE_ID_HEX_DIGITS]


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
    window: Window
    preprocessing: Preprocessing
    engines: list[dict] = field(default_factory=list)
    weights_path: Path | None = None  # WEIGHTS_FILE; None in bundles exported before it existed

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


def load_bundle(directory: str | os.PathLike) -> Bundle:
    """Read, validate and verify a bundle directory; every problem is a one-line `InputError`
    naming the file (bundle.json, or the file that disagrees with it)."""
    bundle_dir = Path(directory).expanduser()
    if not bundle_dir.exists():
        if bundle_dir == default_bundle_dir():
            raise InputError(f"no model bundle at {bundle_dir} (the default): `tsf-export WEIGHTS.pdparams` puts one "
                             "there, or pass --model BUNDLE_DIR (make demo's is demo-out/bundle)")
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
    preprocessing_section, window_section = section("preprocessing"), section("window")
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

    weights_file = None
    if meta.get("safetensors") is not None:  # optional: older bundles lack it
        weights_meta = section("safetensors")
        weights_file = _relative_inside(weights_meta.get("file"), "safetensors.file", json_path)
        if not isinstance(weights_meta.get("sha256"), str) or len(weights_meta["sha256"]) != 64:
            raise InputError(f"{json_path} is incomplete: safetensors.sha256 is missing")
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
    verify_files(bundle_dir, meta, json_path)
    check_model_shapes(onnx_path, architecture)
    # After the ONNX: where bundle.json contradicts itself, the model's own shapes say which side is wrong.
    preprocessing = _read_preprocessing(preprocessing_section, architecture, json_path)
    window = _read_window(window_section, architecture, json_path)

    return Bundle(
        dir=bundle_dir,
        meta=meta,
        onnx_path=onnx_path,
        architecture=dict(architecture),
        class_names=tuple(class_names),
        bundle_id=bundle_id(onnx_sha256, class_names),
        random_init=weights["random_init"],
        window=window,
        preprocessing=preprocessing,
        engines=list(engines),
        weights_path=bundle_dir / weights_file if weights_file else None,
    )


def _read_window(section: dict, architecture: dict, json_path: Path) -> Window:
    def number(key: str) -> Fraction:
        value = section.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InputError(f"{json_path}: window.{key} must be a positive number, got {value!r}")
        return Fraction(value).limit_denominator(1000)

    frames = section.get("frames")
    if frames != architecture["frames"]:
        raise InputError(f"{json_path}: window.frames is {frames!r}, but the model takes {architecture['frames']} "
                         "frames (architecture.frames)")
    return Window(frames, number("seconds"), number("stride_seconds"))


def _read_preprocessing(section: dict, architecture: dict, json_path: Path) -> Preprocessing:
    for key, supported in SUPPORTED_PREPROCESSING.items():
        if section.get(key) != supported:
            raise InputError(f"{json_path}: preprocessing.{key} is {section.get(key)!r}; this tsf runs "
                             f"{supported!r} only")
    if section.get("channel_order") not in CHANNEL_ORDERS:
        raise InputError(f"{json_path}: preprocessing.channel_order is {section.get('channel_order')!r}; this tsf "
                         f"runs {' or '.join(CHANNEL_ORDERS)}")

    def integer(key: str) -> int:
        value = section.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{json_path}: preprocessing.{key} must be a positive integer, got {value!r}")
        return value

    def triple(key: str, positive: bool) -> tuple[float, float, float]:
        value = section.get(key)
        if (not isinstance(value, list) or len(value) != 3 or
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or
                (positive and not all(v > 0 for v in value))):
            raise InputError(f"{json_path}: preprocessing.{key} must be three {'positive ' if positive else ''}"
                             f"numbers, got {value!r}")
        return tuple(float(v) for v in value)

    short_side, crop_size = integer("short_side"), integer("crop_size")
    if crop_size != architecture["image_size"]:
        raise InputError(f"{json_path}: preprocessing.crop_size is {crop_size}, but the model takes "
                         f"{architecture['image_size']}-pixel images (architecture.image_size)")
    if crop_size > short_side:
        raise InputError(f"{json_path}: preprocessing.crop_size {crop_size} is larger than its short_side {short_side}")
    scale = section.get("value_scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise InputError(f"{json_path}: preprocessing.value_scale must be a positive number, got {scale!r}")
    return Preprocessing(short_side, crop_size, float(scale), triple("mean", False), triple("std", True),
                         section["channel_order"])


def named_files(meta: dict) -> dict[str, str]:
    """Every file bundle.json names with a sha256 (relative name -> sha256), wherever it is named:
    the ONNX, and whatever later formats add. The top-level `weights` entry is left out: its file
    is the export's source, kept for provenance, not a file of the bundle."""
    found: dict[str, str] = {}

    def walk(value, top_weights: bool = False):
        if isinstance(value, dict):
            if not top_weights and isinstance(value.get("file"), str) and isinstance(value.get("sha256"), str):
                found[value["file"]] = value["sha256"]
            for key, item in value.items():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for key, value in meta.items():
        walk(value, top_weights=key == "weights")
    return found


def verify_files(bundle_dir: Path, meta: dict, json_path: Path) -> None:
    """Each file bundle.json names with a sha256 exists inside the bundle and has that sha256."""
    cache_path = _verified_cache_path(bundle_dir)
    cache = _read_json(cache_path)
    fresh = {}
    for name, expected in named_files(meta).items():
        _relative_inside(name, "a file", json_path)
        path = bundle_dir / name
        if not path.is_file():
            raise InputError(f"{bundle_dir} is incomplete: {name} is missing")
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        known = cache.get(name)
        digest = known["sha256"] if isinstance(known, dict) and known.get("stamp") == stamp else sha256_file(path)
        if digest != expected:
            raise InputError(f"{path} does not match the sha256 in {json_path} (modified, corrupt or from "
                             "another bundle)")
        fresh[name] = {"stamp": stamp, "sha256": digest}
    if fresh != cache:
        _write_json_quietly(cache_path, fresh)


def _verified_cache_path(bundle_dir: Path) -> Path:
    """In the bundle where it is writable; else one file per bundle path under TSF_HOME."""
    if os.access(bundle_dir, os.W_OK):
        return bundle_dir / VERIFIED_CACHE
    key = hashlib.sha256(os.fsencode(os.path.abspath(bundle_dir))).hexdigest()[:BUNDLE_ID_HEX_DIGITS]
    return tsf_home() / "verified" / f"{key}.json"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json_quietly(path: Path, value: dict) -> None:
    # A cache: failing to write it costs a hash next time, nothing else.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.chmod(temporary, usual_file_mode())  # readable by whoever may read the bundle (mkstemp: 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f)
        os.replace(temporary, path)
    except OSError:
        pass


def check_model_shapes(onnx_path: Path, architecture: dict) -> None:
    """The ONNX graph's input and outputs have the shapes the architecture in bundle.json implies
    (any batch size): video [B, 3, frames, S, S] -> features [B, width], logits and event_times
    [B, classes]."""
    a = architecture
    expected = {INPUT_NAME: (3, a["frames"], a["image_size"], a["image_size"]), "features": (a["width"],),
                "logits": (a["classes"],), "event_times": (a["classes"],)}
    try:
        shapes = onnx_io_shapes(onnx_path)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{onnx_path}: not a readable ONNX model ({e})") from None
    for name, dims in expected.items():
        kind = "input" if name == INPUT_NAME else "output"
        if name not in shapes:
            raise InputError(f"{onnx_path}: the model has no {kind} named {name!r}")
        found = shapes[name]
        if found is None or len(found) != len(dims) + 1 or tuple(found[1:]) != dims:
            shown = "unknown" if found is None else "[" + ", ".join(str(d) for d in found) + "]"
            raise InputError(f"{onnx_path}: {kind} {name} is {shown}, but bundle.json's architecture needs "
                             f"[batch, {', '.join(str(d) for d in dims)}]")


# Field numbers of onnx.proto (ONNX's protobuf schema) that lead to the graph's inputs and outputs.
_MODEL_GRAPH, _GRAPH_INPUT, _GRAPH_OUTPUT = 7, 11, 12
_VALUE_NAME, _VALUE_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE, _DIM_PARAM = 1, 2, 1, 2, 1, 1, 2


def onnx_io_shapes(path: str | os.PathLike) -> dict[str, tuple[int | str, ...] | None]:
    """Graph input and output name -> dimensions (an int, or the name of a symbolic one), read from
    the protobuf wire format; the initializers (the weights) are skipped over, never read."""
    shapes: dict[str, tuple[int | str, ...] | None] = {}
    with open(path, "rb") as f:
        for _, graph in _fields(f, os.fstat(f.fileno()).st_size, _MODEL_GRAPH):
            for _, value_info in _fields(f, graph, _GRAPH_INPUT, _GRAPH_OUTPUT):
                name, dims = None, None
                for number, span in _fields(f, value_info, _VALUE_NAME, _VALUE_TYPE):
                    if number == _VALUE_NAME:
                        name = f.read(span - f.tell()).decode("utf-8", "replace")
                        continue
                    for _, tensor in _fields(f, span, _TYPE_TENSOR):
                        for _, shape in _fields(f, tensor, _TENSOR_SHAPE):
                            dims = [_dimension(f, dim) for _, dim in _fields(f, shape, _SHAPE_DIM)]
                if name is not None:
                    shapes[name] = tuple(dims) if dims is not None else None
    return shapes


def _dimension(f, end: int) -> int | str:
    value: int | str = "?"
    for number, item in _fields(f, end, _DIM_VALUE, _DIM_PARAM, scalars=True):
        value = item if number == _DIM_VALUE else f.read(item - f.tell()).decode("utf-8", "replace")
    return value


def _fields(f, end: int, *wanted: int, scalars: bool = False):
    """The wanted fields of the message from here to byte `end`: for a length-delimited field its
    end offset, with the file positioned at its start (the caller may read it); with `scalars`,
    also varint fields, as their value. Everything else is skipped by seeking."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = _varint(f)
            if scalars and number in wanted:
                yield number, value
        elif wire == 2:
            length = _varint(f)
            start = f.tell()
            if start + length > end:
                raise ValueError("a field runs past its message")
            if number in wanted:
                yield number, start + length
            f.seek(start + length)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {f.tell()}")


def _varint(f) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError("the file ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 64 bits")


# ---------------------------------------------------------------------------------------------
# The bundle cache: what a read-only bundle cannot hold, in bundle.json's own layout

def bundle_cache_dir(bundle: Bundle) -> Path:
    """$TSF_HOME/cache/<bundle id>/: the fidelity records and INT8 model measured or built on first use."""
    return tsf_home() / "cache" / bundle.bundle_id


def cached_records(bundle: Bundle) -> dict:
    try:
        records = json.loads((bundle_cache_dir(bundle) / CACHE_RECORDS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def update_cached_records(bundle: Bundle, keys: tuple[str, ...], value) -> None:
    """Set records[k1][k2]... = value in the cache's records.json, atomically; concurrent processes
    (shards of one job on one node) take turns through a lock file."""
    directory = bundle_cache_dir(bundle)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = cached_records(bundle)
        node = records
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        tmp = directory / f".{CACHE_RECORDS}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, directory / CACHE_RECORDS)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
