"""Static check of the GPU modules against TensorRT's API, where TensorRT itself cannot be installed.

mypy with `tensorrt-stubs` (TensorRT 10.13's Python API as type stubs) checks every TensorRT call
in export/tensorrt_engine.py and runtime/backends/tensorrt.py: a method that does not exist (say the
TensorRT 8 `build_engine`), a wrong argument type, a misspelt enum. The torch engine's CUDA-only
calls are checked the same way against torch's own annotations (the CPU build has the same API).
A negative control proves the check can fail. `make setup-test` installs the stubs with --no-deps into `<venv>/typestubs`
(`TSF_TENSORRT_STUBS` overrides), outside site-packages, because the stubs package declares
TensorRT as a dependency and would otherwise make `import tensorrt` succeed as an empty package.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_MODULES = ["export/tensorrt_engine.py", "runtime/backends/tensorrt.py", "runtime/decode_nvdec.py",
               "runtime/backends/torch.py"]
# The GPU tests never run in CI either: check their calls into tsf too.
GPU_TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "gpu").glob("*.py"))

MYPY_INI = """\
[mypy]
check_untyped_defs = True
warn_unused_ignores = True
follow_imports = silent
# cupy, PyNvVideoCodec and onnxruntime ship no usable stubs; tensorrt must resolve (see the control).
ignore_missing_imports = True
[mypy-tensorrt.*]
ignore_errors = True
[mypy-tensorrt_bindings.*]
ignore_errors = True
"""

NEGATIVE_CONTROL = """\
def build(path: str) -> None:
    import tensorrt as trt
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    config = builder.create_builder_config()
    builder.build_engine(network, config)  # TensorRT 8 API, removed in 10
    config.max_workspace_size = 1 << 30  # removed in 10
    config.set_flag(trt.BuilderFlag.FP61)  # no such flag


def capability() -> None:
    import torch
    torch.cuda.get_device_capabilty(0)  # misspelt
"""


def stubs_dir() -> Path | None:
    candidates = [os.environ.get("TSF_TENSORRT_STUBS"), str(Path(sys.prefix) / "typestubs")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tensorrt_bindings" / "tensorrt.pyi").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def mypy_setup(tmp_path_factory):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")
    source = stubs_dir()
    if source is None:
        pytest.skip("tensorrt-stubs not installed in <venv>/typestubs (run make setup-test)")
    work = tmp_path_factory.mktemp("trt-stubs")
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(source / package, work / "stubs" / package)
    stub = work / "stubs" / "tensorrt_bindings" / "tensorrt.pyi"
    text = stub.read_text()
    # tensorrt-stubs 10.13.0.35.1 is generated with two syntax errors that stop mypy before it
    # checks anything: plugin methods with a parameter named `in` (a keyword), and one required
    # parameter after defaulted ones. Renaming/defaulting them changes no API we call.
    text = re.sub(r"([(,] *)in: ", r"\1in_: ", text)
    text = text.replace(", channel_axis: int)", ", channel_axis: int = ...)")
    stub.write_text(text)
    (work / "mypy.ini").write_text(MYPY_INI)
    return work


def run_mypy(work: Path, *paths: str) -> subprocess.CompletedProcess:
    search = [str(work / "stubs"), str(ROOT / "tests"), str(ROOT / "tests" / "gpu")]
    env = dict(os.environ, MYPYPATH=os.pathsep.join(search))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(work / "mypy.ini"), "--no-incremental",
         "--cache-dir", str(work / "cache"), *paths],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_mypy_catches_calls_to_tensorrt_apis_that_do_not_exist(mypy_setup):
    control = mypy_setup / "control.py"
    control.write_text(NEGATIVE_CONTROL)
    result = run_mypy(mypy_setup, str(control))
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"Builder" has no attribute "build_engine"' in result.stdout
    assert '"IBuilderConfig" has no attribute "max_workspace_size"' in result.stdout
    assert "FP61" in result.stdout
    assert 'has no attribute "get_device_capabilty"' in result.stdout


def test_gpu_modules_type_check_against_tensorrt_10(mypy_setup):
    result = run_mypy(mypy_setup, *GPU_MODULES, *GPU_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
