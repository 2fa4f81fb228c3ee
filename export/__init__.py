"""`tsf-export`: a `.pdparams` -> a verified model bundle (ONNX, plus TensorRT engines where present)."""
