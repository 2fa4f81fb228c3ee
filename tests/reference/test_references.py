"""Checks of the references themselves, against the worked examples in docs/reference.md,
hand-derived values, and (for the resize) an unrelated implementation, Paddle's interpolate."""
from __future__ import annotations

import numpy as np
import pytest

from reference.numpy_preprocess import crop_offset, reference_preprocess, resized_shape
from reference.sampling import OFFSETS_AT_25_FPS, reference_rows


def test_sampling_at_25_fps_is_the_documented_grid():
    rows = reference_rows(20.9, 25, 523)
    assert rows.shape == (15, 16)  # N = int(L - 5) with L = 20 whole seconds
    for i, row in enumerate(rows):
        assert list(row - 25 * i) == list(OFFSETS_AT_25_FPS)
    # window i + 1 reuses 13 of window i's 16 frames
    assert len(set(rows[0]) & set(rows[1])) == 13


def test_sampling_edge_cases():
    assert reference_rows(4.9, 25, 122).shape == (0, 16)
    assert reference_rows(5.0, 25, 125).shape == (0, 16)
    # e == frame count -> e - 1 (a header that promises more frames than the file holds)
    assert reference_rows(10, 25, 225)[-1, -1] == 224
    assert reference_rows(10, 25, 250)[-1, -1] == 225
    rows = reference_rows(12.5, 29.97, 374)
    assert rows.shape == (7, 16)
    assert rows[1, 0] == 29 and rows[1, -1] == 179  # floor(29.97), floor(6 * 29.97)
    assert np.all(np.diff(rows, axis=1) >= 0)


def test_preprocess_shapes_and_offsets():
    assert resized_shape(256, 456) == (224, 399)  # the documented 456 x 256 example
    assert crop_offset(399) == 88  # round(87.5) is 88 (half to even)
    assert crop_offset(397) == 86  # round(86.5) is 86, not 87
    assert resized_shape(1080, 1920) == (224, 398)
    assert resized_shape(1920, 1080) == (398, 224)


def test_preprocess_skips_resize_when_short_side_is_224():
    frame = np.random.default_rng(0).integers(0, 256, (224, 300, 3), dtype=np.uint8)
    out = reference_preprocess(frame)
    assert out.shape == (3, 224, 224) and out.dtype == np.float64
    np.testing.assert_array_equal(out, frame[:, 38:262].transpose(2, 0, 1) / 255.0)


def test_preprocess_bilinear_half_pixel_by_hand():
    """A 2x upscale with half-pixel centres: output row 2k+1 = 3/4 in[k] + 1/4 in[k+1],
    row 2k+2 = 1/4 in[k] + 3/4 in[k+1]; row 0 is in[0] (source clamped at 0), the last row
    in[-1] (neighbour clamped at the edge)."""
    rows = np.random.default_rng(1).integers(0, 256, 112).astype(np.uint8)
    frame = np.repeat(rows[:, None, None], 112 * 3, axis=1).reshape(112, 112, 3)
    out = reference_preprocess(frame)[0, :, 0] * 255.0
    r = rows.astype(np.float64)
    assert out[0] == pytest.approx(r[0])
    assert out[-1] == pytest.approx(r[-1])
    np.testing.assert_allclose(out[1:-1:2], 0.75 * r[:-1] + 0.25 * r[1:], atol=1e-9)
    np.testing.assert_allclose(out[2::2], 0.25 * r[:-1] + 0.75 * r[1:], atol=1e-9)


@pytest.mark.paddle
@pytest.mark.parametrize("height, width", [(256, 456), (160, 284), (720, 1280), (480, 270)])
def test_preprocess_resize_agrees_with_paddle_interpolate(height, width):
    paddle = pytest.importorskip("paddle")
    frame = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    resized_h, resized_w = resized_shape(height, width)
    image = paddle.to_tensor(frame.transpose(2, 0, 1)[None] / 255.0)
    resized = paddle.nn.functional.interpolate(image, size=[resized_h, resized_w], mode="bilinear",
                                               align_corners=False, align_mode=0).numpy()[0]
    top, left = crop_offset(resized_h), crop_offset(resized_w)
    expected = resized[:, top:top + 224, left:left + 224]
    # Paddle computes source coordinates in float32: ~1e-5 apart; align_corners=True or a
    # one-pixel crop shift would be ~1e-1 apart.
    np.testing.assert_allclose(reference_preprocess(frame), expected, atol=2e-4)
