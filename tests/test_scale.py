"""Slurm-style scale-out: shards are disjoint and cover the list, re-runs skip, a killed run resumes to
identical outputs, the printed sbatch script runs the shares, and the run report lists every video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runtime_helpers import run_cli, small_bundle, video
from tsf.runtime.errors import InputError
from tsf.runtime.jobs import Job
from tsf.runtime.scale.slurm import parse_shard, shard_from_environment, shard_jobs


def outputs_under(root: Path) -> dict[str, bytes]:
    """Every visible output file (relative path -> bytes), metadata excluded (it carries timings)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".json"}


def make_games(tmp_path: Path, count: int, name: str = "h264_25fps.mkv") -> Path:
    data = tmp_path / "SoccerNet"
    for i in range(count):
        (data / f"league/season/game {i}").mkdir(parents=True)
        os.link(video(name), data / f"league/season/game {i}" / "1_224p.mkv")
    return data


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shards_are_disjoint_deterministic_and_cover():
    jobs = [Job(Path(f"v{i}.mkv"), Path(f"out/{name}.npy")) for i, name in enumerate("edcbagf")]
    for count in (1, 2, 3, 7, 10):
        shares = [shard_jobs(jobs, k, count) for k in range(count)]
        flat = [job for share in shares for job in share]
        assert sorted(flat, key=str) == sorted(jobs, key=str) and len(flat) == len(jobs)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        # the same split whatever order the list came in
        assert [shard_jobs(list(reversed(jobs)), k, count) for k in range(count)] == shares


def test_shard_arguments_and_slurm_environment():
    assert parse_shard("0/4") == (0, 4) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b"):
        with pytest.raises(InputError):
            parse_shard(bad)
    assert shard_from_environment({}) is None
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}) == (2, 5)
    # arrays written 1-5, or 0-40:10
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "5",
                                   "SLURM_ARRAY_TASK_MIN": "1"}) == (4, 5)
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "30", "SLURM_ARRAY_TASK_COUNT": "5",
                                   "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "10"}) == (3, 5)
    with pytest.raises(InputError):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "5"})


def test_two_shards_of_five_videos_cover_all_and_rerun_skips(tmp_path, capsys, monkeypatch):
    data = make_games(tmp_path, 5)
    out = tmp_path / "features"
    common = [data, "-o", out, "--model", small_bundle(4), "--device", "cpu", "--heads", "-q"]
    produced = []
    for k in (0, 1):
        before = set(outputs_under(out)) if out.exists() else set()
        code, err = run_cli(capsys, common + ["--shard", f"{k}/2", "--report", tmp_path / f"report{k}.jsonl"])
        assert code == 0, err
        produced.append({p.split("/")[2] for p in set(outputs_under(out)) - before})
    assert produced[0].isdisjoint(produced[1])
    assert produced[0] | produced[1] == {f"game {i}" for i in range(5)}
    assert sorted([len(produced[0]), len(produced[1])]) == [2, 3]
    lines = read_report(tmp_path / "report0.jsonl") + read_report(tmp_path / "report1.jsonl")
    assert sorted(line["video"] for line in lines) == sorted(str(p) for p in data.rglob("*.mkv"))
    assert all(line["status"] == "done" and line["rows"] == 8 and line["error"] is None and line["seconds"] > 0
               for line in lines)

    # Re-running both shares (here through the Slurm variables) skips every video.
    for k in (0, 1):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(k))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        code, err = run_cli(capsys, common[:-1] + ["--report", tmp_path / "rerun.jsonl"])
        assert code == 0 and "0 done" in err and "skipped" in err, err
    rerun = read_report(tmp_path / "rerun.jsonl")
    assert len(rerun) == 5 and {line["status"] for line in rerun} == {"skipped"}
    assert {line["shard"] for line in rerun} == {"0/2", "1/2"} and all(line["rows"] == 8 for line in rerun)


def test_report_records_failures(tmp_path, capsys):
    data = make_games(tmp_path, 2)
    (data / "league/season/game 1/2_224p.mkv").write_bytes(b"not a video")
    code, _ = run_cli(capsys, [data, "-o", tmp_path / "out", "--model", small_bundle(4), "--device", "cpu", "-q",
                       "--report", tmp_path / "report.jsonl"])
    assert code == 2
    lines = {Path(line["video"]).relative_to(data).as_posix(): line for line in read_report(tmp_path / "report.jsonl")}
    bad = lines["league/season/game 1/2_224p.mkv"]
    assert bad["status"] == "failed" and "not a readable video" in bad["error"] and bad["rows"] is None
    assert [lines[k]["status"] for k in sorted(lines) if k != "league/season/game 1/2_224p.mkv"] == ["done", "done"]


