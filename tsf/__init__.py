"""tsf: one 768-d TimeSformer feature per second of soccer broadcast video.

Sub-packages follow the data: ``tsf.training`` (Paddle model, weights, fine-tuning) ->
``tsf.export`` (.pdparams -> ONNX / TensorRT bundle) -> ``tsf.runtime`` (Paddle-free extraction).
"""

__version__ = "0.1.0"
