"""Weights I/O against the section-2 contract: reference key names and shapes, strict loading
that names every problem, exact save/load round trips, and the explicit fine-tuning path."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from reference.pdparams import (BOOKKEEPING_KEY, FULL_PARAMETER_COUNT, FULL_TENSOR_COUNT,
                                reference_shapes, reference_state)
from tsf.training.model import PPTimeSformer, TimeSformerConfig
from tsf.training.weights import (WeightsError, infer_config, load_reference_weights,
                                  load_starting_point, read_pdparams, save_pdparams)

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

SMALL = dict(depth=2, width=128, frames=4, classes=18)
SMALL_CONFIG = TimeSformerConfig(frames=4, depth=2, width=128, heads=2)


def model_state(model) -> dict[str, np.ndarray]:
    return {name: p.numpy() for name, p in model.state_dict().items()}


def assert_states_equal(actual, expected):
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        assert actual[key].dtype == value.dtype, key
        assert np.array_equal(actual[key], value), key


@pytest.fixture
def small_state():
    return reference_state(np.random.default_rng(3), **SMALL)


@pytest.mark.full_model
def test_full_reference_file_loads_exactly(full_reference_pdparams, full_reference_state):
    with open(full_reference_pdparams, "rb") as f:
        raw = pickle.load(f)
    assert BOOKKEEPING_KEY in raw  # written the way the reference files are

    state = read_pdparams(full_reference_pdparams)
    assert BOOKKEEPING_KEY not in state
    assert len(state) == FULL_TENSOR_COUNT
    assert sum(v.size for v in state.values()) == FULL_PARAMETER_COUNT
    assert infer_config(state) == TimeSformerConfig()

    model = PPTimeSformer(infer_config(state))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference_shapes()
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == FULL_PARAMETER_COUNT
    load_reference_weights(model, state)
    assert_states_equal(model_state(model), full_reference_state)


def test_small_file_loads_exactly(small_state, write_weights):
    state = read_pdparams(write_weights(small_state))
    assert infer_config(state) == SMALL_CONFIG
    model = PPTimeSformer(SMALL_CONFIG)
    load_reference_weights(model, state)
    assert_states_equal(model_state(model), small_state)


def test_heads_are_width_over_64_unless_told(small_state):
    assert infer_config(small_state).heads == 2
    assert infer_config(small_state, heads=4).heads == 4


def test_missing_extra_and_misshaped_keys_are_all_named(small_state, write_weights):
    state = dict(small_state)
    del state["backbone.blocks.1.temporal_fc.bias"]
    state["backbone.blocks.0.attn.qkv.bias"] = np.zeros(384, np.float32)
    state["backbone.blocks.0.mlp.fc1.weight"] = np.zeros((512, 128), np.float32)  # transposed
    model = PPTimeSformer(SMALL_CONFIG)
    before = model_state(model)

    with pytest.raises(WeightsError) as caught:
        load_reference_weights(model, read_pdparams(write_weights(state)))
    message = str(caught.value)
    assert "\n" not in message
    assert "backbone.blocks.1.temporal_fc.bias" in message and "[128]" in message
    assert "backbone.blocks.0.attn.qkv.bias" in message and "[384]" in message
    assert "backbone.blocks.0.mlp.fc1.weight" in message
    assert "[128, 512]" in message and "[512, 128]" in message  # expected and actual
    # refused as a whole: nothing was half-loaded
    assert_states_equal(model_state(model), before)


def test_a_file_for_another_architecture_is_refused(small_state):
    model = PPTimeSformer(TimeSformerConfig(frames=4, depth=3, width=128, heads=2))
    with pytest.raises(WeightsError, match=r"backbone\.blocks\.2\.norm1\.weight"):
        load_reference_weights(model, small_state)
    model = PPTimeSformer(TimeSformerConfig(frames=8, depth=2, width=128, heads=2))
    with pytest.raises(WeightsError, match=r"backbone\.time_embed"):
        load_reference_weights(model, small_state)


def test_a_missing_head_is_an_error_not_random_weights(small_state):
    state = {k: v for k, v in small_state.items() if not k.startswith("head.")}
    with pytest.raises(WeightsError, match=r"head\.fc\.weight"):
        load_reference_weights(PPTimeSformer(SMALL_CONFIG), state)


def test_unreadable_files_are_weights_errors(tmp_path):
    garbage = tmp_path / "garbage.pdparams"
    garbage.write_bytes(b"\x00\x01 this is not a pickle \xff" * 10)
    a_list = tmp_path / "list.pdparams"
    a_list.write_bytes(pickle.dumps([np.zeros(3)], protocol=4))
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    for path in (garbage, a_list, empty, tmp_path / "missing.pdparams", tmp_path):
        with pytest.raises(WeightsError) as caught:
            read_pdparams(path)
        assert "\n" not in str(caught.value)


def test_save_then_read_is_bit_exact(small_state, tmp_path):
    model = PPTimeSformer(SMALL_CONFIG)
    load_reference_weights(model, small_state)
    save_pdparams(model, tmp_path / "model.pdparams")
    assert_states_equal(read_pdparams(tmp_path / "model.pdparams"), small_state)

    save_pdparams(small_state, tmp_path / "state.pdparams")
    assert_states_equal(read_pdparams(tmp_path / "state.pdparams"), small_state)
    # the saved layout is the reference's: a plain protocol-4 pickle of name -> ndarray
    with open(tmp_path / "state.pdparams", "rb") as f:
        raw = pickle.load(f)
    assert all(isinstance(v, np.ndarray) for k, v in raw.items() if k != BOOKKEEPING_KEY)
    assert (tmp_path / "state.pdparams").read_bytes()[:2] == b"\x80\x04"

    reloaded = PPTimeSformer(infer_config(read_pdparams(tmp_path / "model.pdparams")))
    load_reference_weights(reloaded, read_pdparams(tmp_path / "model.pdparams"))
    assert_states_equal(model_state(reloaded), small_state)


def test_starting_point_drops_other_head_and_resamples_time_embed():
    """Kinetics-400-like source: 8-frame time_embed, a 400-class head.fc, no event-time head."""
    source = reference_state(np.random.default_rng(9), depth=2, width=128, frames=8, classes=400)
    source = {k: v for k, v in source.items() if not k.startswith("head.fc_event_times")}
    model = PPTimeSformer(TimeSformerConfig(frames=16, depth=2, width=128, heads=2))
    fresh_head = {k: v for k, v in model_state(model).items() if k.startswith("head.")}

    report = load_starting_point(model, source)

    text = str(report)
    assert "head.fc.weight" in text and "head.fc.bias" in text and "400" in text
    assert "backbone.time_embed" in text
    assert any("head.fc.weight" in d for d in report.dropped)
    assert any("head.fc.bias" in d for d in report.dropped)
    assert any("backbone.time_embed" in r for r in report.resampled)

    loaded = model_state(model)
    for key, value in source.items():
        if key.startswith("backbone.") and key != "backbone.time_embed":
            assert np.array_equal(loaded[key], value), key
    for key, value in fresh_head.items():  # the head is the model's own initialisation
        assert np.array_equal(loaded[key], value), key
    assert loaded["head.fc.weight"].shape == (128, 18)

    # resampled along time only: [1, 16, 128], ends kept, every value between the source's
    time_embed, src = loaded["backbone.time_embed"], source["backbone.time_embed"]
    assert time_embed.shape == (1, 16, 128)
    np.testing.assert_allclose(time_embed[0, 0], src[0, 0], rtol=1e-6)
    np.testing.assert_allclose(time_embed[0, -1], src[0, -1], rtol=1e-6)
    assert np.all(time_embed >= src.min(axis=1, keepdims=True) - 1e-6)
    assert np.all(time_embed <= src.max(axis=1, keepdims=True) + 1e-6)


def test_starting_point_still_refuses_a_wrong_backbone():
    source = reference_state(np.random.default_rng(9), depth=2, width=128, frames=16, classes=400)
    del source["backbone.blocks.1.norm2.weight"]
    source["backbone.blocks.0.temporal_fc.weight"] = np.zeros((128, 64), np.float32)
    model = PPTimeSformer(TimeSformerConfig(frames=16, depth=2, width=128, heads=2))
    with pytest.raises(WeightsError) as caught:
        load_starting_point(model, source)
    assert "backbone.blocks.1.norm2.weight" in str(caught.value)
    assert "backbone.blocks.0.temporal_fc.weight" in str(caught.value)


@pytest.mark.parametrize("key, value, message", [
    ("backbone.cls_token", np.float32(0.5), "backbone.cls_token has shape [], expected [1, 1, width]"),
    ("backbone.pos_embed", np.zeros(197, np.float32), "backbone.pos_embed has shape [197], expected [1, 1 + patches"),
    ("backbone.time_embed", np.zeros((4, 128), np.float32), "backbone.time_embed has shape [4, 128], expected"),
    ("backbone.patch_embed.proj.weight", np.zeros((128, 3, 16), np.float32), "expected [width, 3, patch, patch]"),
])
def test_a_tensor_of_the_wrong_rank_is_named(small_state, key, value, message):
    state = dict(small_state, **{key: value})
    with pytest.raises(WeightsError) as caught:
        infer_config(state)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    model = PPTimeSformer(TimeSformerConfig(frames=16, depth=2, width=128, heads=2))
    if key == "backbone.time_embed":  # the fine-tuning path resamples it: a wrong rank is named there too
        with pytest.raises(WeightsError, match=r"backbone.time_embed has shape \[4, 128\], expected \[1, frames"):
            load_starting_point(model, state)
