#!/usr/bin/env bash
# One unattended run on a fresh GPU machine with no network:
#   install our wheels carried in -> check the GPU stack -> build TensorRT engines with tsf-export
#   -> GPU tests (pytest -m gpu) -> the full benchmark (python -m benchmarks.run_all --full).
# Everything (log, checks, test report, results.json/.md, plots) lands in one folder.
#
# Usage (from a checkout of this repository):
#   benchmarks/gpu.sh WHEELHOUSE [OUT_DIR]
#
# WHEELHOUSE: a folder of wheels for the GPU machine's Python version and platform, made where
# there is a network (same Python minor version), e.g.:
#   pip wheel --wheel-dir wheelhouse '.[export,bench,dev]'            # tsf + CPU stack + test tools
#   pip wheel --wheel-dir wheelhouse onnxruntime-gpu cupy-cuda12x PyNvVideoCodec 'tensorrt-cu12>=10,<11'
# (`pip wheel`, not `pip download`: TensorRT's PyPI packages are sdists that fetch NVIDIA's wheels
# at install time; `pip wheel` runs that fetch on the networked machine and keeps the wheels.)
# The tsf wheel and its [export,bench,dev] dependencies are required; onnxruntime-gpu, cupy,
# PyNvVideoCodec and TensorRT are each optional: what is missing is reported and its benchmarks
# say "not measured", never invented.
#
# Environment: PYTHON (default python3) makes the virtual environment; SKIP_INSTALL=1 VENV=DIR
# reuses an existing environment instead (e.g. to re-run the benchmark only); BENCH_MODE
# (default --full) is passed to benchmarks.run_all (--quick or --smoke for a short dry run);
# BENCH_CACHE (default OUT_DIR/cache) holds the generated videos and model bundles.
#
# Runs from a copy of benchmarks/, tests/ and setup.cfg outside the checkout, so that `import tsf`
# finds the installed wheel, not the checkout's tsf/ folder (which holds only the top package).
set -uo pipefail

