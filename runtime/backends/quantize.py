"""INT8 on the CPU: the bundle's model with its matrix products quantized, for ONNX Runtime.

ONNX Runtime's own `quantize_dynamic` (docs/toolchain.md, "CPU inference"): the MatMul and Gemm
weights become signed 8-bit integers with one scale per output channel, and the activations are
quantized to unsigned 8 bits per tensor while the model runs, so no calibration data is needed.
The quantized model is built once from `model.onnx`: by `tsf-export --int8` into the bundle
(bundle.json `quantized`), or on first use into `$TSF_HOME/cache/<bundle id>/`, since bundles
may be read-only. Its fidelity gate is `precision.py`'s, like every reduced precision's.

Dependencies: onnxruntime's quantization tool, which reads and writes the model with `onnx`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..bundle import Bundle, bundle_cache_dir, cached_records, sha256_file, update_cached_records
from ..errors import EngineUnavailable
from ..extras import require

log = logging.getLogger("tsf")

INT8_FILE = "model.int8.onnx"
QUANTIZED_OP_TYPES = ("MatMul", "Gemm")


def int8_model_path(bundle: Bundle) -> Path:
    """The bundle's INT8 model, else the cached one, else built now into the cache."""
    entry = bundle.meta.get("quantized", {}).get("int8")
    if entry:
        return bundle.path(entry["file"])  # load_bundle checked that it exists
    path = bundle_cache_dir(bundle) / INT8_FILE
    if cached_records(bundle).get("quantized", {}).get("int8") and path.is_file():
        return path
    log.info("building the INT8 model of bundle %s (once; kept in %s)", bundle.bundle_id, path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = quantize_int8(bundle.onnx_path, path)
        update_cached_records(bundle, ("quantized", "int8"), entry)
    except OSError as e:
        raise EngineUnavailable(f"cannot write the INT8 model to {path.parent} ({e.strerror or e}); set TSF_HOME "
                                "to a writable folder, or build it into the bundle with tsf-export --int8") from None
    return path


def quantize_int8(onnx_path: Path, out_path: Path) -> dict:
    """Write the INT8 model of `onnx_path` to `out_path` (atomically); returns its `quantized` entry."""
    onnxruntime = require("onnxruntime", "cpu", "building the INT8 model")
    require("onnx", "cpu", "building the INT8 model")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with _quiet_quantizer():
            quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=list(QUANTIZED_OP_TYPES))
        os.replace(tmp, out_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {
        "file": out_path.name,
        "sha256": sha256_file(out_path),
        "size_bytes": out_path.stat().st_size,
        "source_sha256": sha256_file(onnx_path),
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": "int8, one scale per output channel",
        "activations": "uint8, one scale per tensor, computed while running",
        "op_types": list(QUANTIZED_OP_TYPES),
        "onnxruntime": onnxruntime.__version__,
    }


class _DropPreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _quiet_quantizer():
    """quantize_dynamic logs through the root logger: a line of INFO per tensor (shown wherever
    the root logger is set to INFO; Paddle, imported by the exporter, sets it so) and the advice
    to run a graph pre-processing pass first. tsf quantizes the exported graph as it is and lets
    the fidelity gate judge the result. A root logger without handlers would also install a
    stderr handler for good on the first warning."""
    root = logging.getLogger()
    level, handler, advice = root.level, logging.NullHandler(), _DropPreprocessingAdvice()
    root.addHandler(handler)
    root.addFilter(advice)
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeFilter(advice)
        root.removeHandler(handler)
