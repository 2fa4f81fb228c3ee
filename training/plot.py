"""`tsf-train plot`: metrics.jsonl of a run -> PNG curves (loss, validation accuracy, event-time
MAE, learning rate).

Dependencies: matplotlib (Agg backend: no display needed), imported only here.
"""

from __future__ import annotations

import json
import os

from tsf.runtime.extras import install_hint

from .errors import TrainingError

PLOTS = ("loss.png", "accuracy.png", "event_time_mae.png", "lr.png")


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
    """(training step records, epoch records) from a metrics.jsonl."""
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except OSError as exc:
        raise TrainingError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise TrainingError(f"{path} is not a JSON-lines metrics log") from None
    return [r for r in records if r.get("kind") == "train"], [r for r in records if r.get("kind") == "epoch"]


def plot_run(metrics_path: str, out_dir: str, overwrite: bool = False) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TrainingError(f"plotting needs matplotlib: {install_hint('train')}") from None
    steps, epochs = read_metrics(metrics_path)
    if not steps and not epochs:
        raise TrainingError(f"{metrics_path} holds no metrics yet")
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in PLOTS]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise TrainingError(f"{existing[0]} exists; pass --overwrite to replace the plots")

    def save(fig, path):
        fig.tight_layout()
        tmp = os.path.join(out_dir, ".tmp-" + os.path.basename(path))
        fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        os.replace(tmp, path)

    valid = [e for e in epochs if e.get("valid")]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, label="train (step)")
    ax.plot([e["step"] for e in epochs], [e["train_loss"] for e in epochs], "o-", label="train (epoch mean)")
    if valid and valid[0]["valid"].get("loss") is not None:
        ax.plot([e["step"] for e in valid], [e["valid"]["loss"] for e in valid], "s-", label="validation")
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.legend()
    save(fig, paths[0])

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([e["epoch"] for e in valid], [e["valid"]["top1"] for e in valid], "o-")
    ax.set(xlabel="epoch", ylabel="top-1", title="validation top-1 accuracy", ylim=(0, 1))
    save(fig, paths[1])

    fig, ax = plt.subplots(figsize=(7, 4))
    mae = [e for e in valid if e["valid"].get("event_time_mae_s") is not None]
    ax.plot([e["epoch"] for e in mae], [e["valid"]["event_time_mae_s"] for e in mae], "o-")
    ax.set(xlabel="epoch", ylabel="seconds", title="validation event-time MAE")
    save(fig, paths[2])

    fig, ax = plt.subplots(figsize=(7, 4))
    source = steps or epochs
    ax.plot([r["step"] for r in source], [r["lr"] for r in source])
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate (backbone; heads x multiplier)")
    save(fig, paths[3])
    return paths