def test_printed_slurm_script_runs_each_share(tmp_path, capsys):
    data = make_games(tmp_path, 5)
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(data.rglob("*.mkv"))))
    out = tmp_path / "out dir"  # a space, to prove the quoting
    args = ["--list", listing, "-o", out, "--model", small_bundle(4), "--device", "cpu", "-q",
            "--report", tmp_path / "run.jsonl", "--print-slurm-script", "--shard", "0/2"]
    capsys.readouterr()
    from tsf.runtime.cli import main

    assert main([str(a) for a in args]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --array=0-1\n" in script
    assert "--gres" not in script  # --device cpu
    assert not out.exists()  # printing runs nothing
    path = tmp_path / "extract.sbatch"
    path.write_text(script)
    # Without Slurm, the script refuses to run rather than processing everything.
    refused = subprocess.run(["bash", str(path)], capture_output=True, text=True, env={**os.environ})
    assert refused.returncode != 0 and "submit this script with sbatch" in refused.stderr
    for task in ("0", "1"):  # what sbatch would do for each array task
        done = subprocess.run(["bash", str(path)], capture_output=True, text=True,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": "2"})
        assert done.returncode == 0, done.stderr
    assert len([p for p in out.rglob("*.npy")]) == 5
    reports = [read_report(tmp_path / f"run.{task}.jsonl") for task in ("0", "1")]
    assert sorted(len(r) for r in reports) == [2, 3]
    assert {line["shard"] for line in reports[0]} == {"0/2"}


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(tmp_path):
    """SIGKILL mid-run, from a hook in the child: right after the third video's manifest is renamed
    into place (two sets finished, the third one debris), so the kill lands there however loaded
    the machine is. The resumed run skips the two, redoes the third and gives the clean run's files."""
    data = make_games(tmp_path, 5)
    bundle = small_bundle(4)
    arguments = [str(data), "--model", str(bundle), "--device", "cpu", "--heads", "-q"]
    clean = subprocess.run([sys.executable, "-m", "tsf.runtime", *arguments, "-o", str(tmp_path / "clean")],
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr

    child = textwrap.dedent("""
        import os, signal, sys
        real_replace = os.replace
        manifests = []
        def replace_then_kill(src, dst):
            real_replace(src, dst)
            if str(dst).endswith(".json"):
                manifests.append(dst)
                if len(manifests) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace_then_kill
        from tsf.runtime.cli import main
        main(sys.argv[1:])
    """)
    resumed = tmp_path / "resumed"
    killed = subprocess.run([sys.executable, "-c", child, *arguments, "-o", str(resumed)], capture_output=True,
                            text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(resumed.rglob("*.npy"))) == 2 and len(list(resumed.rglob("*.json"))) == 3

    again = subprocess.run([sys.executable, "-m", "tsf.runtime", *arguments, "-o", str(resumed), "--report",
                            str(tmp_path / "resume.jsonl")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    statuses = [line["status"] for line in read_report(tmp_path / "resume.jsonl")]
    assert statuses.count("skipped") == 2 and statuses.count("done") == 3
    clean_files, resumed_files = outputs_under(tmp_path / "clean"), outputs_under(resumed)
    assert sorted(clean_files) == sorted(resumed_files)
    for name in clean_files:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(tmp_path / "clean" / name), np.load(resumed / name))
        else:
            np.testing.assert_array_equal(np.load(tmp_path / "clean" / name)["logits"], np.load(resumed / name)["logits"])


def test_the_slurm_scripts_options_rebuild_the_same_settings():
    """The script is built from the settings (not from argv): parsed again, they are the same."""
    from dataclasses import fields

    from tsf.runtime.cli import command
    from tsf.runtime.extractor import ExtractSettings

    settings = ExtractSettings(align="reference", rate=2, batch_size=3, backend="onnxruntime", device="cpu",
                               precision="fp32", threads=1, decoder="cpu", heads=True, format="reference",
                               overwrite=True, allow_partial=True)
    parsed = command.make_context("tsf-extract", [*settings.as_options(), "x.mkv"]).params
    assert ExtractSettings(**{f.name: parsed[f.name] for f in fields(ExtractSettings)}) == settings
    assert ExtractSettings().as_options() == []
