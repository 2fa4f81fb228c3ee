"""The reference-sized model (12 x 768, 16 frames) through tsf-extract --align reference, against the
independent path (PyAV frames, reference indices, float64 preprocessing, onnxruntime directly):
the small-model fidelity tests at the real width, depth and token count."""

from __future__ import annotations

import numpy as np
import pytest

from reference.sampling import reference_rows
from runtime_helpers import cosine_rows, decode_all, extract, independent_features, video


@pytest.mark.slow
@pytest.mark.full_model
@pytest.mark.timeout(1800)
def test_full_size_model_reference_alignment_fidelity(full_runtime_bundle):
    bundle_dir = full_runtime_bundle
    path = video("odd_455x255.mkv")  # 7 s: 2 reference rows; odd size runs the resize path
    result = extract(path, bundle_dir, align="reference", backend="onnxruntime", device="cpu",
                     batch_size=2)
    _, images, rate = decode_all(path)
    indices = reference_rows(int(len(images) / rate), float(rate), len(images))
    assert result.features.shape == (len(indices), 768) == (2, 768)
    reference = independent_features(bundle_dir, [[images[k] for k in row] for row in indices])
    cosine = cosine_rows(result.features, reference)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(result.features - reference).max() < 1e-3

    # The default CPU path (OpenVINO, BF16 where native and the gate, measured on first use, passed).
    default = extract(path, bundle_dir, align="reference", device="cpu")
    assert default.features.shape == (2, 768)
    assert cosine_rows(default.features, reference).min() >= 0.999
