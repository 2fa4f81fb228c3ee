"""What a learned spotting head costs to train and run, measured on a synthetic season of real size.

Writes a synthetic season (python -m tsf.runtime.spotting.synthetic) with tsf's feature width and
SoccerNet's half length, trains each head for a fixed number of epochs with `tsf-spot train`
(validation every epoch, no early stop), spots the season's test games with `tsf-spot --head`, and
reports per half (45 minutes by default): seconds per training epoch, seconds to validate, seconds to spot
(in this process, without start-up; the whole `tsf-spot --head` command's time too);
plus peak RSS per command and the FLOPs of one training step per row (torch's FLOP counter), then
scales them on paper to SoccerNet's splits (300 training, 100 validation, 100 test games). The
synthetic rows cost what real rows of the same width and rate cost: the heads do not look at
what the numbers mean. Training quality on this season says nothing about SoccerNet's.

    python -m benchmarks.spot_heads --out DIR [--rate 2] [--epochs 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (markdown_table, provenance, run_child, save_report, tsf_command)

SOCCERNET_GAMES = {"train": 300, "valid": 100, "test": 100}
HALF_MINUTES = 45


def training_step_flops(architecture: str, width: int, rate: float, classes: int) -> float:
    """FLOPs of one forward + backward pass per row, counted by torch on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsf.runtime.spotting.head_bundle import FeatureKind, Head
    from tsf.runtime.spotting.head_models import dense_loss, make_config, netvlad_loss
    from tsf.runtime.spotting.head_targets import DENSE

    config = make_config(architecture)
    head = Head.new(architecture, config, tuple(f"c{i}" for i in range(classes)), FeatureKind("x", width, rate))
    if architecture == DENSE:
        rows = config.chunk_rows(rate)
        inputs = torch.randn(1, rows, width)
        with FlopCounterMode(display=False) as counter:
            logits, displacement = head.model(inputs)
            zeros = torch.zeros_like(logits)
            dense_loss(logits, displacement, zeros, zeros, zeros, torch.ones(1, rows), torch.ones(classes),
                       torch.ones(classes), config)[0].backward()
        return counter.get_total_flops() / rows
    window = config.window_rows(rate)
    with FlopCounterMode(display=False) as counter:
        netvlad_loss(head.model(torch.randn(1, window, width)), torch.zeros(1, classes + 1)).backward()
    return counter.get_total_flops() / window  # one training window per W rows (SoccerNet's windows)


def spot_seconds(head_path: Path, games: Path, threads: int) -> float:
    """Seconds `Head.spot` takes on every half under `games` (reading the features and starting
    Python and torch not counted), with `threads` torch threads."""
    import torch

    from tsf.runtime.outputs import find_game_folders, game_halves, read_outputs
    from tsf.runtime.spotting.head_bundle import load_head

    torch.set_num_threads(threads)
    head = load_head(head_path)
    total = 0.0
    for folder in find_game_folders(games):
        for half, base in game_halves(folder).items():
            finished = read_outputs(base)
            started = time.perf_counter()
            head.spot(finished.features, finished.row_times, half)
            total += time.perf_counter() - started
    return total


