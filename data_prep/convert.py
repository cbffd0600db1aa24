#!/usr/bin/env python
"""Convert BraTS NIfTI cases into .npy training arrays: ``python data_prep/convert.py --input DIR --output DIR``.

The same as ``brats-keras convert``; see ``--help``. Needs no deep-learning framework.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from brats_keras.cli import add_convert_args, cmd_convert  # noqa: E402
from brats_keras.cli_support import OneLineParser, run_command  # noqa: E402


def main(argv=None) -> int:
    parser = OneLineParser(prog="python data_prep/convert.py", description=__doc__.splitlines()[0])
    add_convert_args(parser)
    return run_command(cmd_convert, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
