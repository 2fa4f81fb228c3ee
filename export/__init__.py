"""`tsf-export`: a `.pdparams` -> a verified model bundle (ONNX, plus TensorRT engines where present).

`export_bundle(...)` is the Python API (tests, demos and benchmarks make small bundles with it);
`tsf-export` (export/cli.py) is the command. Paddle and onnx are imported only when exporting.
"""

from .bundle import export_bundle, parse_arch

__all__ = ["export_bundle", "parse_arch"]
