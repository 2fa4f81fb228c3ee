"""Learned spotting heads on a CUDA GPU: `tsf-spot train --device cuda` trains and checkpoints there,
and the head it saves spots the same events on the CPU (fidelity.py's bar for the same arithmetic
on two devices). The heads' arithmetic is proven on the CPU in tests/test_spot_heads.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpu_helpers import torch_cuda_reason
from tsf.runtime.fidelity import MAX_REL_L2, compare

REASON = torch_cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

TINY = {"dense": (("hidden", 8), ("max_channels", 16), ("chunk_seconds", 32), ("batch_size", 4), ("max_epochs", 2)),
        "netvlad++": (("vocabulary", 8), ("reduced_width", 32), ("batch_size", 8), ("max_epochs", 2))}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_a_head_trained_on_the_gpu_spots_alike_on_the_cpu(tmp_path, kind):
    import torch

    from tsf.runtime.spotting.head_bundle import FeatureKind, load_head
    from tsf.runtime.spotting.head_targets import LabelledHalf
    from tsf.runtime.spotting.head_train import Trainer, TrainSettings
    from tsf.runtime.spotting.labels import LabelledEvent

    rng = np.random.default_rng(0)
    events = [LabelledEvent(1, 30_500, "A"), LabelledEvent(1, 90_500, "B")]
    halves = [LabelledHalf.from_events(f"g{k}", 1, rng.standard_normal((150, 12)).astype(np.float32),
                                       np.arange(150) + 0.5, events, ("A", "B")) for k in range(3)]
    trainer = Trainer(tmp_path / "run", TrainSettings(kind, TINY[kind], validate_every=1, device="cuda"), ("A", "B"),
                      FeatureKind("tiny", 12, 1.0), halves[:2], halves[2:], progress=False)
    assert trainer.device.type == "cuda"
    assert trainer.run()["epochs"] == 2
    head = load_head(tmp_path / "run" / "head")
    rows, row_times = halves[2].rows, halves[2].row_times
    cpu_times, cpu_confidences = head.candidates(rows, row_times)
    head.model.to("cuda")
    gpu_times, gpu_confidences = head.candidates(rows, row_times)
    assert compare(cpu_confidences, gpu_confidences)["rel_l2"] <= MAX_REL_L2
    assert compare(cpu_times, gpu_times)["rel_l2"] <= MAX_REL_L2
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in saved["model"].values())
