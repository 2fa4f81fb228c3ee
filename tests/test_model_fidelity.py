"""The Paddle ppTimeSformer against the independent float64 NumPy forward
(tests/reference/numpy_timesformer.py, written from docs/reference.md §1).

Weights are random but scaled so that attention is far from uniform and every block moves the
result (see tests/reference/pdparams.py); they reach the model through the same strict loader a
real .pdparams uses. Inputs are random frames in [0, 1]."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from reference.inputs import random_video
from reference.numpy_timesformer import forward as numpy_forward
from reference.pdparams import reference_state
from tsf.training.model import PPTimeSformer, TimeSformerConfig
from tsf.training.weights import infer_config, load_reference_weights

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

TOLERANCE = 1e-5  # relative L2, float32 Paddle vs float64 NumPy
SMALL = dict(depth=2, width=128, frames=4, classes=18)


def rel_l2(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def paddle_forward(model, video):
    model.eval()
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(np.ascontiguousarray(video, dtype=np.float32)))
    return [o.numpy() for o in outputs]


def model_for(state):
    model = PPTimeSformer(infer_config(state))
    load_reference_weights(model, state)
    model.eval()
    return model


def assert_matches_reference(state, video, expected=None):
    names = ("features", "logits", "event_times")
    ours = paddle_forward(model_for(state), video)
    expected = numpy_forward(state, video) if expected is None else expected
    for name, a, e in zip(names, ours, expected):
        assert a.shape == e.shape, name
        error = rel_l2(a, e)
        print(f"{name} {tuple(a.shape)}: relative L2 error {error:.2e}")
        assert error < TOLERANCE, f"{name}: relative L2 error {error:.2e}"


@pytest.fixture(scope="module")
def small_state():
    return reference_state(np.random.default_rng(7), **SMALL)


def test_small_config_is_inferred(small_state):
    assert infer_config(small_state) == TimeSformerConfig(frames=4, depth=2, width=128, heads=2)


@pytest.mark.parametrize("batch", [1, 3])
def test_small_model_matches_numpy_reference(small_state, batch):
    assert_matches_reference(small_state, random_video(np.random.default_rng(batch), batch, 4))


def test_other_head_count_matches_numpy_reference(small_state):
    """heads is not in the file; 4 heads of 32 exercises the (q|k|v) x head x dim column split."""
    model = PPTimeSformer(infer_config(small_state, heads=4))
    load_reference_weights(model, small_state)
    video = random_video(np.random.default_rng(4), 2, 4)
    ours = paddle_forward(model, video)
    expected = numpy_forward(small_state, video, heads=4)
    for a, e in zip(ours, expected):
        assert rel_l2(a, e) < TOLERANCE
    assert rel_l2(expected[0], numpy_forward(small_state, video)[0]) > 100 * TOLERANCE


def test_each_sample_of_a_batch_is_its_own(small_state):
    """Every output row of a batch equals that sample run alone: no CLS or token crosses samples."""
    rng = np.random.default_rng(11)
    video = random_video(rng, 3, 4)
    model = model_for(small_state)
    batched = paddle_forward(model, video)
    for i in range(3):
        alone = paddle_forward(model, video[i:i + 1])
        for a, b in zip(batched, alone):
            assert rel_l2(a[i:i + 1], b) < TOLERANCE
    # and the samples really do differ, so the check above has teeth
    assert min(rel_l2(batched[0][i], batched[0][j]) for i, j in [(0, 1), (0, 2), (1, 2)]) \
        > 100 * TOLERANCE


def test_reference_comparison_can_fail(small_state):
    """The tolerance is far below the effect of a layout mistake: swapping two frames, the time
    embeddings of two frames, or the rows and columns of the frames moves the features by orders
    of magnitude more."""
    video = random_video(np.random.default_rng(5), 1, 4)
    features = numpy_forward(small_state, video)[0]
    swapped_frames = video[:, :, [1, 0, 2, 3]]
    assert rel_l2(numpy_forward(small_state, swapped_frames)[0], features) > 100 * TOLERANCE
    state = dict(small_state)
    state["backbone.time_embed"] = small_state["backbone.time_embed"][:, [1, 0, 2, 3]]
    assert rel_l2(numpy_forward(state, video)[0], features) > 100 * TOLERANCE
    transposed = video.transpose(0, 1, 2, 4, 3)
    assert rel_l2(numpy_forward(small_state, transposed)[0], features) > 100 * TOLERANCE


@pytest.mark.slow
@pytest.mark.full_model
def test_full_reference_config_matches_numpy_reference(full_reference_state, full_reference_clip):
    """Depth 12, width 768, 16 frames, 224 x 224, 18 classes: 3137 tokens per sample."""
    assert infer_config(full_reference_state) == TimeSformerConfig()
    video, expected = full_reference_clip
    assert_matches_reference(full_reference_state, video, expected)
