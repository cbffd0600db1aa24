"""Train, and SIGKILL this process just before the N-th atomic rename onto a given run file.

    python train_killed.py CONFIG_JSON FILE_NAME N

FILE_NAME is ``last.keras``, ``best.keras`` or ``log.csv``: the kill comes after the file's new
content is complete in its hidden temporary file and before it replaces the old one, the worst
moment for the run's consistency. Exits normally (status 0) when the N-th rename never comes.
"""
import json
import os
import signal
import sys
from pathlib import Path

import brats_keras  # noqa: F401  (before keras: oneDNN)
from brats_keras.training import TrainConfig, train

config, target, nth = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_replace, seen = os.replace, [0]


def replace(src, dst, *args, **kwargs):
    if Path(dst).name == target:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)


os.replace = replace
train(TrainConfig(**config))
