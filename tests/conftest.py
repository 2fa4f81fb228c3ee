"""Shared fixtures. Kept generic (no Paddle import here: runtime tests must run without it).

The independent float64 references live in `tests/reference/`; pytest puts `tests/` on sys.path,
so tests import them as `from reference.numpy_timesformer import forward`.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

from reference.inputs import random_video
from reference.pdparams import reference_state, write_pdparams

# The runtime keeps per-bundle records (fidelity gates, INT8 models) under $TSF_HOME/cache: the
# tests keep theirs in a folder of their own (shared by the session, as a user's would be), never in
# the home of whoever runs them. Child processes inherit it.
os.environ["TSF_HOME"] = tempfile.mkdtemp(prefix="tsf-tests-home-")
atexit.register(shutil.rmtree, os.environ["TSF_HOME"], ignore_errors=True)

# Host settings that change what tsf does: a Slurm job's array share and CPU count, a Ray cluster
# to join, tsf's own switches. TSF_TENSORRT_STUBS is the suite's own setting (test_gpu_static.py).
HOST_SETTINGS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                 "SLURM_ARRAY_TASK_STEP", "SLURM_CPUS_PER_TASK", "RAY_ADDRESS")
KEPT_TSF_SETTINGS = ("TSF_HOME", "TSF_TENSORRT_STUBS")


@pytest.fixture(scope="session", autouse=True)
def no_host_settings():
    """Every test (and every session fixture, which may export a bundle) runs as on a bare machine:
    without the host's Slurm, Ray and TSF_* settings; the TSF_HOME above stays. Tests that need one
    set it with monkeypatch, which restores this state afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name in HOST_SETTINGS or (name.startswith("TSF_") and name not in KEPT_TSF_SETTINGS):
                patch.delenv(name)
        yield


# Paddle is for tsf-export and tsf-train only: every test not marked `paddle` runs with Paddle's
# import blocked (and, where an earlier test of the process imported it, hidden), so the runtime's
# tests prove it runs where Paddle is not installed.
PADDLE_MODULES = ("paddle", "paddle2onnx")


class _PaddleBlocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PADDLE_MODULES:
            raise ImportError(f"{name} is blocked in tests not marked 'paddle': the runtime must not need it")
        return None


@pytest.fixture(autouse=True)
def _paddle_only_where_marked(request):
    if request.node.get_closest_marker("paddle"):
        yield
        return
    import sys

    hidden = {name: module for name, module in sys.modules.items() if name.split(".")[0] in PADDLE_MODULES}
    for name in hidden:
        del sys.modules[name]
    blocker = _PaddleBlocked()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


FULL_STATE_SEED = 20240
FULL_CLIP_SEED = 3
SMALL_STATE_SEED = 31


@pytest.fixture(scope="session")
def small_state():
    """Every tensor of a depth-2, width-128, 4-frame, 18-class reference .pdparams, random.

    Modules that need other weights of that size define their own `small_state`."""
    return reference_state(np.random.default_rng(SMALL_STATE_SEED), depth=2, width=128, frames=4, classes=18)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory, small_state):
    """(bundle directory, weights file): `small_state` written as a .pdparams and exported with the
    SoccerNet class names, shared by the read-only tests of every module."""
    from tsf.export import export_bundle  # Paddle: only when used

    root = tmp_path_factory.mktemp("small")
    weights = write_pdparams(small_state, root / "small.pdparams")
    return export_bundle(root / "bundle", weights=weights, soccernet_classes=True), weights


@pytest.fixture(scope="session")
def full_reference_state():
    """Every tensor of a full-size reference .pdparams (227 tensors, ~462 MiB float32), random.

    Session-scoped because building it costs seconds and memory; treat it as read-only."""
    return reference_state(np.random.default_rng(FULL_STATE_SEED))


@pytest.fixture(scope="session")
def full_reference_pdparams(tmp_path_factory, full_reference_state):
    """`full_reference_state` written as a reference-style .pdparams (with bookkeeping key)."""
    path = tmp_path_factory.mktemp("weights") / "full_reference.pdparams"
    return write_pdparams(full_reference_state, path)


@pytest.fixture(scope="session")
def full_reference_bundle(tmp_path_factory, full_reference_pdparams):
    """`full_reference_pdparams` exported to a bundle (minutes on 2 cores, ~5 GB of RAM for the
    conversion): session-scoped so that the export test and the engines' full-size tests share one."""
    from tsf.export import export_bundle  # Paddle: only when used

    return export_bundle(tmp_path_factory.mktemp("bundles") / "full_reference", weights=full_reference_pdparams)


@pytest.fixture(scope="session")
def full_runtime_bundle(tmp_path_factory, full_reference_state):
    """`full_reference_state` as a bundle without Paddle (runtime_helpers.write_bundle): the runtime's
    full-size tests run where the exporter cannot."""
    from runtime_helpers import write_bundle

    return write_bundle(tmp_path_factory.mktemp("bundles") / "full_runtime", full_reference_state, heads=12)


@pytest.fixture(scope="session")
def full_reference_clip(full_reference_state):
    """(video float32 [1, 3, 16, 224, 224], (features, logits, event_times) float64): one random
    clip through the float64 NumPy reference on `full_reference_state`. Session-scoped so that
    the ~30-60 s reference forward is paid once however many backends compare against it."""
    from reference.numpy_timesformer import forward as numpy_forward  # scipy: only when used

    video = random_video(np.random.default_rng(FULL_CLIP_SEED), 1, 16)
    return video, numpy_forward(full_reference_state, video)


@pytest.fixture
def write_weights(tmp_path):
    """Factory: write_weights(state, name="weights.pdparams", bookkeeping=True) -> path."""
    def write(state, name="weights.pdparams", bookkeeping=True):
        return write_pdparams(state, tmp_path / name, bookkeeping=bookkeeping)
    return write
