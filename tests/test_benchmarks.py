"""The benchmarks' own pieces: the FLOP count, the baseline's frame indices, per-process peak memory,
and one smoke run of every benchmark on a tiny model and short videos. No timing assertions: speed
lives in benchmarks/RESULTS.md, these tests only prove the measuring code measures the right thing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is not installed; it lives beside the packages
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import baseline, common, run_all  # noqa: E402
from benchmarks.flops import clip_flops  # noqa: E402
from tsf.runtime.backends import ENGINES, engine_precisions  # noqa: E402
from tsf.runtime.backends.precision import native_bf16  # noqa: E402

pytestmark = pytest.mark.paddle  # the benchmarks export their bundles and run the Paddle baseline


def test_reference_model_is_about_0_78_tflop_per_clip():
    total = clip_flops()["total"]
    assert 0.78e12 < total < 0.79e12
    # docs/toolchain.md quotes 392 GFLOP for the 8-frame ViT-B: the same count at half the frames.
    assert clip_flops(frames=8)["total"] == pytest.approx(392e9, rel=2e-3)


def test_flops_grow_linearly_with_depth_and_ignore_heads():
    per_block = clip_flops(depth=1)["total"] - clip_flops(depth=0)["total"]
    assert clip_flops(depth=12)["total"] == pytest.approx(clip_flops(depth=0)["total"] + 12 * per_block)
    assert clip_flops(heads=1)["total"] == clip_flops(heads=12)["total"]


def _onnx_matmul_flops(onnx_path: Path, frames: int) -> int:
    """Independent count: run the exported graph at batch 1 and read every MatMul/Gemm/Conv shape."""
    import onnx
    import onnxruntime

    model = onnx.load(str(onnx_path))
    products = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    known = {o.name for o in model.graph.output} | {i.name for i in model.graph.initializer}
    initializers = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in products:
        for name in (node.input[0], node.output[0]):
            if name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    video = np.random.default_rng(0).random((1, 3, frames, 224, 224), dtype=np.float32)
    shapes = {n: v.shape for n, v in zip(names, session.run(names, {"video": video}))}
    total = 0
    for node in products:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            weight = initializers[node.input[1]]
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        else:
            total += 2 * int(np.prod(out)) * shapes[node.input[0]][-1]
    return total


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


def test_flop_formula_matches_the_exported_graph(bench_cache):
    arch = run_all.TINY
    bundle, _ = common.ensure_bundle(bench_cache, arch)
    counted = _onnx_matmul_flops(bundle / "model.onnx", arch["frames"])
    assert clip_flops(**arch)["total"] == pytest.approx(counted, rel=1e-6)


def test_baseline_uses_the_reference_frame_indices():
    from fractions import Fraction

    # docs/reference.md §3, at 25 fps: 25i + {0, 8, 16, 25, 33, 41, 50, 58, 66, 75, 83, 91, 100, 108, 116, 125}.
    offsets = [0, 8, 16, 25, 33, 41, 50, 58, 66, 75, 83, 91, 100, 108, 116, 125]
    for row in (0, 3, 40):
        assert baseline.reference_frame_indices(row, Fraction(25), 10_000) == [25 * row + o for o in offsets]
    # The last frame index is pulled back by one when it equals the frame count.
    assert baseline.reference_frame_indices(1, Fraction(25), 150)[-1] == 149
    assert baseline.reference_row_count(12.9) == 7


def test_each_child_reports_its_own_peak_memory():
    big = common.run_child([sys.executable, "-c", "import numpy as np; a = np.ones(300 * 2**20, np.uint8)"]).check()
    small = common.run_child([sys.executable, "-c", "pass"]).check()
    assert big.peak_rss_bytes > 300 * 2**20
    assert small.peak_rss_bytes < 100 * 2**20  # not the earlier child's high-water mark


def test_call_in_child_returns_the_result_and_reports_failures():
    run = common.call_in_child("benchmarks.flops:clip_flops", {"depth": 0, "frames": 2})
    assert run.check().result["total"] == clip_flops(depth=0, frames=2)["total"]
    failed = common.call_in_child("benchmarks.flops:clip_flops", {"no_such_argument": 1, "frames": "x"})
    with pytest.raises(RuntimeError, match="benchmark child failed"):
        failed.check()


def test_markdown_table_formats_and_dashes_missing_values():
    table = common.markdown_table([{"a": 1.23456, "b": None}], [("a", "A", ".2f"), ("b", "B", "")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1.23 | – |"]


@pytest.mark.slow
def test_smoke_run_of_every_benchmark(tmp_path, bench_cache):
    results = run_all.run("smoke", tmp_path, bench_cache)
    sections = ("model_only", "end_to_end", "decode_only", "baseline")
    assert not {k: results[k].get("error") for k in sections if "error" in results[k]}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(sections) <= set(on_disk)
    assert on_disk["provenance"]["commit"] and on_disk["provenance"]["machine"]["cpu_model"]
    text = (tmp_path / "results.md").read_text()
    for title in ("Model only", "End to end", "Decode only", "Reference-style baseline"):
        assert f"## {title}" in text
    for plot in results["plots"]:
        assert (tmp_path / plot).stat().st_size > 0

    # Every CPU engine x precision through the registry (BF16 only where the CPU has it natively),
    # each against its own precision's ceiling.
    entries = results["model_only"]["results"]
    variants = [(e["backend"], e["precision"]) for e in entries]
    expected = [(engine, precision) for engine in ENGINES for precision in engine_precisions(engine).get("cpu", ())
                if precision != "bf16" or native_bf16() is not None]
    assert variants == expected
    model_rows = [r for e in entries for r in e["rows"]]
    assert [r["batch"] for r in model_rows] == [1, 2] * len(entries)
    assert all(r["clips_per_s"] > 0 and 0 < r["fraction_of_ceiling"] for r in model_rows)
    assert {"cpu fp32", "cpu int8", "cpu fp32 blas"} <= set(results["model_only"]["ceilings"])

    # 3 s of 25 fps video, --align center: 3 windows, every frame decoded; the tsf-extract row too.
    e2e = results["end_to_end"]["rows"]
    assert [r.get("error") for r in e2e] == [None] * (len(expected) + 1)
    assert [(r["backend"], r["precision"]) for r in e2e[:-1]] == expected
    assert [r["rows"] for r in e2e] == [3] * (len(expected) + 1)
    assert e2e[0]["frames_decoded"] == 75 and e2e[0]["peak_rss_bytes"] > 0
    assert {"decode", "preprocess", "inference", "write"} <= set(e2e[0]["stages"])

    decode = {r["mode"]: r for r in results["decode_only"]["rows"]}
    assert decode["decode"]["frames_decoded"] == decode["rgb-all"]["frames_converted"] == 50
    assert 0 < decode["needed"]["frames_converted"] < 50

    # Same weights, same video, same frames: the reference-style baseline and tsf-extract agree.
    agreement = results["baseline"]["agreement"]
    assert agreement["rows_a"] == agreement["rows_b"] == 2  # int(7 - 5) reference rows
    assert agreement["min_cosine"] > 0.9999
    assert results["baseline"]["speed_ratio"] > 0


# --- The device check (benchmarks/device_check.py): its install, every step, the carry ---

# Where `make setup-test` puts the wheels of CI's dry run, in the virtual environment
# (`python -m benchmarks.device_check --prepare --dry-run --wheels-only --carried VENV/device-check-dry-run`).
DRY_RUN_FOLDER = "device-check-dry-run"


def dry_run_wheels() -> Path:
    """The wheels prepared for this Python's dry run, in this environment or the one whose
    packages it reuses."""
    venvs = [Path(sys.prefix)] + [Path(p).parents[2] for p in sys.path if p.endswith("site-packages")]
    for venv in venvs:
        wheels = venv / DRY_RUN_FOLDER / "wheels"
        if list(wheels.glob("*.whl")):
            return wheels
    pytest.fail(f"no wheels for the device check's dry run in {sys.prefix}/{DRY_RUN_FOLDER}: `make setup-test` "
                "fetches them (python -m benchmarks.device_check --prepare --dry-run --wheels-only --carried "
                f"{sys.prefix}/{DRY_RUN_FOLDER})")


@pytest.fixture(scope="module")
def device_check_bundle(tmp_path_factory) -> Path:
    """The small bundle --prepare exports for parity (Paddle: here, never on the GPU machine)."""
    from benchmarks import device_check

    return device_check.prepare_bundle(tmp_path_factory.mktemp("carried"))


def fresh_environment(folder: Path) -> str:
    """A virtual environment without tsf whose other packages (torch, numpy, onnxruntime, pytest,
    pip, setuptools...) are this one's: what the GPU machine's image is to the check there."""
    import subprocess

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    # Plain path lines: the .pth files in those folders (tsf's editable finder) are not run from here.
    (site / "image_packages.pth").write_text("".join(f"{p}\n" for p in sys.path if p.endswith("site-packages")))
    return str(folder / "bin" / "python")


@pytest.mark.slow
def test_device_check_dry_run_installs_as_the_gpu_machine_does_and_runs_every_step(tmp_path, device_check_bundle):
    """The whole check on the CPU at tiny size, through the real install path: a fresh environment
    without tsf, the project and this Python's pinned wheels (PyNvVideoCodec stripped) installed
    with --no-index --no-deps --target, every step a child that sees only that."""
    import shutil

    from benchmarks import device_check

    python = fresh_environment(tmp_path / "venv")
    no_tsf = common.run_child([python, "-P", "-c", "import tsf.runtime"], env={"PYTHONPATH": ""})
    assert no_tsf.returncode != 0 and "No module named" in no_tsf.stderr
    carried, out = tmp_path / "carried", tmp_path / "out"
    shutil.copytree(device_check_bundle, carried / "bundle")
    shutil.copytree(dry_run_wheels(), carried / "wheels")
    run = common.run_child([python, "-P", "-m", "benchmarks.device_check", "--dry-run", "--python", python,
                            "--carried", str(carried), "--cache", str(tmp_path / "cache"), "--out", str(out)],
                           env={"PYTHONPATH": str(REPO_ROOT)}, timeout_s=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "dry-run" and results["provenance"]["commit"]
    assert list(results["steps"]) == ["install", "facts", "video", "parity", "model_only", "end_to_end", "decoders",
                                      "pytest"]
    assert all(step["ok"] for step in results["steps"].values())
    assert results["parent_imports"] == []  # the check itself imported none of what it installed

    installed = results["install"]["installed"]
    assert any(name.startswith("tsf-") for name in installed) and any(name.startswith("av-") for name in installed)
    assert any(name.startswith("pynvvideocodec-") for name in installed)
    facts = results["facts"]
    assert facts["packages"]["tsf"]["from"] == facts["packages"]["av"]["from"] == "the check's install"
    assert set(facts["driver_libraries"]) == set(device_check.DRIVER_LIBRARIES)
    assert "PyNvVideoCodec" in facts["packages"] and facts["missing"]  # no GPU here: named, not fatal

    parity = results["parity"]["precisions"]
    assert set(parity) == {"fp32", "bf16"} and parity["fp32"]["passed"]
    assert parity["fp32"]["rel_l2"]["features"] <= 1e-5  # the CPU engines agree as CI proves them to
    model_rows = results["model_only"]["rows"]
    assert [(r["precision"], r["batch"]) for r in model_rows] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(r["clips_per_s"] > 0 and r["share_of_bf16_ceiling"] > 0 for r in model_rows)
    (e2e,) = results["end_to_end"]["runs"]
    assert (e2e["decoder"], e2e["backend"], e2e["rows"]) == ("cpu", "torch", 6)  # 6 s: one window per second
    assert e2e["projected_half_s"] > 0 and e2e["timings"]["producing_seconds"] > 0
    decoders = results["decoders"]  # issue 20's rows, on the CPU's decoder: K = 1 and 2, 2 videos at once
    assert [(r["videos_at_once"], r["decoders_asked"]) for r in decoders["rows"]] == [(1, 1), (1, 2), (2, 1)]
    assert all(r["frames_per_s"] > 0 and r["share_of_ideal"] > 0 for r in decoders["rows"] + decoders["season"])
    assert decoders["end_to_end"]["rows"] == 6 and decoders["end_to_end"]["decoders"] >= 1
    assert "skipped" in results["pytest"]["summary"] and (out / "pytest-gpu.txt").stat().st_size > 0
    # Measured on the CPU too (no GPU here, so they say nothing about one): the fidelity and the decoders' rows.
    assert [t["met"] is None for t in results["targets"]] == [True, True, False, True, False, False, False]
    text = (out / "results.md").read_text()
    for title in ("Facts", "Parity", "Model only", "End to end", "Decoders", "Targets"):
        assert f"### {title}" in text
    assert "===== install" in (out / "steps.log").read_text()


def test_device_check_carry_fits_its_limit(device_check_bundle):
    """What a `run` call carries: the working tree, the small bundle and the pinned wheels as
    --prepare makes them, within the check's limit (the tool's is 64 MiB)."""
    from benchmarks import device_check

    carry = (device_check.tree_bytes() + device_check.folder_bytes(device_check_bundle)
             + sum(device_check.DEVICE_WHEEL_BYTES.values()))
    print(f"\ncarry: {carry / 2**20:.1f} MiB of {device_check.CARRY_LIMIT_MIB}")
    assert carry <= device_check.CARRY_LIMIT_MIB * 2**20
    for name, size in device_check.DEVICE_WHEEL_BYTES.items():
        assert name in device_check.PINNED and size <= device_check.PINNED[name][1]


def test_device_check_strips_a_wheel_to_what_loads_and_pip_installs_it(tmp_path):
    """benchmarks/strip_wheel.py on a wheel laid out like PyNvVideoCodec 2.2.4's: the package, one
    copy of each library (its soname), the grafted libraries and the dist-info stay; RECORD matches
    every file; pip installs the result."""
    import subprocess
    import zipfile

    from benchmarks.strip_wheel import record_hash, strip_wheel

    library = b"\x7fELF libavformat"
    files = {"PyNvVideoCodec/__init__.py": b"", "PyNvVideoCodec/decoders/__init__.py": b"",
             "PyNvVideoCodec/libavformat.so": library, "PyNvVideoCodec/libavformat.so.63": library,
             "PyNvVideoCodec/libavformat.so.63.1.101": library, "pynvvideocodec./libcudart-c64a25f3.so.12.3.101": b"rt",
             "pynvvideocodec-2.2.4.data/data/external/ffmpeg/src/ffmpeg-9.0.1.tar.xz": b"source" * 100,
             "samples/jupyter/simple_decode_tutorial.ipynb": b"{}", "benchmarks/frame_sampling_benchmark.py": b"",
             "pynvvideocodec-2.2.4.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pynvvideocodec\nVersion: 2.2.4\n",
             "pynvvideocodec-2.2.4.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
             "pynvvideocodec-2.2.4.dist-info/top_level.txt": b"PyNvVideoCodec\nbenchmarks\nsamples\n",
             "pynvvideocodec-2.2.4.dist-info/licenses/LICENSE.txt": b"MIT"}
    source = tmp_path / "pynvvideocodec-2.2.4-py3-none-any.whl"
    with zipfile.ZipFile(source, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("pynvvideocodec-2.2.4.dist-info/RECORD", "")
    stripped = strip_wheel(source, tmp_path / "out")
    with zipfile.ZipFile(stripped) as wheel:
        names = set(wheel.namelist())
        record = wheel.read("pynvvideocodec-2.2.4.dist-info/RECORD").decode().splitlines()
        top_level = wheel.read("pynvvideocodec-2.2.4.dist-info/top_level.txt").decode()
        for line in record[:-1]:
            name, digest, size = line.split(",")
            assert digest == record_hash(wheel.read(name)) and int(size) == len(wheel.read(name))
    assert names == {"PyNvVideoCodec/__init__.py", "PyNvVideoCodec/decoders/__init__.py",
                     "PyNvVideoCodec/libavformat.so.63", "pynvvideocodec./libcudart-c64a25f3.so.12.3.101",
                     "pynvvideocodec-2.2.4.dist-info/METADATA", "pynvvideocodec-2.2.4.dist-info/WHEEL",
                     "pynvvideocodec-2.2.4.dist-info/top_level.txt", "pynvvideocodec-2.2.4.dist-info/licenses/LICENSE.txt",
                     "pynvvideocodec-2.2.4.dist-info/RECORD"}
    assert {line.split(",")[0] for line in record} == names and top_level == "PyNvVideoCodec\n"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                                "--disable-pip-version-check", "--target", str(tmp_path / "site"), str(stripped)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "site" / "PyNvVideoCodec" / "libavformat.so.63").read_bytes() == library


def test_decoder_scaling_rows(bench_cache):
    """decode_only's K and videos-at-once rows (the device check's GPU rows, here with PyAV)."""
    from benchmarks import decode_only

    video = str(common.test_video(bench_cache, (256, 144), 12, gop_seconds=2))
    rows = decode_only.scaling(video, "cpu", [1, 3], [2], mode="needed")
    assert [(r["videos_at_once"], r["decoders"]) for r in rows] == [(1, 1), (1, 3), (2, 1)]
    assert rows[0]["vs_one_decoder"] == rows[0]["share_of_ideal"] == 1
    assert all(r["frames_per_s"] > 0 and r["video_frames"] == 300 * r["videos_at_once"] for r in rows)
    assert decode_only.device_rows(video) == {"skipped": decode_only.decoder_kinds()["nvdec"]}
