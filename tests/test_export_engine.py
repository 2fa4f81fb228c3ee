"""TensorRT engines through `export_bundle` / `tsf-export`, where TensorRT and a GPU exist.

Skipped elsewhere (the CPU-only CI): the builder (export/tensorrt_engine.py) needs TensorRT 10+,
CuPy and a CUDA GPU. The engine's own parity gate (FP16: features cosine >= 0.999 against ONNX
Runtime; FP32: tight) runs inside the build; here we check that the bundle records the engine
and that the entry points at real files the bundle reader accepts."""
from __future__ import annotations

import json

import pytest

from tsf.runtime.gpu import GPU_IMPORT_ERRORS

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

SMALL_ARCH = "depth=2,width=128,heads=2,frames=4"


def _engine_reason():
    try:
        from tsf.export import tensorrt_engine
        return tensorrt_engine.engine_support()
    except GPU_IMPORT_ERRORS as exc:
        return f"TensorRT engine builder unusable: {exc}"


needs_tensorrt = pytest.mark.skipif(_engine_reason() is not None, reason=str(_engine_reason()))


@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_small_bundle_with_engine(tmp_path, precision):
    from tsf.export import export_bundle
    from tsf.runtime.bundle import load_bundle

    out = export_bundle(tmp_path / "b", random_init=True, arch=SMALL_ARCH, engine=True,
                        precision=precision, max_batch=4)
    bundle = load_bundle(out)
    assert len(bundle.engines) == 1
    entry = bundle.engines[0]
    assert entry["precision"] == precision
    assert entry["min_batch"] == 1 and entry["max_batch"] == 4 and 1 <= entry["opt_batch"] <= 4
    assert bundle.path(entry["file"]).is_file() and bundle.path(entry["timing_cache"]).is_file()
    assert entry["size_bytes"] == bundle.path(entry["file"]).stat().st_size
    assert entry["gpu_name"] and entry["compute_capability"] and entry["tensorrt_version"]
    assert entry["file"].startswith("engines/")
    for name in ("features", "logits", "event_times"):
        assert name in entry["parity"]
    if precision == "fp16":
        assert entry["parity"]["features"]["cosine"] >= 0.999
    print(json.dumps(entry))


@pytest.mark.gpu
@needs_tensorrt
def test_cli_builds_the_engine_by_default(tmp_path, capsys):
    from tsf.export.cli import main
    from tsf.runtime.bundle import load_bundle

    code = main(["--random-init", "--arch", SMALL_ARCH, "--max-batch", "2", "-o", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert load_bundle(tmp_path / "b").engines
    assert any(line.startswith("engine engines/") for line in out.splitlines())


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.full_model
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_full_reference_sized_engine(tmp_path, full_reference_pdparams, precision):
    """The reference-sized engines for benchmarks/RESULTS.md: build time, size and parity printed."""
    from tsf.export import export_bundle
    from tsf.runtime.bundle import load_bundle

    out = export_bundle(tmp_path / "b", weights=full_reference_pdparams, engine=True, precision=precision)
    entry = load_bundle(out).engines[0]
    print(f"{precision}: build {entry['build_seconds']} s, {entry['size_bytes'] / 2**20:.0f} MiB, "
          f"parity {json.dumps(entry['parity'])}")
