"""convert --shard K/N and merge: N parts converted apart and joined equal one conversion of every case."""
from __future__ import annotations

import json

import numpy as np
import pytest

from brats_keras.cli import main as cli_main
from brats_keras.convert import merge_conversions, read_manifest
from brats_keras.io import BratsInputError

from conftest import write_small_case


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_src")
    for i in range(5):
        write_small_case(root, f"case{i}", seed=i)
    return root


def convert(source, out, *extra):
    return cli_main(["convert", "--input", str(source), "--output", str(out), "--workers", "1", "--quiet",
                     "--crop", "brain", *extra])


def test_shards_merged_equal_one_conversion(source, tmp_path, capsys):
    assert convert(source, tmp_path / "whole") == 0
    for k in (1, 2, 3):
        assert convert(source, tmp_path / f"part{k}", "--shard", f"{k}/3") == 0
    parts = [read_manifest(tmp_path / f"part{k}") for k in (1, 2, 3)]
    assert [sorted(m["cases"]) for m in parts] == [["case0", "case3"], ["case1", "case4"], ["case2"]]
    assert [m["shard"] for m in parts] == [{"count": 3, "index": k} for k in (1, 2, 3)]
    # every part and the merge, in any order of the folders, from the command line
    assert cli_main(["merge", str(tmp_path / "part3"), str(tmp_path / "part1"), str(tmp_path / "part2"),
                     "--output", str(tmp_path / "merged")]) == 0
    whole, merged = read_manifest(tmp_path / "whole"), read_manifest(tmp_path / "merged")
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)
    for cid, entry in whole["cases"].items():
        for key in ("image", "mask"):
            a = np.load(tmp_path / "whole" / entry[key])
            b = np.load(tmp_path / "merged" / entry[key])
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # a rerun of a part resumes it (nothing converted again) and keeps its shard
    assert convert(source, tmp_path / "part1", "--shard", "1/3") == 0
    assert "converted 2 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2"])
def test_bad_shard_is_one_line_and_exit_2(source, tmp_path, capsys, value):
    assert convert(source, tmp_path / "out", f"--shard={value}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --shard {value}:"), err
    assert not (tmp_path / "out").exists()


