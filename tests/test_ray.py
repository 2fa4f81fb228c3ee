"""tsf-extract --ray on a local Ray cluster with 2 CPUs: the plain command's outputs, skips, retries."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime_helpers import run_cli, small_bundle, video
from tsf.runtime.extractor import Extractor
from tsf.runtime.jobs import Job, JobLoop
from tsf.runtime.scale.ray_pool import ExtractWorker, run_on_ray

ray = pytest.importorskip("ray")

# Starting a local Ray takes seconds; a test (with the module's Ray, started in its set-up) that
# takes this long is stuck, and fails rather than holding the suite.
pytestmark = pytest.mark.timeout(600)

VOLATILE_METADATA = {"created", "timings", "outputs", "settings", "engine"}


@pytest.fixture(scope="module")
def local_ray():
    from ray import cloudpickle

    # The failing workers below live in this test module, which Ray's worker processes cannot
    # import: ship them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # "local": a Ray of the tests' own, never the cluster RAY_ADDRESS or /tmp/ray names (on a
    # shared machine, another job's).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class RecordingRay:
    """Stands in for the `ray` module where only `ray.init(address=..., **options)` is called."""

    def __init__(self):
        self.addresses = []

    def init(self, address=None, **options):
        self.addresses.append(address)


def test_ray_without_an_address_is_a_ray_of_its_own_or_ray_address(monkeypatch):
    from tsf.runtime.scale.ray_pool import start_ray

    recording = RecordingRay()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(recording, None)
    start_ray(recording, "auto")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    start_ray(recording, None)
    assert recording.addresses == ["local", "auto", "auto"]


def test_an_address_where_nothing_listens_fails_at_once():
    """ray.init would retry for about ten minutes, printing a warning every few seconds."""
    import socket

    from tsf.runtime.errors import BackendError
    from tsf.runtime.scale.ray_pool import start_ray

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recording = RecordingRay()
    with pytest.raises(BackendError, match=f"cannot reach Ray at ray://127.0.0.1:{port}: connection refused"):
        start_ray(recording, f"ray://127.0.0.1:{port}")
    assert recording.addresses == []


def three_videos(tmp_path: Path) -> Path:
    data = tmp_path / "videos"
    for i in range(3):
        (data / f"game{i}").mkdir(parents=True)
        os.link(video("h264_25fps.mkv"), data / f"game{i}" / "1_224p.mkv")
    return data


def test_ray_gives_the_plain_commands_outputs(tmp_path, capsys, local_ray):
    data = three_videos(tmp_path)
    common = [data, "--model", small_bundle(4), "--device", "cpu", "--heads", "-q"]
    code, err = run_cli(capsys, common + ["-o", tmp_path / "plain"])
    assert code == 0, err
    code, err = run_cli(capsys, common + ["-o", tmp_path / "ray", "--report", tmp_path / "ray.jsonl",
                                  "--ray-cpus-per-worker", "1", "--ray"])
    assert code == 0, err
    plain = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*") if p.is_file())
    on_ray = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert plain == on_ray and len(plain) == 9
    for relative in plain:
        a, b = tmp_path / "plain" / relative, tmp_path / "ray" / relative
        if a.suffix == ".npy":
            np.testing.assert_allclose(np.load(a), np.load(b), rtol=0, atol=1e-5)
        elif a.name.endswith(".heads.npz"):
            for key in ("logits", "event_times"):
                np.testing.assert_allclose(np.load(a)[key], np.load(b)[key], rtol=0, atol=1e-5)
        else:
            meta_a, meta_b = json.loads(a.read_text()), json.loads(b.read_text())
            assert {k: v for k, v in meta_a.items() if k not in VOLATILE_METADATA} == \
                   {k: v for k, v in meta_b.items() if k not in VOLATILE_METADATA}
    report = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert sorted(line["video"] for line in report) == sorted(str(p) for p in data.rglob("*.mkv"))
    assert all(line["status"] == "done" and line["rows"] == 8 and line["attempts"] == 1 for line in report)

    code, err = run_cli(capsys, common[:-1] + ["-o", tmp_path / "ray", "--ray"])
    assert code == 0 and "0 done, 3 skipped" in err


class DiesOnceWorker(ExtractWorker):
    """Loses its process the first time it meets game1 (as a node loss or the OOM killer would)."""

    def process(self, job):
        marker = job.output.parent / "died-once"
        if job.video.parent.name == "game1" and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(1)
        return super().process(job)


class AlwaysDiesWorker(ExtractWorker):
    def process(self, job):
        if job.video.parent.name == "game1":
            os._exit(1)
        return super().process(job)


@pytest.mark.parametrize("worker_class, attempts_for_game1", [(DiesOnceWorker, 2), (AlwaysDiesWorker, None)])
def test_a_lost_worker_is_replaced_and_its_video_retried(tmp_path, local_ray, monkeypatch, worker_class,
                                                         attempts_for_game1):
    from tsf.runtime.jobs import RETRIES
    from tsf.runtime.scale import ray_pool

    monkeypatch.setattr(ray_pool, "ExtractWorker", worker_class)  # shipped to Ray by value (local_ray)
    data = three_videos(tmp_path)
    jobs = [Job(v, tmp_path / "out" / v.parent.name / "1_224p.npy") for v in sorted(data.rglob("*.mkv"))]
    records, errors = [], []
    loop = JobLoop(report=errors.append, record=lambda job, outcome: records.append((job.video.parent.name, outcome)))
    summary = run_on_ray(jobs, Extractor(small_bundle(4), device="cpu"), loop, address=None, cpus_per_worker=1)
    outcome = {name: (o.status, o.attempts) for name, o in records}
    assert outcome["game0"] == ("done", 1) and outcome["game2"] == ("done", 1)
    if attempts_for_game1:
        assert outcome["game1"] == ("done", attempts_for_game1) and summary.ok
        assert (tmp_path / "out" / "game1" / "1_224p.npy").is_file()
    else:
        assert outcome["game1"] == ("failed", RETRIES + 1) and not summary.ok
        assert len(errors) == 1 and f"failed {RETRIES + 1} times on Ray: worker lost" in errors[0]
