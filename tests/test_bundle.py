"""The bundle contract reader (tsf.runtime.bundle), without Paddle or onnx.

Bundles here are written by hand from the bundle.json example in docs/design.md, so the reader is
checked against the documented format, not against what our exporter happens to write. Their
model.onnx is a graph with the documented inputs and outputs and no nodes, built with the onnx
package (an independent writer of the protobuf the reader parses by hand)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsf.runtime.bundle import VERIFIED_CACHE, default_bundle_dir, load_bundle
from tsf.runtime.errors import InputError



def onnx_bytes(frames=16, size=224, width=768, classes=3, batch="batch") -> bytes:
    """A ModelProto whose graph declares the bundle's input and outputs (the reader needs no more)."""
    from onnx import TensorProto, helper

    def value(name, *dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *dims])

    graph = helper.make_graph([], "tsf", [value("video", 3, frames, size, size)],
                              [value("features", width), value("logits", classes), value("event_times", classes)],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, [4], [1, 2, 3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


ONNX_BYTES = onnx_bytes()
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
    bundle = load_bundle(write_bundle(tmp_path / "b"))
    sha = hashlib.sha256(ONNX_BYTES).hexdigest()
    assert bundle.dir == tmp_path / "b"
    assert bundle.onnx_path == tmp_path / "b" / "model.onnx"
    assert bundle.bundle_id == documented_id(sha, ["Goal", "Corner", "background"])
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
    assert load_bundle(write_bundle(tmp_path / "b", meta)).weights_path is None


def documented_id(onnx_sha256: str, class_names: list[str]) -> str:
    """docs/design.md: the first 16 hex digits of the sha256 of the compact JSON of both."""
    text = '{"onnx_sha256":"' + onnx_sha256 + '","class_names":' + json.dumps(class_names, separators=(",", ":")) + "}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_bundles_differing_only_in_class_names_have_different_ids(tmp_path):
    sha = hashlib.sha256(ONNX_BYTES).hexdigest()
    renamed = design_meta(sha)
    renamed["class_names"] = ["Corner", "Goal", "background"]
    first, again = load_bundle(write_bundle(tmp_path / "a")), load_bundle(write_bundle(tmp_path / "b"))
    other = load_bundle(write_bundle(tmp_path / "c", renamed))
    assert first.bundle_id == again.bundle_id != other.bundle_id
    # A bundle written before the id covered class names (bundle_id = the ONNX sha256's first 16
    # digits) loads unchanged and gets the current id.
    old = design_meta(sha)
    old["bundle_id"] = sha[:16]
    assert load_bundle(write_bundle(tmp_path / "old", old)).bundle_id == first.bundle_id


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


def test_loading_verifies_the_onnx_and_caches_its_hash(tmp_path, monkeypatch):
    from tsf.runtime import bundle as bundle_module

    directory = write_bundle(tmp_path / "b")
    hashed = []
    real_sha256 = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    load_bundle(directory)
    load_bundle(directory)
    # each named file (model.onnx, weights.safetensors) hashed once, then known by size and times
    assert len(hashed) == 2 and (directory / VERIFIED_CACHE).is_file()
    model = directory / "model.onnx"
    before = model.stat()
    model.write_bytes(onnx_bytes(width=512))  # another bundle's model: same file name, same size
    assert model.stat().st_size == before.st_size
    # Milliseconds after the hash was cached, a file system with coarse timestamps (whole seconds,
    # or the kernel's clock tick) can give the new file the old one's times: date it as a later
    # write is dated.
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    with pytest.raises(InputError, match=r"model\.onnx does not match the sha256 in .*bundle\.json"):
        load_bundle(directory)
    assert len(hashed) == 3


def test_a_read_only_bundle_caches_under_tsf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TSF_HOME", str(tmp_path / "home"))
    directory = write_bundle(tmp_path / "b")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a bundle on a read-only share
    load_bundle(directory)
    assert not (directory / VERIFIED_CACHE).exists()
    assert len(list((tmp_path / "home" / "verified").glob("*.json"))) == 1


@pytest.mark.parametrize("model, message", [
    (onnx_bytes(frames=8), "input video is [batch, 3, 8, 224, 224], but bundle.json's architecture needs "
                           "[batch, 3, 16, 224, 224]"),
    (onnx_bytes(size=112), "input video is [batch, 3, 16, 112, 112]"),
    (onnx_bytes(width=512), "output features is [batch, 512], but bundle.json's architecture needs [batch, 768]"),
    (onnx_bytes(classes=18), "output logits is [batch, 18]"),
    (b"\x00garbage" * 100, "not a readable ONNX model"),
    (b"", "has no input named 'video'"),
])
def test_model_shapes_must_match_the_architecture(tmp_path, model, message):
    meta = design_meta(hashlib.sha256(model).hexdigest())  # the hash matches: only the shapes disagree
    directory = write_bundle(tmp_path / "b", meta, onnx=model)
    with pytest.raises(InputError) as info:
        load_bundle(directory)
    assert message in str(info.value) and str(directory / "model.onnx") in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("batch", [None, 1, "N"])
def test_any_batch_dimension_is_accepted(tmp_path, batch):
    model = onnx_bytes(batch=batch)
    load_bundle(write_bundle(tmp_path / "b", design_meta(hashlib.sha256(model).hexdigest()), onnx=model))


def test_every_file_named_with_a_sha256_is_verified(tmp_path):
    meta = design_meta(hashlib.sha256(ONNX_BYTES).hexdigest())
    meta["safetensors"]["sha256"] = hashlib.sha256(b"w").hexdigest()
    directory = write_bundle(tmp_path / "b", meta)
    (directory / "weights.safetensors").unlink()
    with pytest.raises(InputError, match="incomplete: weights.safetensors is missing"):
        load_bundle(directory)
    (directory / "weights.safetensors").write_bytes(b"not w")
    with pytest.raises(InputError, match="weights.safetensors does not match the sha256"):
        load_bundle(directory)
    (directory / "weights.safetensors").write_bytes(b"w")
    load_bundle(directory)  # the top-level weights entry (the export's source file) is not looked for


@pytest.mark.parametrize("name", ["model.onnx", "weights.safetensors"])
def test_a_modified_file_is_refused(tmp_path, name):
    directory = write_bundle(tmp_path / "b")
    load_bundle(directory)
    (directory / name).write_bytes(b"tampered")
    with pytest.raises(InputError, match=f"{name} does not match the sha256"):
        load_bundle(directory)


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
