"""The training sampler and augmentation against float64 re-implementations of the recipe
(docs/reference.md §4 and §7) and against frame-numbered test videos."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference.numpy_preprocess import bilinear_resize, reference_preprocess
from tsf.training.augment import eval_transform, resized_shape, train_transform
from tsf.training.sampler import (draw_shift, event_time_target, read_frames_at, window_frame_times,
                                  window_start)
from videos import make_video, read_frame_number

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

CLIP, WINDOW = 10.0, 5.0


def reference_window(event, shift):
    """Centre on event + shift; move (never shrink) into [0, CLIP]."""
    start = event - WINDOW / 2 + shift
    start = min(max(start, 0.0), CLIP - WINDOW)
    return start, (event - start) / WINDOW


@pytest.mark.parametrize("event, shift, start, target", [
    (5.0, 0.0, 2.5, 0.5), (0.0, 0.0, 0.0, 0.0), (9.999, 0.0, 5.0, 0.9998), (1.0, 2.5, 1.0, 0.0),
    (6.0, -1.0, 2.5, 0.7), (8.0, 2.5, 5.0, 0.6), (2.0, -2.5, 0.0, 0.4)])
def test_window_worked_examples(event, shift, start, target):
    got = window_start(event, CLIP, WINDOW, shift)
    assert got == pytest.approx(start, abs=1e-12)
    assert event_time_target(event, got, WINDOW) == pytest.approx(target, abs=1e-12)


def test_window_is_moved_not_shrunk_and_target_stays_in_0_1():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        event, shift = rng.uniform(0, CLIP), draw_shift(rng, 2.5)
        assert -2.5 <= shift <= 2.5
        start = window_start(event, CLIP, WINDOW, shift)
        times = window_frame_times(start, WINDOW, 16)
        ref_start, ref_target = reference_window(event, shift)
        assert start == pytest.approx(ref_start, abs=1e-12)
        assert times[0] == pytest.approx(start) and times[-1] == pytest.approx(start + WINDOW)  # inclusive
        assert np.allclose(np.diff(times), WINDOW / 15)
        assert 0.0 <= times[0] and times[-1] <= CLIP + 1e-9
        assert 0.0 <= event_time_target(event, start, WINDOW) <= 1.0
        assert event_time_target(event, start, WINDOW) == pytest.approx(ref_target, abs=1e-12)
    assert draw_shift(rng, 0.0) == 0.0


@pytest.fixture(scope="module")
def numbered_clip(tmp_path_factory):
    """A 10-s, 25-fps clip with B-frames; frame k shows its number k."""
    return str(make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=10, fps=25, size=(456, 256)))


@pytest.mark.parametrize("start", [0.0, 2.37, 4.0, 5.0])
def test_frames_are_picked_by_timestamp(numbered_clip, start):
    times = window_frame_times(start, WINDOW, 16)
    frames = read_frames_at(numbered_clip, times)
    assert frames.shape == (16, 256, 456, 3) and frames.dtype == np.uint8
    # The runtime's rule: the last frame with k / fps <= t + fps / 4, within [0, last frame].
    expected = [min(max(math.floor(t * 25 + 0.25), 0), 249) for t in times]
    assert [read_frame_number(f) for f in frames] == expected


def test_eval_transform_is_the_runtime_preprocessing():
    rng = np.random.default_rng(1)
    for shape, size in [((3, 256, 456, 3), 224), ((2, 224, 398, 3), 224), ((2, 300, 200, 3), 224),
                        ((2, 90, 160, 3), 32)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        got = eval_transform(frames, size)
        expected = np.stack([reference_preprocess(f, size=size) for f in frames], axis=1)
        assert got.shape == (3, shape[0], size, size) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-6)


def test_train_transform_is_scale_crop_flip():
    frames = np.random.default_rng(2).integers(0, 256, (2, 256, 456, 3), dtype=np.uint8)
    flips = 0
    for seed in range(12):
        got = train_transform(frames, np.random.default_rng(seed))
        draws = np.random.default_rng(seed)  # replay the draws in their documented order
        short = int(draws.integers(225, 257))
        h, w = resized_shape(256, 456, short)
        top, left = int(draws.integers(0, h - 224 + 1)), int(draws.integers(0, w - 224 + 1))
        flip = draws.random() < 0.5
        flips += flip
        full = np.stack([bilinear_resize(f.astype(np.float64) / 255, h, w) for f in frames])
        expected = full[:, top:top + 224, left:left + 224]
        if flip:
            expected = expected[:, :, ::-1]
        np.testing.assert_allclose(got, expected.transpose(3, 0, 1, 2), atol=2e-6)
    assert 0 < flips < 12


def test_train_scale_range_is_inclusive():
    shorts = {int(np.random.default_rng(s).integers(225, 257)) for s in range(3000)}
    assert min(shorts) == 225 and max(shorts) == 256
    tiny = np.zeros((1, 256, 456, 3), np.uint8)
    assert train_transform(tiny, np.random.default_rng(0), size=32, short_side_range=(33, 40)).shape == (3, 1, 32, 32)