def test_data_prep_script_takes_shard_too(source, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "data_prep" / "convert.py"), "--input", str(source),
                          "--output", str(tmp_path / "p2"), "--shard", "2/2", "--workers", "1", "--quiet", "--crop", "brain"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(read_manifest(tmp_path / "p2")["cases"]) == ["case1", "case3"]
    res = subprocess.run([sys.executable, str(root / "data_prep" / "convert.py"), "--input", str(source),
                          "--output", str(tmp_path / "p9"), "--shard", "9/2"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--shard 9/2" in res.stderr


def test_merge_refuses_incomplete_or_mixed_parts(source, tmp_path, capsys):
    for k in (1, 2):
        assert convert(source, tmp_path / f"p{k}", "--shard", f"{k}/2") == 0
    assert convert(source, tmp_path / "zs", "--shard", "2/2", "--scale", "zscore") == 0
    assert convert(source, tmp_path / "whole") == 0
    with pytest.raises(BratsInputError, match="parts 2/2 missing"):
        merge_conversions([tmp_path / "p1"], tmp_path / "m")
    with pytest.raises(BratsInputError, match="given twice"):
        merge_conversions([tmp_path / "p1", tmp_path / "p1"], tmp_path / "m")
    with pytest.raises(BratsInputError, match="other settings"):
        merge_conversions([tmp_path / "p1", tmp_path / "zs"], tmp_path / "m")
    with pytest.raises(BratsInputError, match="not written with --shard"):
        merge_conversions([tmp_path / "whole"], tmp_path / "m")
    # another part into a part's folder: refused, the folder's manifest untouched
    assert convert(source, tmp_path / "p1", "--shard", "2/2") == 2
    assert "written for another part" in capsys.readouterr().err
    assert read_manifest(tmp_path / "p1")["shard"] == {"count": 2, "index": 1}
    assert cli_main(["merge", str(tmp_path / "p1"), "--output", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert not (tmp_path / "m").exists()


def test_merge_checks_every_array_before_writing_and_copies_whole_arrays(source, tmp_path, capsys, monkeypatch):
    import errno
    import os
    import shutil

    for k in (1, 2):
        assert convert(source, tmp_path / f"p{k}", "--shard", f"{k}/2") == 0
    # an array a part's manifest lists is missing: one line naming it, exit 2, nothing written
    mask = tmp_path / "p2" / "masks" / "case3.npy"
    mask.rename(tmp_path / "aside.npy")
    assert cli_main(["merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mask) in err[0] and "missing" in err[0], err
    assert not (tmp_path / "m").exists()
    (tmp_path / "aside.npy").rename(mask)
    # a manifest that is JSON but not a conversion's (a list; a part without settings): one line too
    (tmp_path / "bad").mkdir()
    for text in ("[]", '{"shard": {"index": 1, "count": 1}, "cases": {}}'):
        (tmp_path / "bad" / "manifest.json").write_text(text)
        with pytest.raises(BratsInputError, match="not a conversion manifest"):
            merge_conversions([tmp_path / "bad"], tmp_path / "m")
    # no hard links (another file system) and a copy that fails half-way (disk full): no half array is left
    real_copy = shutil.copyfile

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def half_copy(src, dst):
        if str(src).endswith("case3.npy"):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfile", half_copy)
    assert cli_main(["merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--output", str(tmp_path / "m")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list((tmp_path / "m").rglob("case3*")), list((tmp_path / "m").rglob("*"))
    # the disk has room again: the rerun completes the merge
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    assert cli_main(["merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--output", str(tmp_path / "m")]) == 0
    for rel in ("images/case3.npy", "masks/case3.npy"):
        assert np.array_equal(np.load(tmp_path / "m" / rel), np.load(tmp_path / "p2" / rel))


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_parts_and_merge_keep_one_conversion_per_folder(source, tmp_path, capsys):
    """A part converted again with other settings, a merge into a folder of another conversion and a merge into a
    folder that a convert is writing are each refused in one line, exit 2, the folder unchanged."""
    import os

    from brats_keras import io as bio
    from brats_keras.convert import LOCK

    for k in (1, 2):
        assert convert(source, tmp_path / f"p{k}", "--shard", f"{k}/2") == 0
    part = _files(tmp_path / "p1")
    assert convert(source, tmp_path / "p1", "--shard", "1/2", "--dtype", "float32") == 2
    assert "converted with other settings (dtype float16, asked float32)" in capsys.readouterr().err
    assert _files(tmp_path / "p1") == part
    assert convert(source, tmp_path / "zs", "--scale", "zscore") == 0
    other = _files(tmp_path / "zs")
    capsys.readouterr()
    merge = ["merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--output"]
    assert cli_main(merge + [str(tmp_path / "zs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'zs' / 'manifest.json'}: converted with other settings (scale zscore, "
                   "asked minmax); give another --output, or remove that folder first"]
    assert _files(tmp_path / "zs") == other
    busy = tmp_path / "busy"
    busy.mkdir()
    with bio.folder_lock(busy, LOCK, "convert", "wait"):
        assert cli_main(merge + [str(busy)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {busy}: another convert (pid {os.getpid()}) is writing this folder; wait for it to "
                       "end, or give another --output"]
        assert _files(busy) == {LOCK: f"{os.getpid()} convert\n".encode()}
    assert not (busy / LOCK).exists()  # removed when its holder lets go
    # the parts merge into a folder holding the same conversion (a rerun of the merge)
    assert cli_main(merge + [str(busy)]) == 0 and cli_main(merge + [str(busy)]) == 0
    assert sorted(_files(busy)) == sorted([f"{d}/case{i}.npy" for d in ("images", "masks") for i in range(5)]
                                          + ["manifest.json"])