def measure(spot, season: Path, run_dir: Path, architecture: str, threads: int, args, train_games: int) -> dict:
    trained = run_child(spot + ["train", str(season / "features"), "--labels", str(season / "labels"),
                                "--split", f"train={season / 'train.txt'}", "--split", f"valid={season / 'valid.txt'}",
                                "--classes", str(season / "classes.txt"), "-o", str(run_dir),
                                "--architecture", architecture, "--set", f"max_epochs={args.epochs}",
                                "--validate-every", "1", "--threads", str(threads), "-q"])
    if trained.returncode:
        raise SystemExit(trained.stderr)
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    later = log[1:] or log  # the first epoch also warms up
    train_s = sum(r["train_seconds"] for r in later) / len(later)
    valid_s = sum(r["validation_seconds"] for r in later) / len(later)
    spotted = run_child(spot + [str(season / "features" / "test"), "--head", str(run_dir / "head"),
                                "-o", str(run_dir / "predictions")])
    if spotted.returncode:
        raise SystemExit(spotted.stderr)
    per_half = {"train_epoch_s": train_s / (2 * train_games), "validate_s": valid_s / (2 * args.valid),
                "spot_s": spot_seconds(run_dir / "head", season / "features" / "test", threads) / (2 * args.test)}
    flops = training_step_flops(architecture, args.width, args.rate, args.classes)
    return {
        "architecture": architecture,
        "threads": threads,
        "parameters": json.loads((run_dir / "head" / "head.json").read_text())["training"]["parameters"],
        "train_epoch_s_per_half": per_half["train_epoch_s"],
        "validate_s_per_half": per_half["validate_s"],
        "spot_s_per_half": per_half["spot_s"],
        "spot_command_s": spotted.wall_s,
        "train_command_s": trained.wall_s,
        "train_peak_rss_mib": trained.peak_rss_bytes / 2 ** 20,
        "training_gflop_per_half_epoch": flops * args.rate * args.half_minutes * 60 / 1e9,
        "soccernet_epoch_s": (per_half["train_epoch_s"] * 2 * SOCCERNET_GAMES["train"]
                              + per_half["validate_s"] * 2 * SOCCERNET_GAMES["valid"]),
        "soccernet_spot_test_s": per_half["spot_s"] * 2 * SOCCERNET_GAMES["test"],
        "epochs": [{k: r[k] for k in ("epoch", "train_seconds", "validation_seconds", "seconds")} for r in log],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--games", type=int, default=6, help="train + valid + test games of the season")
    parser.add_argument("--valid", type=int, default=1)
    parser.add_argument("--test", type=int, default=1)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--classes", type=int, default=17)
    parser.add_argument("--half-minutes", type=float, default=HALF_MINUTES, help="the cost is reported per half of this length")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU threads, each measured")
    parser.add_argument("--architectures", nargs="+", default=["dense", "netvlad++"])
    args = parser.parse_args(argv)
    prov = provenance()
    python = sys.executable
    spot = tsf_command("tsf-spot")
    train_games = args.games - args.valid - args.test
    rows = []
    with tempfile.TemporaryDirectory(prefix="tsf-spot-bench-") as scratch:
        season = Path(scratch) / "season"
        made = run_child([python, "-m", "tsf.runtime.spotting.synthetic", str(season), "--games", str(args.games),
                          "--valid", str(args.valid), "--test", str(args.test), "--width", str(args.width),
                          "--rate", str(args.rate), "--classes", str(args.classes), "--half-minutes", str(args.half_minutes),
                          "--events-per-class", "2", "--no-heads"])
        if made.returncode:
            raise SystemExit(made.stderr)
        for architecture in args.architectures:
            for threads in args.threads:
                rows.append(measure(spot, season, Path(scratch) / f"{architecture}-{threads}", architecture, threads,
                                    args, train_games))
    result = {"settings": vars(args), "rows": rows}

    def markdown(r):
        return markdown_table(r["rows"], [
            ("architecture", "head", ""), ("threads", "threads", ""), ("parameters", "parameters", ""), ("train_epoch_s_per_half", "s / training epoch / half", ".3g"),
            ("validate_s_per_half", "s / validation / half", ".3g"), ("spot_s_per_half", "spotting s / half", ".3g"),
            ("spot_command_s", "tsf-spot --head s, whole command", ".3g"),
            ("train_peak_rss_mib", "train peak RSS MiB", ".0f"), ("training_gflop_per_half_epoch", "GFLOP / half / epoch", ".3g"),
            ("soccernet_epoch_s", "SoccerNet epoch s (300 + 100 games)", ".3g"),
            ("soccernet_spot_test_s", "SoccerNet test spotting s (100 games)", ".3g")])

    save_report(args.out, "spot_heads", "Learned spotting heads: cost on this machine", prov, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
