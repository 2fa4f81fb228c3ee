"""The PyTorch engine (`--backend torch`) on the CPU, where CI can prove it.

Its FP32 forward is compared with ONNX Runtime on the bundle's ONNX and with the independent
float64 NumPy forward (tests/reference/numpy_timesformer.py); BF16 against FP32 on the frames of
a generated video; loading refuses weights that do not fit; `tsf-extract --backend torch` gives
ONNX Runtime's rows. The bundles hold reference-scaled synthetic weights (tests/reference/pdparams.py:
with a real initialisation's tiny weights attention is nearly uniform, and a mis-ordered token
layout could pass unnoticed), their ONNX written by tests/reference/onnx_timesformer.py, no Paddle. The CUDA runs are in tests/gpu/.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from reference.inputs import random_video
from reference.numpy_timesformer import forward as numpy_forward
from runtime_helpers import cosine_rows, extract, rel_l2, run_cli, video, write_bundle
from tsf.runtime.backends import AUTO_ORDER, select_backend
from tsf.runtime.bundle import load_bundle
from tsf.runtime.errors import BackendError, InputError

torch = pytest.importorskip("torch", reason="the torch extra is not installed (make setup-test installs it)")

NAMES = ("features", "logits", "event_times")
SMALL = dict(depth=2, width=128, frames=4, classes=18)
FP32_MAX_REL_L2 = 1e-5  # torch FP32 against ONNX Runtime FP32, every output
BF16_MIN_COSINE = 0.999  # per row, BF16 features against FP32


@pytest.fixture(scope="module")
def small_bundle_dir(tmp_path_factory, small_state):
    return write_bundle(tmp_path_factory.mktemp("torch") / "bundle", small_state, heads=2)


def assert_fp32_parity(bundle_dir, video_batch, expected=None):
    bundle = load_bundle(bundle_dir)
    engine = select_backend(bundle, "torch", "cpu", "fp32")
    ours = engine.run(video_batch)
    onnxruntime = select_backend(bundle, "onnxruntime", "cpu").run(video_batch)
    for name in NAMES:
        assert ours[name].dtype == np.float32 and ours[name].shape == onnxruntime[name].shape, name
        error = rel_l2(ours[name], onnxruntime[name])
        print(f"batch {len(video_batch)} {name}: torch vs ONNX Runtime rel L2 {error:.2e}")
        assert error <= FP32_MAX_REL_L2, name
    for name, exact in zip(NAMES, expected or ()):
        assert rel_l2(ours[name], exact) <= FP32_MAX_REL_L2, f"{name} against the float64 reference"
    return engine


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_matches_onnxruntime_and_the_numpy_reference(small_bundle_dir, small_state, batch):
    clips = random_video(np.random.default_rng(batch), batch, SMALL["frames"])
    engine = assert_fp32_parity(small_bundle_dir, clips, numpy_forward(small_state, clips))
    assert (engine.name, str(engine.device), engine.precision, engine.default_batch_size) == ("torch", "cpu", "fp32", 1)
    assert engine.wants_gpu_input is False


def test_the_comparison_can_fail(small_bundle_dir, small_state):
    """Weights loaded untransposed, or frames in another order, are caught by the bound above."""
    clips = random_video(np.random.default_rng(3), 1, SMALL["frames"])
    engine = select_backend(load_bundle(small_bundle_dir), "torch", "cpu", "fp32")
    expected = numpy_forward(small_state, clips)[0]
    assert rel_l2(engine.run(clips[:, :, ::-1].copy())["features"], expected) > 100 * FP32_MAX_REL_L2
    qkv = engine.model.backbone.blocks[0].attn.qkv.weight
    with torch.no_grad():
        qkv.copy_(qkv.t().reshape(qkv.shape))  # the [in, out] memory read as [out, in]: no transpose
    assert rel_l2(engine.run(clips)["features"], expected) > 100 * FP32_MAX_REL_L2


def test_bf16_stays_within_cosine_of_fp32_on_a_generated_video(small_bundle_dir):
    path = video("h264_25fps.mkv")
    fp32 = extract(path, small_bundle_dir, backend="torch", device="cpu", precision="fp32")
    bf16 = extract(path, small_bundle_dir, backend="torch", device="cpu", precision="bf16")
    cosines = cosine_rows(bf16.features, fp32.features)
    print(f"BF16 vs FP32 on {path.name}: {len(cosines)} rows, min row cosine {cosines.min():.6f}")
    assert bf16.features.shape == fp32.features.shape == (8, SMALL["width"])
    assert cosines.min() >= BF16_MIN_COSINE
    assert 0 < rel_l2(bf16.features, fp32.features)  # BF16 really ran


def test_tsf_extract_backend_torch_gives_the_onnxruntime_rows(small_bundle_dir, tmp_path, capsys):
    path = video("h264_2997fps.mkv")
    rows = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.npy"
        code, err = run_cli(capsys, [path, "-o", out, "--model", small_bundle_dir, "--backend", backend,
                                     "--device", "cpu", "--precision", "fp32", "--heads", "-q"])
        assert code == 0, err
        heads = np.load(tmp_path / f"{backend}.heads.npz")
        rows[backend] = {"features": np.load(out), "logits": heads["logits"], "event_times": heads["event_times"]}
    for name in NAMES:
        assert rows["torch"][name].shape == rows["onnxruntime"][name].shape
        assert rel_l2(rows["torch"][name], rows["onnxruntime"][name]) <= FP32_MAX_REL_L2, name
    meta = json.loads((tmp_path / "torch.json").read_text())
    assert (meta["backend"], meta["device"], meta["precision"]) == ("torch", "cpu", "fp32")
    assert meta["engine"] == {"library": "torch", "version": torch.__version__, "cuda": torch.version.cuda,
                              "device": "cpu", "gpu": None, "precision": "fp32", "threads": torch.get_num_threads(),
                              "float32_matmul_precision": torch.get_float32_matmul_precision()}


# ------------------------------------------------------------------ bundles that cannot serve it

def copy_bundle(source, target):
    shutil.copytree(source, target)
    return target


def test_a_bundle_without_weights_says_to_re_export_and_still_serves_the_other_engines(small_bundle_dir, tmp_path, capsys):
    older = copy_bundle(small_bundle_dir, tmp_path / "older")
    meta = json.loads((older / "bundle.json").read_text())
    del meta["safetensors"]
    (older / "bundle.json").write_text(json.dumps(meta))
    (older / "weights.safetensors").unlink()
    bundle = load_bundle(older)
    with pytest.raises(BackendError, match=r"^--backend torch: the bundle .* has no weights\.safetensors .*"
                                           r"re-export the bundle with this version's tsf-export$"):
        select_backend(bundle, "torch", "cpu")
    assert select_backend(bundle, "auto", "cpu").name == AUTO_ORDER["cpu"][0]  # the ONNX engines need no weights file
    code, err = run_cli(capsys, [video("short_5s.mkv"), "-o", tmp_path / "f.npy", "--model", older,
                                 "--backend", "torch", "--device", "cpu"])
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: --backend torch: the bundle ") and last.endswith("tsf-export")
    assert not (tmp_path / "f.npy").exists()


def write_state(path, state):
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(value) for name, value in state.items()}, str(path))


def vouch_for_weights(bundle_dir):
    """bundle.json's sha256 for the weights file as it now is: the bundle is consistent, the
    weights themselves are what the test is about (a file that does not match its sha256 is
    refused at load, tests/test_bundle.py)."""
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    meta["safetensors"]["sha256"] = hashlib.sha256((bundle_dir / "weights.safetensors").read_bytes()).hexdigest()
    (bundle_dir / "bundle.json").write_text(json.dumps(meta))


def test_weights_that_do_not_fit_are_refused_naming_every_key(small_bundle_dir, small_state, tmp_path):
    broken = copy_bundle(small_bundle_dir, tmp_path / "broken")
    state = dict(small_state)
    del state["backbone.blocks.1.mlp.fc2.bias"]
    state["backbone.blocks.0.extra.weight"] = np.zeros((2, 2), np.float32)
    state["head.fc.weight"] = state["head.fc.weight"].T  # stored [out, in]: a torch checkpoint, not ours
    write_state(broken / "weights.safetensors", state)
    vouch_for_weights(broken)
    with pytest.raises(InputError) as info:
        select_backend(load_bundle(broken), "torch", "cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(broken / "weights.safetensors"))
    assert "missing backbone.blocks.1.mlp.fc2.bias [128]" in message
    assert "unexpected backbone.blocks.0.extra.weight [2, 2]" in message
    assert "mis-shaped head.fc.weight (expected [128, 18], got [18, 128])" in message


def test_a_damaged_weights_file_is_one_line(small_bundle_dir, tmp_path):
    damaged = copy_bundle(small_bundle_dir, tmp_path / "damaged")
    data = (damaged / "weights.safetensors").read_bytes()
    (damaged / "weights.safetensors").write_bytes(data[: len(data) // 2])
    vouch_for_weights(damaged)
    with pytest.raises(InputError, match=r"weights\.safetensors: cannot read the weights \(.*\); re-export") as info:
        select_backend(load_bundle(damaged), "torch", "cpu")
    assert "\n" not in str(info.value)


def test_cpu_offers_fp32_and_bf16_only(small_bundle_dir):
    with pytest.raises(BackendError, match="torch on cpu runs fp32, bf16, not fp16"):
        select_backend(load_bundle(small_bundle_dir), "torch", "cpu", "fp16")


# ------------------------------------------------------------------ choosing it on a GPU machine

class Loaded:
    def __init__(self, name):
        self.name = name


def gpu_machine(monkeypatch, available):
    """A machine whose driver reports one GPU; each engine loads if named in `available`."""
    import importlib

    from tsf.runtime import gpu
    from tsf.runtime.backends import ENGINES
    from tsf.runtime.errors import EngineUnavailable

    monkeypatch.setattr(gpu, "cuda_device_count", lambda: 1)
    # A CLI test run earlier left its handler (on a closed captured stderr) on the logger.
    monkeypatch.setattr(logging.getLogger("tsf"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("tsf"), "propagate", True)
    tried = []
    for name in ENGINES:
        module = importlib.import_module(f"tsf.runtime.backends.{name}")

        def load(bundle, device, precision, threads, name=name):
            tried.append((name, str(device), precision))
            if name not in available:
                raise EngineUnavailable(f"{name} cannot run here")
            return Loaded(name)

        monkeypatch.setattr(module, "load", load)
    return tried


@pytest.mark.parametrize("available, chosen, tried", [
    ({"tensorrt", "torch", "onnxruntime"}, "tensorrt", ["tensorrt"]),
    ({"torch", "onnxruntime"}, "torch", ["tensorrt", "torch"]),
    ({"onnxruntime"}, "onnxruntime", ["tensorrt", "torch", "onnxruntime"]),
])
def test_auto_on_a_gpu_is_tensorrt_then_torch_then_onnxruntime(small_bundle_dir, monkeypatch, available, chosen,
                                                                 tried):
    attempts = gpu_machine(monkeypatch, available)
    assert select_backend(load_bundle(small_bundle_dir), "auto", "auto").name == chosen
    assert attempts == [(name, "cuda:0", "auto") for name in tried]


def test_an_insisted_gpu_never_falls_back_to_the_cpu(small_bundle_dir, monkeypatch):
    attempts = gpu_machine(monkeypatch, available=set())
    bundle = load_bundle(small_bundle_dir)
    with pytest.raises(BackendError, match="no engine can run on cuda:0: tensorrt: tensorrt cannot run here; "
                                           "torch: torch cannot run here; onnxruntime: onnxruntime cannot"):
        select_backend(bundle, "auto", "cuda")
    with pytest.raises(BackendError, match="^--backend torch: torch cannot run here$"):
        select_backend(bundle, "torch", "cuda:0", "bf16")
    assert all(device == "cuda:0" for _, device, _ in attempts)


def test_torch_on_a_gpu_without_cuda_says_why(small_bundle_dir, monkeypatch):
    """This CPU build of torch on a machine whose driver reports a GPU."""
    from tsf.runtime import gpu

    monkeypatch.setattr(gpu, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BackendError, match=r"--backend torch: this PyTorch .* \(a CPU-only build\) cannot use the GPU"):
        select_backend(load_bundle(small_bundle_dir), "torch", "cuda")


# ------------------------------------------------------------------ the reference-sized model

@pytest.mark.slow
@pytest.mark.full_model
@pytest.mark.timeout(1800)
def test_full_size_fp32_matches_onnxruntime_and_bf16_stays_close(full_runtime_bundle, full_reference_clip):
    """12 x 768, 16 frames: FP32 against ONNX Runtime at batch 1 and 3 and against the float64
    reference; then tsf-extract's rows in FP32 and BF16 on a generated video."""
    clip, expected = full_reference_clip
    assert_fp32_parity(full_runtime_bundle, clip, expected)
    assert_fp32_parity(full_runtime_bundle, random_video(np.random.default_rng(4), 3, 16))

    path = video("odd_455x255.mkv")  # 7 s: 2 reference rows
    rows = {(backend, precision): extract(path, full_runtime_bundle, align="reference", backend=backend,
                                          device="cpu", precision=precision).features
            for backend, precision in (("onnxruntime", "fp32"), ("torch", "fp32"), ("torch", "bf16"))}
    assert rows["torch", "fp32"].shape == (2, 768)
    assert rel_l2(rows["torch", "fp32"], rows["onnxruntime", "fp32"]) <= FP32_MAX_REL_L2
    cosines = cosine_rows(rows["torch", "bf16"], rows["torch", "fp32"])
    print(f"full size, BF16 vs FP32 on {path.name}: min row cosine {cosines.min():.6f}")
    assert cosines.min() >= BF16_MIN_COSINE
