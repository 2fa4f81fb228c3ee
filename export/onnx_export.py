"""Paddle ppTimeSformer -> `model.onnx` (opset 17, input `video`, outputs features/logits/event_times).

Dependencies and why:
- `paddle.onnx.export` (backed by paddle2onnx) does the conversion: the only converter that reads
  Paddle programs. It is run in a child process (`python -m tsf.export.onnx_export`) because
  paddle2onnx calls `sys.exit` on conversion errors, aborts the process on unsupported opsets and
  otherwise only logs failures (docs/toolchain.md); the parent judges the result by the file.
- `onnx` renames paddle2onnx's `fetch_name_*` outputs to the bundle's names and runs the checker.
  The checker is given the *path*, which also works for models past protobuf's 2 GB limit.
- `subprocess`, `json`, `sys`: the child process and its arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tsf.runtime.bundle import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES
from tsf.runtime.errors import TsfError

BATCH_DIM = "batch"


class OnnxExportError(TsfError):
    """The conversion failed or produced a model that is not the bundle's ONNX."""


def export_onnx(weights_path: str | os.PathLike, config: dict, onnx_path: str | os.PathLike) -> Path:
    """Convert the model with `config` and weights from `weights_path` to `onnx_path`, then check it.

    The weights file is read again (strictly) by the child process, so the parent does not have
    to ship a 460 MB model through a pipe.
    """
    onnx_path = Path(onnx_path)
    env = dict(os.environ)
    # paddle2onnx turns on Polygraphy's auto-install of missing modules (it pip-installs at export
    # time). The child switches it off again; PIP_NO_INDEX makes any pip run that slips through
    # fail offline instead of downloading. The modules it needs are declared in the `export` extra.
    env["PIP_NO_INDEX"] = "1"
    # paddle.onnx.export saves a ~460 MB static model to a temporary directory first (and Paddle
    # drops a `.ses` file in TMPDIR); a scratch directory beside the output (inside the bundle's
    # staging directory) keeps a killed export from littering /tmp and a small /tmp from failing it.
    scratch = onnx_path.parent.absolute() / ".onnx-export-scratch"
    env["TMPDIR"] = os.fspath(scratch)
    command = [
        sys.executable, "-m", "tsf.export.onnx_export",
        "--weights", os.fspath(weights_path),
        "--config", json.dumps(config),
        "--output", os.fspath(onnx_path),
    ]
    scratch.mkdir(exist_ok=True)
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode < 0:
        raise OnnxExportError(
            f"ONNX conversion was killed by signal {-result.returncode} (out of memory? a full-size "
            f"model needs about 5 GB): {_last_error_line(result.stdout)}")
    if result.returncode != 0 or not onnx_path.is_file():
        raise OnnxExportError(f"ONNX conversion failed (exit {result.returncode}): {_last_error_line(result.stdout)}")
    check_onnx(onnx_path, config)
    return onnx_path


def _last_error_line(log: str) -> str:
    """The most telling line of the child's log: our own message, else the last error, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for marker in ("tsf-onnx-export:", "ERROR", "Error", "error"):
        hits = [line for line in lines if marker in line]
        if hits:
            return hits[-1].split("tsf-onnx-export:", 1)[-1].strip()[:500]
    return lines[-1][:500] if lines else "no output"


def check_onnx(onnx_path: str | os.PathLike, config: dict) -> None:
    """onnx.checker (by path) plus the bundle's interface: names, opset, dynamic batch, shapes."""
    import onnx

    path = os.fspath(onnx_path)
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise OnnxExportError(f"{path} fails onnx.checker: {first_line}") from None
    model = onnx.load(path, load_external_data=False)
    opset = {o.domain: o.version for o in model.opset_import}.get("", None)
    if opset != ONNX_OPSET:
        raise OnnxExportError(f"{path} has opset {opset}, expected {ONNX_OPSET}")
    frames, size, width, classes = config["frames"], config["image_size"], config["width"], config["num_classes"]
    expected = {
        INPUT_NAME: [BATCH_DIM, 3, frames, size, size],
        "features": [BATCH_DIM, width],
        "logits": [BATCH_DIM, classes],
        "event_times": [BATCH_DIM, classes],
    }
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    actual_names = ([i.name for i in inputs], [o.name for o in model.graph.output])
    if actual_names != ([INPUT_NAME], list(OUTPUT_NAMES)):
        raise OnnxExportError(f"{path} has inputs/outputs {actual_names}, expected {([INPUT_NAME], list(OUTPUT_NAMES))}")
    for value in list(inputs) + list(model.graph.output):
        shape = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if shape != expected[value.name] or value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise OnnxExportError(f"{path}: {value.name} is {shape}, expected float32 {expected[value.name]}")


def rename_interface(model) -> None:
    """Name the outputs `features`, `logits`, `event_times` (in the forward's return order) and the
    batch dimension `batch`. paddle2onnx calls them `fetch_name_0..2` and `DynamicDimension.0`."""
    graph = model.graph
    if len(graph.output) != len(OUTPUT_NAMES):
        raise OnnxExportError(f"the converted model has {len(graph.output)} outputs, expected {len(OUTPUT_NAMES)}")
    mapping = {out.name: new for out, new in zip(graph.output, OUTPUT_NAMES)}
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for value in list(graph.output) + list(graph.value_info):
        if value.name in mapping:
            value.name = mapping[value.name]
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH_DIM


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsf.export.onnx_export")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", required=True, help="TimeSformerConfig as JSON")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    import onnx
    import paddle
    import polygraphy.config

    from tsf.training.model import PPTimeSformer, TimeSformerConfig
    from tsf.training.weights import load_reference_weights, read_pdparams

    # See export_onnx: paddle2onnx sets POLYGRAPHY_AUTOINSTALL_DEPS=1 in the environment, but
    # Polygraphy reads its config attribute, which we pin here after its import.
    polygraphy.config.AUTOINSTALL_DEPS = False

    config = TimeSformerConfig.from_dict(json.loads(args.config))
    model = PPTimeSformer(config)
    load_reference_weights(model, read_pdparams(args.weights))
    model.eval()

    output = Path(args.output)
    raw_prefix = output.with_name(output.stem + ".paddle2onnx")
    raw_path = raw_prefix.with_name(raw_prefix.name + ".onnx")
    spec = paddle.static.InputSpec([None, 3, config.frames, config.image_size, config.image_size], "float32", INPUT_NAME)
    try:
        paddle.onnx.export(model, os.fspath(raw_prefix), input_spec=[spec], opset_version=ONNX_OPSET)
        if not raw_path.is_file():
            print("tsf-onnx-export: paddle2onnx wrote no model (see its log above)", flush=True)
            return 3
        onnx_model = onnx.load(os.fspath(raw_path))
        rename_interface(onnx_model)
        # A ViT-B is ~485 MB, well inside protobuf's 2 GB limit for a single-file model.
        onnx.save(onnx_model, os.fspath(output))
    finally:
        if raw_path.exists():
            raw_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