usage() { echo "usage: $0 WHEELHOUSE [OUT_DIR]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
[ -d "$1" ] || { echo "error: wheelhouse $1 is not a directory" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
WHEELHOUSE=$(cd "$1" && pwd)
OUT=${2:-$PWD/gpu-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$OUT/venv}
CACHE=${BENCH_CACHE:-$OUT/cache}
PY=$VENV/bin/python
STEPS=$OUT/steps.txt
: > "$STEPS"

# Everything printed from here on also goes to the log.
exec > >(tee -a "$OUT/gpu.log") 2>&1
echo "tsf GPU benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), output in $OUT"

# step NAME COMMAND...: run, record "NAME exit-status seconds" in steps.txt, never abort the script.
step() {
    local name=$1 started rc
    shift
    echo
    echo "=== $name: $*"
    started=$(date +%s)
    "$@"
    rc=$?
    echo "$name $rc $(( $(date +%s) - started ))s" >> "$STEPS"
    [ "$rc" -eq 0 ] || echo "=== $name FAILED (exit $rc)"
    return "$rc"
}

# Wheels in the wheelhouse whose file name starts with one of the given prefixes (case-insensitive).
wheels() {
    local prefix
    for prefix in "$@"; do
        find "$WHEELHOUSE" -maxdepth 1 -type f -iname "${prefix}-*.whl"
    done | sort -u
}

pip_offline() { "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" "$@"; }

machine_facts() {
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
        free -g | head -2 || true
        nvidia-smi || echo "nvidia-smi: not available"
        "$PYTHON" --version
    } > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
}

install() {
    local tsf_wheel ort_gpu others
    "$PYTHON" -m venv "$VENV" || return 1
    pip_offline --upgrade pip || echo "(pip not upgraded: no newer pip in the wheelhouse)"
    tsf_wheel=$(wheels tsf | tail -n 1)
    [ -n "$tsf_wheel" ] || { echo "error: no tsf-*.whl in $WHEELHOUSE"; return 1; }
    pip_offline "${tsf_wheel}[export,bench,dev]" || return 1
    # onnxruntime (CPU, pulled in by [export]) and onnxruntime-gpu install the same `onnxruntime`
    # module; with both, whichever was installed last wins file by file. Keep only the GPU build.
    ort_gpu=$(wheels onnxruntime_gpu | tail -n 1)
    if [ -n "$ort_gpu" ]; then
        "$PY" -m pip uninstall -y onnxruntime
        pip_offline "$ort_gpu" || return 1
        pip_offline --force-reinstall --no-deps "$ort_gpu" || return 1
    else
        echo "(no onnxruntime_gpu wheel: ONNX Runtime stays CPU-only)"
    fi
    # Each optional GPU package on its own, so one missing or broken wheel does not block the rest.
    for others in "cupy_cuda12x cupy_cuda13x" "pynvvideocodec" "tensorrt tensorrt_cu12 tensorrt_cu12_libs tensorrt_cu12_bindings tensorrt_cu13 tensorrt_cu13_libs tensorrt_cu13_bindings"; do
        # shellcheck disable=SC2086  # word splitting of the prefix list is intended
        mapfile -t files < <(wheels $others)
        if [ ${#files[@]} -eq 0 ]; then
            echo "(no wheel for ${others%% *}: skipped)"
        else
            pip_offline "${files[@]}" || echo "(installing ${others%% *} failed: its benchmarks will be skipped)"
        fi
    done
    "$PY" -m pip list 2>/dev/null > "$OUT/pip-list.txt"
}

copy_code() {
    rm -rf "$OUT/code" && mkdir -p "$OUT/code" &&
        cp -r "$REPO/benchmarks" "$REPO/tests" "$REPO/setup.cfg" "$OUT/code/"
}

# What works on this machine, each line checked for real (onnxruntime-gpu silently falls back
# to the CPU when its CUDA provider cannot start, so a session is created and asked).
gpu_checks() {
    "$PY" - <<'EOF' 2>&1 | tee "$OUT/checks.txt"
import importlib, sys
ok = True
def report(name, fn):
    global ok
    try:
        print(f"{name}: {fn()}")
    except Exception as e:  # each check reports, none stops the others
        ok = False
        print(f"{name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

def ort_cuda():
    import numpy as np, onnx, onnxruntime as ort
    from onnx import helper, TensorProto
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "check", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    s = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    s.run(None, {"x": np.ones(4, np.float32)})
    active = s.get_providers()
    if active[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDA provider did not start; active {active}")
    return f"onnxruntime {ort.__version__}, session providers {active}; available {ort.get_available_providers()}"

def cupy_device():
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return f"cupy {cupy.__version__}, {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}"

def tensorrt():
    from tsf.runtime.backends import tensorrt as trt_engine
    reason = trt_engine.tensorrt_support()
    if reason:
        raise RuntimeError(reason)
    return f"TensorRT {trt_engine.tensorrt_version()}"

def nvdec():
    from tsf.runtime.decode_nvdec import nvdec_support
    reason = nvdec_support()
    if reason:
        raise RuntimeError(reason)
    return "PyNvVideoCodec usable"

report("tsf", lambda: importlib.import_module("tsf").__file__)
report("onnxruntime CUDA provider", ort_cuda)
report("cupy", cupy_device)
report("tensorrt", tensorrt)
report("nvdec", nvdec)
sys.exit(0 if ok else 1)
EOF
}

# tsf-export itself, strict about the engine (--engine fails without a working TensorRT build):
# a small model, so a failure shows quickly and in tsf-export's own words.
export_cli_check() {
    "$VENV/bin/tsf-export" --random-init --arch depth=2 -o "$OUT/cli-bundle" --engine --overwrite
}

# The benchmark's bundles (seeded random weights, small and full model) with TensorRT engines,
# built through tsf-export's API (engine="auto") before the benchmark needs them.
benchmark_bundles() {
    (cd "$OUT/code" && "$PY" - "$CACHE" <<'EOF'
import sys, time
from pathlib import Path
from benchmarks import common
for name, arch in (("small", common.SMALL_ARCH), ("full", common.REFERENCE_ARCH)):
    started = time.perf_counter()
    bundle, _ = common.ensure_bundle(Path(sys.argv[1]), arch, engines=True)
    meta = (bundle / "bundle.json").read_text()
    print(f"{name}: {bundle} in {time.perf_counter() - started:.0f} s; engines: {'yes' if '.engine' in meta else 'none'}")
EOF
    )
}

gpu_tests() {
    (cd "$OUT/code" && "$VENV/bin/pytest" -m gpu -ra -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml" tests) \
        2>&1 | tee "$OUT/pytest-gpu.txt"
    return "${PIPESTATUS[0]}"
}

benchmark() {
    (cd "$OUT/code" && "$PY" -m benchmarks.run_all "${BENCH_MODE:---full}" --out "$OUT/results" --cache "$CACHE")
}

machine_facts
if [ -n "${SKIP_INSTALL:-}" ]; then
    echo "SKIP_INSTALL set: using the environment at $VENV"
    [ -x "$PY" ] || { echo "error: $PY not found"; exit 2; }
else
    step install install || { echo "error: installation failed; nothing else can run"; exit 1; }
fi
export TSF_BENCH_COMMIT
TSF_BENCH_COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
export TSF_BENCH_DIRTY=0
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- runtime export training tsf benchmarks 2>/dev/null)" ]; then
    TSF_BENCH_DIRTY=1
fi
step copy-code copy_code || exit 1
step gpu-checks gpu_checks
step tsf-export-engine export_cli_check
step benchmark-bundles benchmark_bundles
step gpu-tests gpu_tests
step benchmark benchmark

echo
echo "=== steps (name, exit status, duration):"
cat "$STEPS"
echo "results: $OUT/results/results.md"
# Exit non-zero when any step failed, so a wrapper can tell; every output is kept either way.
! grep -qv ' 0 ' "$STEPS"
