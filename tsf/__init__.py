"""tsf: one 768-d TimeSformer feature per second of soccer broadcast video.

Sub-packages follow the data: ``tsf.training`` (Paddle model, weights, fine-tuning) ->
``tsf.export`` (.pdparams -> ONNX / TensorRT bundle) -> ``tsf.runtime`` (Paddle-free extraction).

From Python (README, "From Python")::

    from tsf import Extractor
    extractor = Extractor("path/to/bundle", rate=2)   # any tsf-extract option, by its name
    result = extractor.extract("match.mkv")           # arrays: result.features, result.row_times, ...
    extractor.save(result, "match.npy")               # the output set, as tsf-extract writes it

The names below are imported on first use, so `import tsf` stays cheap.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "Extractor": "tsf.runtime.extractor",
    "ExtractSettings": "tsf.runtime.extractor",
    "read_outputs": "tsf.runtime.outputs",
    "TsfError": "tsf.runtime.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tsf' has no attribute {name!r}")
