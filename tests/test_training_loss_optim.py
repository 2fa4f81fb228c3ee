"""Loss, optimiser and schedule against float64 NumPy re-implementations of the recipe
(docs/reference.md §7), written from the spec, not from our code."""

from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from tsf.training.errors import TrainingError
from tsf.training.loss import training_loss
from tsf.training.model import PPTimeSformer, TimeSformerConfig
from tsf.training.optim import EMBEDDINGS, WarmupCosine, build_optimizer

pytestmark = pytest.mark.paddle  # the exporter and the trainer run Paddle

BG = 17
TINY = TimeSformerConfig(frames=4, depth=2, width=64, heads=2, image_size=32, patch_size=16, num_classes=18)


def reference_loss(logits, event_times, labels, targets, weight, background=BG):
    """CE (mean) + w * mean over event samples of (event_times[i, label_i] - target_i)^2."""
    logits, event_times, targets = (np.asarray(a, np.float64) for a in (logits, event_times, targets))
    z = logits - logits.max(axis=1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    cross_entropy = -log_softmax[rows, labels].mean()
    events = labels != background
    squared = (event_times[rows, labels] - targets) ** 2
    mse = squared[events].sum() / max(1, events.sum())
    return cross_entropy + weight * mse, cross_entropy, mse


@pytest.mark.parametrize("labels", [[3], [BG], [2, BG, 10, BG], [BG, BG, BG, BG], [0, 5, 5, 16]])
@pytest.mark.parametrize("weight", [0.0, 1.0, 2.5])
def test_loss_matches_the_intended_formula(labels, weight):
    rng = np.random.default_rng(len(labels) * 10 + int(weight * 2))
    n = len(labels)
    logits = rng.normal(0, 3, (n, 18)).astype(np.float32)
    event_times = rng.uniform(0, 1, (n, 18)).astype(np.float32)
    targets = rng.uniform(0, 1, n).astype(np.float32)
    labels = np.array(labels, np.int64)
    total, ce, mse = training_loss(paddle.to_tensor(logits), paddle.to_tensor(event_times), paddle.to_tensor(labels),
                                   paddle.to_tensor(targets), weight, BG)
    ref_total, ref_ce, ref_mse = reference_loss(logits, event_times, labels, targets, weight)
    assert float(total.numpy()) == pytest.approx(ref_total, rel=1e-5, abs=1e-6)
    assert float(ce.numpy()) == pytest.approx(ref_ce, rel=1e-5, abs=1e-6)
    assert float(mse.numpy()) == pytest.approx(ref_mse, rel=1e-5, abs=1e-7)
    if n == 4 and (labels != BG).sum() > 1:
        # Not the reference's N x N broadcast of every prediction against every target.
        prediction = event_times[np.arange(n), labels]
        broadcast = ((prediction[:, None] - targets[None, :]) ** 2).mean()
        assert abs(broadcast - ref_mse) > 1e-4


def test_event_time_gradient_reaches_only_the_labelled_class_of_event_samples():
    rng = np.random.default_rng(3)
    labels = np.array([4, BG, 9, 4], np.int64)
    logits = paddle.to_tensor(rng.normal(size=(4, 18)).astype(np.float32))
    event_times = paddle.to_tensor(rng.uniform(size=(4, 18)).astype(np.float32), stop_gradient=False)
    total, _, _ = training_loss(logits, event_times, paddle.to_tensor(labels),
                                paddle.to_tensor(rng.uniform(size=4).astype(np.float32)), 1.0, BG)
    total.backward()
    nonzero = np.argwhere(event_times.grad.numpy() != 0)
    assert sorted(map(tuple, nonzero)) == [(0, 4), (2, 9), (3, 4)]


def _tiny_model(seed=0):
    paddle.seed(seed)
    with paddle.utils.unique_name.guard():
        return PPTimeSformer(TINY)


def _reference_momentum_steps(params, grads_per_step, lrs, decay, multiplier, clip, mu=0.9):
    """Momentum-Nesterov with L2 folded into the gradient after global-norm clipping (float64)."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        scale = clip / max(norm, clip)
        for name, g in grads.items():
            g = g.astype(np.float64) * scale + decay[name] * params[name]
            velocity[name] = mu * velocity[name] + g
            params[name] = params[name] - lr * multiplier[name] * (g + mu * velocity[name])
    return params


@pytest.mark.parametrize("clip", [40.0, 0.05])
def test_optimizer_steps_match_momentum_nesterov_with_groups(clip):
    model = _tiny_model()
    scheduler = WarmupCosine(0.01, steps_per_epoch=4, epochs=3, warmup_epochs=1, warmup_start_lr=0.001)
    optimizer = build_optimizer(model, scheduler, weight_decay=7e-5, clip_global_norm=clip, head_lr_multiplier=100.0)
    names = [n for n, _ in model.named_parameters()]
    start = {n: p.numpy().copy() for n, p in model.named_parameters()}
    rng = np.random.default_rng(4)
    grads_per_step, lrs = [], []
    for _ in range(3):
        video = paddle.to_tensor(rng.uniform(size=(2, 3, 4, 32, 32)).astype(np.float32))
        _, logits, event_times = model(video)
        loss, _, _ = training_loss(logits, event_times, paddle.to_tensor(np.array([1, BG])),
                                   paddle.to_tensor(np.array([0.3, 0.5], np.float32)), 1.0, BG)
        loss.backward()
        grads_per_step.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})
        lrs.append(optimizer.get_lr())
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
    decay = {n: 0.0 if n in EMBEDDINGS else 7e-5 for n in names}
    multiplier = {n: 100.0 if n.startswith("head.") else 1.0 for n in names}
    expected = _reference_momentum_steps(start, grads_per_step, lrs, decay, multiplier, clip)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.numpy(), expected[name], rtol=2e-4, atol=2e-7, err_msg=name)


def test_head_layers_have_their_own_optimizer_state():
    model = _tiny_model()
    optimizer = build_optimizer(model, WarmupCosine(0.01, 1, 10, 0), head_lr_multiplier=100.0)
    head = {n: p for n, p in model.named_parameters() if n.startswith("head.")}
    assert len({p.name for p in head.values()}) == 4  # four distinct internal names -> four velocities
    groups = optimizer._param_groups  # one group per head layer, each with the x100 multiplier
    by_group = [sorted(n for n, p in head.items() if any(p is q for q in g["params"])) for g in groups]
    assert ["head.fc.bias", "head.fc.weight"] in by_group
    assert ["head.fc_event_times.bias", "head.fc_event_times.weight"] in by_group
    assert all(p.optimize_attr["learning_rate"] == 100.0 for p in head.values())
    video = paddle.to_tensor(np.random.default_rng(5).uniform(size=(1, 3, 4, 32, 32)).astype(np.float32))
    _, logits, event_times = model(video)
    training_loss(logits, event_times, paddle.to_tensor(np.array([2])), paddle.to_tensor(np.array([0.25], np.float32)),
                  1.0, BG)[0].backward()
    optimizer.step()
    state = optimizer.state_dict()
    velocities = {n: next(v for k, v in state.items() if k.startswith(p.name + "_velocity")) for n, p in head.items()}
    assert not np.allclose(velocities["head.fc.weight"].numpy(), velocities["head.fc_event_times.weight"].numpy())
    assert len([k for k in state if "_velocity" in k]) == len(list(model.parameters()))


def test_shared_internal_names_are_refused():
    """The reference's bug: two head layers with one internal name shared one optimiser state."""

    def linear_built_in_a_fresh_name_scope():
        with paddle.utils.unique_name.guard():  # each scope names its first Linear linear_0
            return paddle.nn.Linear(4, 3)

    model = paddle.nn.Layer()
    model.head = paddle.nn.Layer()
    model.head.fc = linear_built_in_a_fresh_name_scope()
    model.head.fc_event_times = linear_built_in_a_fresh_name_scope()
    assert model.head.fc.weight.name == model.head.fc_event_times.weight.name
    with pytest.raises(TrainingError, match="share internal names"):
        build_optimizer(model, WarmupCosine(0.01, 1, 10, 0))


def test_warmup_cosine_per_iteration():
    base, start, steps, epochs, warmup = 0.01, 0.001, 10, 5, 2

    def cosine(epoch):
        return base * 0.5 * (math.cos(math.pi * epoch / epochs) + 1)

    scheduler = WarmupCosine(base, steps, epochs, warmup, start)
    for step in range(steps * epochs):
        epoch = step / steps
        expected = start + (cosine(warmup) - start) * epoch / warmup if epoch < warmup else cosine(epoch)
        assert scheduler.get_lr() == pytest.approx(expected, rel=1e-12, abs=1e-15), step
        scheduler.step()
    # continuous at the end of the warm-up, and zero at the end of the run
    assert WarmupCosine(base, steps, epochs, warmup, start, last_epoch=warmup * steps - 1).get_lr() == pytest.approx(cosine(warmup))


def test_the_schedule_goes_on_from_an_epoch_and_knows_its_peak():
    """A resumed run's schedule stands where the epochs put it, whatever its steps per epoch."""
    import math

    scheduler = WarmupCosine(0.01, steps_per_epoch=2, epochs=2, warmup_epochs=1)
    scheduler.go_to_epoch(1)
    assert scheduler.last_epoch == 2 and scheduler() == pytest.approx(0.005)
    assert scheduler.peak_from(2) == pytest.approx(0.005)  # past the warm-up: falling
    assert scheduler.peak_from(0) == pytest.approx(0.005)  # in it: its end, the highest
    assert scheduler.lr_at(3) == pytest.approx(0.01 * 0.5 * (math.cos(math.pi * 0.75) + 1))
    assert WarmupCosine(0.0, 2, 2, 1).peak_from(0) == 0
