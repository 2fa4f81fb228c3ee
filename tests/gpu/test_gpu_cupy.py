"""The array-API stages on CuPy against the same lines on NumPy: preprocessing and YUV -> RGB."""
from __future__ import annotations

import numpy as np
import pytest
from tsf.runtime.gpu import Device, cupy_support

REASON = cupy_support(Device("cuda", 0))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.mark.parametrize("size", [(256, 456), (1080, 1920), (224, 398), (500, 224)])
def test_preprocessing_on_cupy_equals_numpy(size):
    import cupy
    from tsf.runtime.bundle import Preprocessing
    from tsf.runtime.preprocess import preprocess_frame

    rgb = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = preprocess_frame(rgb, Preprocessing.reference())
    got = preprocess_frame(cupy.asarray(rgb), Preprocessing.reference())
    assert isinstance(got, cupy.ndarray) and got.dtype == cupy.float32 and got.shape == expected.shape
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("colorspace,color_range", [(2, 0), (1, 1), (2, 2), (9, 1)])
def test_yuv_to_rgb_on_cupy_equals_numpy(colorspace, color_range):
    import cupy
    from tsf.runtime.colour import yuv420_to_rgb

    rng = np.random.default_rng(colorspace * 10 + color_range)
    y = rng.integers(0, 256, (1080, 1920), dtype=np.uint8)
    u, v = (rng.integers(0, 256, (540, 960), dtype=np.uint8) for _ in range(2))
    expected = yuv420_to_rgb(y, u, v, colorspace, color_range)
    got = cupy.asnumpy(yuv420_to_rgb(cupy.asarray(y), cupy.asarray(u), cupy.asarray(v), colorspace, color_range))
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    # float32 on both, but the GPU may fuse a multiply-add: a value on an integer boundary can floor
    # one level apart.
    print(f"\nYUV->RGB CuPy vs NumPy: max {diff.max()}, share differing {np.mean(diff > 0):.2e}")
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3
