"""`tsf-export`: a `.pdparams` -> a verified model bundle (ONNX, plus TensorRT engines where present).

`ExportSettings` holds what is asked (one field per tsf-export option, the rules between them
checked once); `write_bundle(settings)` writes the bundle step by step; `export_bundle(...)` is the
same with keyword arguments, the Python API that tests, demos and benchmarks make bundles with.
`tsf-export` (export/cli.py) is the command. Paddle and onnx are imported only when exporting.
"""

from .bundle import export_bundle, write_bundle
from .settings import ExportSettings, parse_arch

__all__ = ["ExportSettings", "export_bundle", "parse_arch", "write_bundle"]
