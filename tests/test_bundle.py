"""The bundle contract reader (tsf.runtime.bundle), without Paddle or onnx.

Bundles here are written by hand from the bundle.json example in docs/design.md, so the reader is
checked against the documented format, not against what our exporter happens to write."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tsf.runtime.bundle import default_bundle_dir, load_bundle
from tsf.runtime.errors import InputError

ONNX_BYTES = b"not really an onnx model, the reader never opens it"
WEIGHTS_BYTES = b"not really safetensors either"


def design_meta(onnx_sha256: str) -> dict:
    """The docs/design.md example, filled in."""
    return {
        "format": "tsf-bundle", "format_version": 1, "created": "2026-11-25T12:00:00+00:00",
        "architecture": {"frames": 16, "depth": 12, "width": 768, "heads": 12, "classes": 3,
                         "image_size": 224, "patch_size": 16, "mlp_ratio": 4},
        "preprocessing": {"channel_order": "RGB", "value_scale": 0.00392156862745098,
                          "mean": [0, 0, 0], "std": [1, 1, 1], "short_side": 224,
                          "resize": "bilinear-half-pixel-no-antialias", "crop": "center",
                          "crop_size": 224, "crop_offset_rounding": "half-even", "layout": "NCTHW"},
        "window": {"frames": 16, "seconds": 5.0, "stride_seconds": 1.0},
        "class_names": ["Goal", "Corner", "background"],
        "weights": {"file": "w.pdparams", "sha256": "ab" * 32, "random_init": False},
        "onnx": {"file": "model.onnx", "sha256": onnx_sha256, "opset": 17},
        "safetensors": {"file": "weights.safetensors", "sha256": hashlib.sha256(WEIGHTS_BYTES).hexdigest(),
                        "size_bytes": len(WEIGHTS_BYTES), "tensors": 227},
        "versions": {"tsf": "0.1.0", "paddle": "3.3.1", "paddle2onnx": "2.1.0", "onnx": "1.17.0",
                     "onnxruntime": "1.32.0"},
        "parity": {"onnxruntime-cpu": {"batch_sizes": [1, 3],
                                       "features": {"max_abs": 0, "rel_l2": 0, "cosine": 1},
                                       "logits": {}, "event_times": {}}},
        "engines": [{"file": "engines/h100-fp16.engine", "timing_cache": "engines/h100-fp16.cache",
                     "precision": "fp16", "gpu_name": "NVIDIA H100", "compute_capability": "9.0",
                     "tensorrt_version": "10.13.0", "min_batch": 1, "opt_batch": 16, "max_batch": 32,
                     "build_seconds": 100, "size_bytes": 1000, "parity": {}}],
    }


def write_bundle(directory: Path, meta: dict | None = None, onnx: bytes | None = ONNX_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if onnx is not None:
        (directory / "model.onnx").write_bytes(onnx)
    (directory / "weights.safetensors").write_bytes(WEIGHTS_BYTES)
    meta = design_meta(hashlib.sha256(ONNX_BYTES).hexdigest()) if meta is None else meta
    (directory / "bundle.json").write_text(json.dumps(meta))
    return directory


def test_loads_the_documented_format(tmp_path):
    bundle = load_bundle(write_bundle(tmp_path / "b"), verify=True)
    sha = hashlib.sha256(ONNX_BYTES).hexdigest()
    assert bundle.dir == tmp_path / "b"
    assert bundle.onnx_path == tmp_path / "b" / "model.onnx"
    assert bundle.bundle_id == sha[:16]
    assert bundle.class_names == ("Goal", "Corner", "background")
    assert bundle.random_init is False
    assert bundle.architecture["width"] == 768 and bundle.frames == 16 and bundle.image_size == 224
    assert bundle.num_classes == 3 and bundle.width == 768
    assert bundle.engines[0]["precision"] == "fp16"
    assert bundle.path(bundle.engines[0]["file"]) == tmp_path / "b" / "engines" / "h100-fp16.engine"
    assert bundle.meta["versions"]["paddle"] == "3.3.1"
    assert bundle.weights_path == tmp_path / "b" / "weights.safetensors"


def test_weights_file_is_optional_for_older_bundles(tmp_path):
    meta = design_meta(hashlib.sha256(ONNX_BYTES).hexdigest())
    del meta["safetensors"]
    assert load_bundle(write_bundle(tmp_path / "b", meta), verify=True).weights_path is None


def test_engines_are_optional(tmp_path):
    meta = design_meta(hashlib.sha256(ONNX_BYTES).hexdigest())
    del meta["engines"]
    assert load_bundle(write_bundle(tmp_path / "b", meta)).engines == []


def broken(meta_change):
    def make(tmp_path):
        meta = design_meta(hashlib.sha256(ONNX_BYTES).hexdigest())
        meta_change(meta)
        return write_bundle(tmp_path / "b", meta)
    return make


def _drop(section):
    return lambda meta: meta.pop(section)


def _set(path, value):
    def change(meta):
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[key] if not key.isdigit() else target[int(key)]
        target[last] = value
    return change


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "absent", "no model bundle"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "not a model bundle directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "bundle.json is missing"),
    (lambda tmp: write_bundle(tmp / "b", onnx=None), "model.onnx is missing"),
    (lambda tmp: write_bundle(tmp / "b") and ((tmp / "b" / "bundle.json").write_text("{oops")
                                              and tmp / "b"), "cannot be read as JSON"),
    (broken(_set("format", "something-else")), "not a tsf bundle description"),
    (broken(_set("format_version", 2)), "format_version 2 is not supported"),
    (broken(_drop("format_version")), "format_version None is not supported"),
    (broken(_drop("architecture")), "section 'architecture' is missing"),
    (broken(_drop("weights")), "section 'weights' is missing"),
    (broken(_drop("onnx")), "section 'onnx' is missing"),
    (broken(_set("architecture.frames", "16")), "architecture.frames"),
    (broken(_set("weights.random_init", None)), "weights.random_init"),
    (broken(_set("class_names", ["Goal"])), "1 class names for 3 classes"),
    (broken(_set("onnx.file", "../model.onnx")), "inside the bundle"),
    (broken(_set("onnx.sha256", "")), "onnx.sha256"),
    (broken(_set("safetensors.file", "../weights.safetensors")), "safetensors.file must be"),
    (broken(_set("safetensors.sha256", None)), "safetensors.sha256"),
    (broken(_set("safetensors", "weights.safetensors")), "section 'safetensors' is missing"),
    (broken(_set("engines", [{"file": "/etc/passwd"}])), "inside the bundle"),
    (broken(_set("engines", [{"file": "e.engine", "timing_cache": "../c"}])), "timing_cache must be"),
])
def test_problems_are_one_line_input_errors(tmp_path, make, expected):
    with pytest.raises(InputError) as info:
        load_bundle(make(tmp_path))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["model.onnx", "weights.safetensors"])
def test_verify_catches_a_modified_file(tmp_path, name):
    directory = write_bundle(tmp_path / "b")
    (directory / name).write_bytes(b"tampered")
    load_bundle(directory)  # cheap load does not hash
    with pytest.raises(InputError, match=f"{name} does not match the sha256"):
        load_bundle(directory, verify=True)


def test_default_bundle_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    assert default_bundle_dir() == tmp_path / "home" / "bundles" / "default"
    monkeypatch.delenv("TSF_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_bundle_dir() == tmp_path / "xdg" / "tsf" / "bundles" / "default"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_bundle_dir() == tmp_path / "user" / ".local" / "share" / "tsf" / "bundles" / "default"


def test_reader_imports_neither_paddle_nor_onnx():
    code = ("import sys, tsf.runtime.bundle; "
            "bad = [m for m in ('paddle', 'onnx', 'onnxruntime', 'tsf.export', 'tsf.training') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
