"""How the command line reads its arguments and reports a refusal: argument types that name the flag, a parser
whose refusals are one line, the one-line error of bad input (exit 2), and Keras imported without TensorFlow's
start-up lines. The commands themselves are in :mod:`brats_keras.cli`."""
from __future__ import annotations

import argparse
import contextlib
import sys


class _Refused(Exception):
    """A command refused its input: its one line is on stderr, :func:`main` returns 2."""


@contextlib.contextmanager
def _one_line_errors(*errors, describe_os: bool = False):
    """Bad input raised inside (BratsInputError, or one of ``errors``) becomes the one line
    ``error: <message>`` on stderr and exit status 2 (raised as :class:`_Refused`, which :func:`main` turns
    into 2); the command writes nothing further. ``describe_os``: an OSError naming a file reads as
    :func:`brats_keras.io.describe_os_error` words (``<file>: permission denied``)."""
    from .io import BratsInputError, describe_os_error

    try:
        yield
    except (BratsInputError, *errors) as exc:
        if describe_os and isinstance(exc, OSError) and exc.filename:
            exc = describe_os_error(exc)
        print(f"error: {exc}", file=sys.stderr)
        raise _Refused from None


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line, like every other error of the command line:
    ``brats-keras predict: error: argument --batch-size: 0: must be at least 1 (see brats-keras predict --help)``,
    exit 2, without argparse's usage block before it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_command(func, args) -> int:
    """Run a command's function on its parsed arguments: its exit status, or 2 when it refused its input in one
    line (:func:`_one_line_errors`). :func:`brats_keras.cli.main` and ``data_prep/convert.py`` run commands so."""
    try:
        return int(func(args) or 0)
    except _Refused:
        return 2


def whole_number(low: int):
    """An argparse ``type``: a whole number of at least ``low`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {low}")
        return value

    return parse


def _number(ok, words: str, what: str):
    """An argparse ``type``: a number for which ``ok(value)`` holds, else the error ``<value>: must be <words>``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"{value:g}: must be {words}")
        return value

    parse.__doc__ = f"An argparse ``type``: a number {words} ({what})."
    return parse


positive = _number(lambda v: v > 0, "above 0", "a time budget")
below_one = _number(lambda v: 0.0 <= v < 1.0, "at least 0 and below 1", "a window overlap")


def import_keras_quietly() -> None:
    """Import Keras with TensorFlow's start-up lines hidden ("oneDNN custom operations are on", "Could not
    find cuda drivers", ...): TensorFlow writes them to the stderr file descriptor before its logging is set
    up, so they are caught in a temporary file there and shown only if the import fails."""
    import os
    import tempfile

    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ log lines (CPU feature guard, ...)
    import brats_keras  # noqa: F401  (its oneDNN default must be set before TensorFlow loads)

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
