"""The output set (runtime/outputs.py): formats, names, what is on disk, resume's decisions, and reading back.

Each rule is checked on sets the tests write and then damage, edit or replace the way users, kills
and full disks do; the decisions are checked against hand-stated expectations.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tsf.runtime import files, outputs
from tsf.runtime.errors import InputError, OutputError
from tsf.runtime.outputs import (ABSENT, DEBRIS, EDITED, FINISHED, FOREIGN, Expected, OutputSet, half_number,
                                 read_outputs, set_base, set_name, valid_set_name, write_outputs)

FINGERPRINT = {"bundle_id": "0123456789abcdef", "alignment": "center", "format": "npy",
               "window": {"frames": 16, "seconds": 5.0, "stride_seconds": 1.0}}


def arrays(n=3, width=8, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return dict(features=rng.standard_normal((n, width)).astype(np.float32),
                logits=rng.standard_normal((n, classes)).astype(np.float32),
                event_times=rng.random((n, classes)).astype(np.float32))


def metadata(video: Path, rows=3, precision="fp32", **changes) -> dict:
    return {"rows": rows, "alignment": "center", "window": {"frames": 16, "seconds": 5.0, "stride_seconds": 1.0},
            "row_centre_seconds": [i + 0.5 for i in range(rows)],
            "bundle": {"id": FINGERPRINT["bundle_id"], "class_names": [f"c{i}" for i in range(5)]},
            "fingerprint": {**FINGERPRINT, "precision": precision},
            "input": outputs.identify_input(video).recorded(video), "partial": False, **changes}


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "match.mkv"
    path.write_bytes(os.urandom(300_000))
    return path


def expected(video: Path, heads=False, fmt="npy", precisions=("fp32",), allow_partial=False) -> Expected:
    return Expected(video, dict(FINGERPRINT, format=fmt), frozenset(precisions), fmt, heads, allow_partial)


def write(out: Path, video: Path, heads=True, fmt="npy", seed=0, **changes) -> dict:
    decision = OutputSet(out).decide(expected(video, heads, fmt), overwrite=False)
    return OutputSet(out).write(decision, **arrays(seed=seed), metadata=metadata(video, **changes), fmt=fmt,
                                heads=heads)


# ---------------------------------------------------------------- formats and reading back

def test_each_format_is_written_and_read_back(tmp_path, video):
    a = arrays()
    paths = write(tmp_path / "f.npy", video)
    assert np.array_equal(np.load(paths["features"]), a["features"])
    manifest = json.loads(paths["metadata"].read_text())["outputs"]
    assert manifest == {kind: {"file": paths[kind].name, "bytes": paths[kind].stat().st_size,
                               "sha256": hashlib.sha256(paths[kind].read_bytes()).hexdigest()}
                        for kind in ("features", "heads")}
    back = read_outputs(tmp_path / "f.heads.npz")  # any file of the set names it
    assert back.base == tmp_path / "f" and back.rows == 3 and back.width == 8 and back.rate == 1.0
    assert np.array_equal(back.logits, a["logits"]) and list(back.row_times) == [0.5, 1.5, 2.5]

    paths = write(tmp_path / "r.npy", video, heads=False, fmt="reference")
    assert sorted(p.name for p in paths.values()) == ["r.json", "r.pkl"]  # named for what it is
    with pytest.raises(ValueError):
        np.load(paths["features"])  # a pickle: refused without allow_pickle
    reference = np.load(paths["features"], allow_pickle=True).item()
    assert {k: v.shape for k, v in reference.items()} == {"features": (3, 1, 8), "cls_score_all": (3, 1, 5),
                                                          "event_times": (3, 1, 5)}
    back = read_outputs(tmp_path / "r.pkl")  # the reference format carries its heads inside
    assert np.array_equal(back.features, a["features"]) and np.array_equal(back.event_times, a["event_times"])
    described = json.loads(paths["metadata"].read_text())
    assert described["outputs"]["features"]["file"] == "r.pkl"


def test_a_set_without_row_times_is_placed_by_the_planners_rule(tmp_path, video):
    write(tmp_path / "old.npy", video, row_centre_seconds=None, alignment="reference")
    assert list(read_outputs(tmp_path / "old").row_times) == [2.5, 3.5, 4.5]


def test_not_finite_numbers_never_pass(tmp_path, video):
    a = arrays()
    a["logits"][1, 2] = np.nan
    a["features"][2, 0] = np.inf
    with pytest.raises(OutputError, match=r"features are not finite \(NaN or inf\) in rows 2"):
        OutputSet(tmp_path / "f").write(OutputSet(tmp_path / "f").decide(expected(video, True), False), **a,
                                        metadata=metadata(video), heads=True)
    assert list(tmp_path.iterdir()) == [video]
    write(tmp_path / "g", video)
    heads = tmp_path / "g.heads.npz"
    bad = dict(np.load(heads))
    bad["logits"][0, 0] = np.nan
    np.savez(heads, **bad)
    manifest = json.loads((tmp_path / "g.json").read_text())
    manifest["outputs"]["heads"].update(bytes=heads.stat().st_size, sha256=outputs.sha256_file(heads))
    (tmp_path / "g.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"logits are not finite .* in rows 0"):
        read_outputs(tmp_path / "g")


def test_reading_anything_but_a_finished_set_is_one_line(tmp_path, video):
    with pytest.raises(InputError, match="no tsf output set there"):
        read_outputs(tmp_path / "nothing.npy")
    write(tmp_path / "f", video)
    (tmp_path / "f.npy").write_bytes(b"edited")
    with pytest.raises(InputError, match="is not a finished tsf output set: .*f.npy was changed after tsf wrote it"):
        read_outputs(tmp_path / "f.json")


# ---------------------------------------------------------------- names

def test_names():
    assert set_base("a/OUT.npy") == set_base("a/OUT.pkl") == set_base("a/OUT.heads.npz") == Path("a/OUT")
    assert set_base("a/OUT.json") == set_base("a/OUT") == Path("a/OUT")
    assert set_base("a/.npy") == Path("a/.npy")
    assert set_name(Path("g/1_224p.mkv")) == "1_224p"
    assert set_name(Path("g/1_224p.mkv"), "tsf") == "1_tsf" == set_name(Path("1.mkv"), "tsf.npy")
    assert set_name(Path("g/2_720p.mkv"), "tsf_2x") == "2_tsf_2x"
    assert set_name(Path("match.mkv"), "tsf") == "match_tsf"
    assert [half_number(n) for n in ("1_tsf.npy", "2.heads.npz", "12_x.npy", "match.npy")] == [1, 2, None, None]
    for bad in ("", "a/b", " tsf", ".."):
        with pytest.raises(InputError, match="--name"):
            valid_set_name(bad)


# ---------------------------------------------------------------- what is on disk

def test_states_on_disk(tmp_path, video):
    out = OutputSet(tmp_path / "f.npy")
    assert out.inspect().state == ABSENT
    write(tmp_path / "f", video)
    finished = out.inspect()
    assert finished.state == FINISHED and finished.kinds == {"features", "metadata", "heads"}
    assert set(finished.ours) == {tmp_path / n for n in ("f.npy", "f.json", "f.heads.npz")} and not finished.strays

    (tmp_path / "f.heads.npz").unlink()  # what a kill between the renames leaves, or a user's deletion
    assert out.inspect().state == DEBRIS and out.inspect().problem.endswith("f.heads.npz is missing")
    (tmp_path / "f.npy").write_bytes(b"edited by hand")
    edited = out.inspect()
    assert edited.state == EDITED and "f.npy was changed after tsf wrote it" in edited.problem
    assert tmp_path / "f.npy" not in edited.ours

    (tmp_path / "f.json").unlink()
    foreign = out.inspect()
    assert foreign.state == FOREIGN and "f.npy exists without the f.json" in foreign.problem
    (tmp_path / "f.json").write_text("{}")
    assert "f.json exists and is not a tsf output manifest" in out.inspect().problem
    (tmp_path / "f.json").write_text(json.dumps({"outputs": {"features": "f.npy"}}))  # a tsf before manifests
    assert "f.json lists no checksums to check its set against" in out.inspect().problem


# ---------------------------------------------------------------- resume's decisions

def test_a_finished_set_is_kept_only_for_its_own_input_and_settings(tmp_path, video):
    out = OutputSet(tmp_path / "f")
    write(tmp_path / "f", video)
    assert out.decide(expected(video, heads=True), False).skip
    assert out.decide(expected(video, heads=False), False).skip  # more than asked for
    assert out.decide(expected(video, precisions=("bf16", "fp32")), False).skip
    with pytest.raises(OutputError, match=r"with other settings \(precision 'fp32' there, 'bf16' here\); use --overwrite"):
        out.decide(expected(video, precisions=("bf16",)), False)
    other = Expected(video, {**FINGERPRINT, "alignment": "reference"}, frozenset({"fp32"}), "npy", False, False)
    with pytest.raises(OutputError, match="alignment 'center' there, 'reference' here"):
        out.decide(other, False)
    assert out.decide(other, True).action == "write"  # --overwrite


def test_a_changed_input_is_never_skipped(tmp_path, video):
    out = OutputSet(tmp_path / "f")
    write(tmp_path / "f", video)
    os.utime(video, (1, 1))  # copied or touched: same content, other time
    assert out.decide(expected(video), False).skip
    with open(video, "ab") as f:  # grown, as a recording still being written
        f.write(b"more")
    with pytest.raises(OutputError, match=r"from another input \(input size 300000 bytes there, 300004 here\)"):
        out.decide(expected(video), False)
    data = bytearray(video.read_bytes()[:300000])
    data[150000:150010] = b"0123456789"  # replaced by another video of the same size
    video.write_bytes(bytes(data))
    with pytest.raises(OutputError, match=r"input content differs \(same size\)"):
        out.decide(expected(video), False)
    video.unlink()
    with pytest.raises(InputError, match="no such file"):
        out.decide(expected(video), False)


def test_the_missing_heads_are_added_and_a_partial_set_is_kept_only_when_allowed(tmp_path, video):
    out = OutputSet(tmp_path / "f")
    write(tmp_path / "f", video, heads=False, partial=True)
    with pytest.raises(OutputError, match="partial there"):
        out.decide(expected(video, heads=False), False)
    assert out.decide(expected(video, heads=False, allow_partial=True), False).skip
    assert out.decide(expected(video, heads=True, allow_partial=True), False).action == "write"


def test_an_edited_output_is_never_deleted_without_overwrite(tmp_path, video, caplog):
    write(tmp_path / "f", video)
    (tmp_path / "f.npy").write_bytes(b"my own normalised features")
    with pytest.raises(OutputError, match=r"f.npy was changed after tsf wrote it \(it differs from what f.json records\); use --overwrite"):
        OutputSet(tmp_path / "f").decide(expected(video), False)
    assert (tmp_path / "f.npy").read_bytes() == b"my own normalised features"
    # A file no manifest vouches for, where the set would write: refused, kept.
    write(tmp_path / "g", video, heads=False)
    (tmp_path / "g.heads.npz").write_bytes(b"mine")
    assert OutputSet(tmp_path / "g").decide(expected(video, heads=False), False).skip  # not in the way
    with pytest.raises(OutputError, match="g.heads.npz exists and g.json does not vouch for it"):
        OutputSet(tmp_path / "g").decide(expected(video, heads=True), False)
    # --overwrite replaces the set; a stray the new set does not write is left alone, and named.
    (tmp_path / "h.heads.npz").write_bytes(b"mine")
    (tmp_path / "h.npy").write_bytes(b"theirs")
    caplog.set_level(logging.WARNING, logger="tsf")
    monkey = logging.getLogger("tsf")
    propagate, monkey.propagate = monkey.propagate, True
    try:
        out = OutputSet(tmp_path / "h")
        out.write(out.decide(expected(video), True), **arrays(), metadata=metadata(video))
    finally:
        monkey.propagate = propagate
    assert (tmp_path / "h.heads.npz").read_bytes() == b"mine" and read_outputs(tmp_path / "h").rows == 3
    assert any("left h.heads.npz alone" in r.getMessage() for r in caplog.records)


def test_replacing_records_what_it_replaces_so_a_kill_between_renames_is_provable(tmp_path, video, monkeypatch):
    write(tmp_path / "f", video, heads=True, seed=0)
    old = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("f.*")}
    out = OutputSet(tmp_path / "f")
    decision = out.decide(expected(video, heads=False, precisions=("bf16",)), overwrite=True)
    renamed = []
    real_replace = os.replace

    def killed_after_the_manifest(src, dst):
        renamed.append(Path(dst).name)
        real_replace(src, dst)
        if len(renamed) == 1:
            raise KeyboardInterrupt  # SIGTERM, a kill: the manifest is in place, the features not yet

    monkeypatch.setattr(outputs.os, "replace", killed_after_the_manifest)
    monkeypatch.setattr(files, "remove_quietly", lambda path: None)  # as if the process died here
    with pytest.raises(KeyboardInterrupt):
        out.write(decision, **arrays(seed=1), metadata=metadata(video, precision="bf16"), heads=False)
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "f.json").read_text())
    assert manifest["replaces"] == {"f.npy": old["f.npy"], "f.heads.npz": old["f.heads.npz"]}
    left = out.inspect()
    assert left.state == DEBRIS and "f.npy is the file this set replaces" in left.problem
    assert set(left.ours) == {tmp_path / "f.json", tmp_path / "f.npy"}  # the old heads went before the renames
    # The next run redoes it.
    again = out.decide(expected(video, heads=False, precisions=("bf16",)), overwrite=False)
    assert again.action == "write"
    out.write(again, **arrays(seed=1), metadata=metadata(video, precision="bf16"), heads=False)
    assert sorted(p.name for p in tmp_path.glob("f.*")) == ["f.json", "f.npy"]
    assert read_outputs(tmp_path / "f").metadata["fingerprint"]["precision"] == "bf16"


def test_a_failed_write_leaves_nothing_and_stale_temporaries_are_cleared(tmp_path, video, monkeypatch):
    stale = [tmp_path / ".f.npy.abcd1234.part", tmp_path / ".f.json.zz_99_zz.part"]
    kept = [tmp_path / ".f.npy.abcd1234.part.mine", tmp_path / ".other.npy.abcd1234.part"]
    for path in stale + kept:
        path.write_bytes(b"x")
    real_fsync = os.fsync

    def no_space_for_features(fd):
        if ".f.npy." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(outputs.os, "fsync", no_space_for_features)
    with pytest.raises(OutputError) as caught:
        write(tmp_path / "f", video)
    assert str(caught.value) == f"cannot write {tmp_path / 'f.npy'}: no space left on device"
    assert sorted(tmp_path.iterdir()) == sorted([video, *kept])


def test_names_too_long_or_unwritable_places_fail_before_any_work(tmp_path, video):
    stem = "x" * (255 - len(".heads.npz"))
    out = OutputSet(tmp_path / "sub" / f"{stem}.npy")
    out.check_writable("npy", heads=True)  # 255 bytes: fits
    assert not (tmp_path / "sub").exists()  # checking creates nothing
    write(tmp_path / "sub" / stem, video)  # temporaries are cut to fit
    with pytest.raises(OutputError, match=r"the name is 256 bytes, more than the 255 this file system allows"):
        OutputSet(tmp_path / f"{stem}x").check_writable("npy", heads=True)
    with pytest.raises(OutputError, match="is 300 bytes"):
        OutputSet(tmp_path / ("d" * 300) / "f.npy").check_writable("npy", heads=False)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OutputError, match="cannot write"):
        OutputSet(blocker / "sub" / "out.npy").check_writable("npy", heads=False)


def test_synthetic_sets_are_written_under_the_same_rules(tmp_path, video):
    write_outputs(tmp_path / "s", features=np.zeros((2, 4), np.float32), metadata=metadata(video, rows=2))
    assert read_outputs(tmp_path / "s.npy").logits is None
    with pytest.raises(OutputError, match="exists"):
        write_outputs(tmp_path / "s", features=np.zeros((2, 4), np.float32), metadata=metadata(video, rows=2))
