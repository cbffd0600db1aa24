"""The command line as a new user meets it: TensorFlow's start-up lines stay hidden unless asked for, and
numbers out of range are refused naming their flag."""
import os
import subprocess
import sys

import pytest


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    return subprocess.run([sys.executable, "-m", "brats_keras.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_a_command_that_loads_tensorflow_prints_only_its_own_error_line(tmp_path):
    proc = run_cli("predict", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: not a folder"], proc.stderr
    # --verbose lets TensorFlow's own lines through; the error line is still there and still last
    proc = run_cli("--verbose", "predict", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nowhere'}: not a folder"


def test_a_failing_import_shows_what_was_hidden(monkeypatch, capsys):
    """If Keras cannot be imported, the lines caught while importing it are written out before the error."""
    import builtins

    import pytest

    from brats_keras import cli

    real_import = builtins.__import__

    def failing(name, *a, **k):
        if name == "keras":
            os.write(2, b"backend says why\n")
            raise ImportError("no keras here")
        return real_import(name, *a, **k)

    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing)
    with pytest.raises(ImportError, match="no keras here"):
        cli.import_keras_quietly()
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert "backend says why" in capsys.readouterr().err


def test_ensemble_hides_tensorflow_start_up_lines_too(tmp_path):
    """``ensemble`` loads Keras: its error is the only line on stderr, as for the other Keras commands."""
    proc = run_cli("ensemble", "--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / "nowhere") in line, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["predict", "--batch-size", "0"], "argument --batch-size: 0: must be at least 1"),
    (["predict", "--batch-size", "two"], "argument --batch-size: 'two' is not a whole number"),
    (["predict", "--patch-size", "-8"], "argument --patch-size: -8: must be at least 1"),
    (["predict", "--overlap", "1"], "argument --overlap: 1: must be at least 0 and below 1"),
    (["predict", "--overlap=-0.5"], "argument --overlap: -0.5: must be at least 0 and below 1"),
    (["predict", "--overlap", "nan"], "argument --overlap: nan: must be at least 0 and below 1"),
    (["crossval", "--runs", "r0", "--batch-size", "0"], "argument --batch-size: 0: must be at least 1"),
    (["synth", "--cases", "-3"], "argument --cases: -3: must be at least 1"),
    (["synth", "--cases", "0"], "argument --cases: 0: must be at least 1"),
    (["synth", "--workers", "0"], "argument --workers: 0: must be at least 1"),
])
def test_numbers_out_of_range_are_refused_naming_the_flag(argv, message, tmp_path, capsys):
    """Refused while the arguments are read (exit 2, the error line names the flag), before any folder is made:
    not a run where every case FAILED (predict --batch-size 0) or an error naming another flag (synth)."""
    from brats_keras.cli import main

    out = tmp_path / "out"
    paths = {"predict": ["--input", str(tmp_path), "--output", str(out)], "crossval": ["--out", str(out)],
             "synth": ["--out", str(out)]}[argv[0]]
    with pytest.raises(SystemExit) as exc:
        main(argv + paths)
    err = capsys.readouterr().err.strip().splitlines()
    # one line, as every other refusal: no usage block before it
    assert exc.value.code == 2 and err == [f"brats-keras {argv[0]}: error: {message} (see brats-keras {argv[0]} --help)"]
    assert not out.exists()


@pytest.mark.parametrize("error, expected", [
    ("bad input", "error: x.nii.gz: bad input\n"),
    ("os error", "error: x.nii.gz: permission denied\n"),
])
def test_every_refusal_goes_through_one_helper(monkeypatch, capsys, error, expected):
    """The commands' bad-input blocks are one helper: the error's one line on stderr, nothing on stdout, exit 2;
    an OSError naming a file reads in words where the command asks for it (export); other errors propagate."""
    import errno
    import inspect

    from brats_keras import cli, export
    from brats_keras.io import BratsInputError

    def refuse(*a, **k):
        if error == "bad input":
            raise BratsInputError("x.nii.gz: bad input")
        raise PermissionError(errno.EACCES, "Permission denied", "x.nii.gz")

    monkeypatch.setattr(export, "export_model", refuse)
    assert cli.main(["export", "--model", "m.keras", "--out", "o"]) == 2
    assert capsys.readouterr() == ("", expected)
    monkeypatch.setattr(export, "export_model", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["export", "--model", "m.keras", "--out", "o"])
    from brats_keras import cli_support

    # the helper (cli_support) and convert's manifest line (cli)
    assert [inspect.getsource(m).count('print(f"error: {exc}", file=sys.stderr)') for m in (cli_support, cli)] == [1, 1]
