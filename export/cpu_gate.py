"""The fidelity gates of a new bundle's reduced CPU precisions, measured in a child process that
never loads Paddle.

Why a child: `import paddle` brings Paddle's own OpenVINO (2025.0) and its `libtbb.so.12`, so an
OpenVINO gate run in the exporter's process would run tsf's OpenVINO on Paddle's TBB; and torch's
libgomp, once loaded before Paddle, splits a process between two OpenMP runtimes. The child runs
what `tsf-extract` runs: tsf.runtime and the engines, nothing else.

`python -m tsf.export.cpu_gate BUNDLE_DIR` prints one JSON object per line: `{"log": line}` as it
goes, then `{"fidelity": records}` (bundle.json's `fidelity`: engine -> precision -> the gate's
record). The gate covers each reduced precision that the CPU engines `auto` walks can run here; the
runtime measures the others (another CPU, an engine asked for by name) on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tsf.runtime.errors import BackendError

MODULE = "tsf.export.cpu_gate"


def measure_cpu_gates(bundle_dir: Path, log) -> dict:
    """Run the child on `bundle_dir` (its bundle.json written), pass its lines to `log`, return the records."""
    records = None
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errors:
        child = subprocess.Popen([sys.executable, "-m", MODULE, str(bundle_dir)], stdout=subprocess.PIPE,
                                 stderr=errors, text=True)
        for line in child.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a library's own output
            if isinstance(message, dict) and "log" in message:
                log(message["log"])
            elif isinstance(message, dict) and "fidelity" in message:
                records = message["fidelity"]
        status = child.wait()
        errors.seek(0)
        last = ([line.strip() for line in errors.read().splitlines() if line.strip()] or ["no output"])[-1]
    if status != 0 or records is None:
        raise BackendError(f"the CPU fidelity gate failed (exit {status}): {last[:300]}")
    return records


def _gates(bundle, say) -> dict:
    from tsf.runtime.backends import AUTO_ORDER, cpu_threads, engine_precisions
    from tsf.runtime.backends.precision import gated_precisions
    from tsf.runtime.errors import EngineUnavailable
    from tsf.runtime.fidelity import measure_cpu_gate

    records: dict = {}
    has_int8_model = "int8" in bundle.meta.get("quantized", {})
    for engine in AUTO_ORDER["cpu"]:
        offered = engine_precisions(engine).get("cpu", ())
        gated = gated_precisions(offered, has_int8_model)
        if "bf16" in offered and "bf16" not in gated:
            say(f"{engine} bf16: not measured (this CPU has no native BF16); tsf-extract measures it on first use")
        for precision in gated:
            started = time.perf_counter()
            try:
                record = measure_cpu_gate(bundle, engine, precision, cpu_threads())
            except EngineUnavailable as exc:
                say(f"{engine} {precision}: not measured ({exc})")
                continue
            verdict = "passed" if record["passed"] else "FAILED: tsf-extract will refuse it and run fp32"
            say(f"{engine} {precision} fidelity gate (vs fp32, {len(record['row_cosines'])} rows of a generated clip): "
                f"worst row cos {record['min_row_cosine']:.6f}, rel L2 {record['rel_l2']:.1e}, {verdict} "
                f"[{time.perf_counter() - started:.0f} s]")
            records.setdefault(engine, {})[precision] = record
    return records


def _child_main(argv: list[str]) -> int:
    from tsf.runtime.bundle import load_bundle

    def say(line: str) -> None:
        print(json.dumps({"log": line}), flush=True)

    records = _gates(load_bundle(argv[0]), say)
    print(json.dumps({"fidelity": records}), flush=True)
    return 0


if __name__ == "__main__":
    from tsf.runtime.console import end_process

    end_process(_child_main(sys.argv[1:]))  # a child that ran OpenVINO must not abort as it exits
