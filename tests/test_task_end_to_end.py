"""Every built-in task end to end, as a user runs it: synthetic cases of the task, `convert --task`, a few
training steps, `predict` and `evaluate --task`; the written label maps hold the task's own values and the scores
its regions. (The known answers of each step per task are in test_tasks, test_task_data, test_inference and
test_evaluation; this checks that the steps fit together.)"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brats_keras.cli import main as cli_main
from brats_keras.inference import case_output_task
from brats_keras.io import find_cases
from brats_keras.tasks import TASKS

SHAPE = "56,56,40"
#: the head each task trains here: region heads for the tasks whose regions decode in their own order, a softmax
#: head for two of the glioma family (both heads run end to end)
HEADS = {name: "softmax" if name in ("brats2023", "msd-task01") else "regions" for name in TASKS}


@pytest.mark.parametrize("name", list(TASKS))
def test_a_task_runs_from_synthetic_cases_to_scores(name, tmp_path, capsys):
    task = TASKS[name]
    src, conv, run, preds = (tmp_path / d for d in ("src", "conv", "run", "preds"))
    assert cli_main(["synth", "--out", str(src), "--cases", "2", "--shape", SHAPE, "--seed", "0", "--task", name,
                     "--quiet"]) == 0
    mods = ",".join(m for m in ("flair", "t1ce", "t2") if m in task.modalities) or ",".join(task.modalities)
    assert cli_main(["convert", "--input", str(src), "--output", str(conv), "--task", name, "--modalities", mods,
                     "--crop", "brain", "--scale", "zscore", "--workers", "1", "--quiet"]) == 0
    assert cli_main(["train", "--data", str(conv), "--out", str(run), "--base-filters", "4", "--depth", "2",
                     "--patch-size", "16", "--epochs", "1", "--steps-per-epoch", "2", "--val-steps", "1",
                     "--val", "1", "--mixed-precision", "off", "--head", HEADS[name]]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["task"]["name"] == name and config["output"] == HEADS[name]
    assert cli_main(["predict", "--model", str(run / "checkpoints" / "last.keras"), "--input", str(src),
                     "--output", str(preds), "--quiet"]) == 0
    written = sorted(preds.glob("*.nii.gz"))
    assert len(written) == 2
    for case in find_cases(src):  # the values of the case's own task (a plain-named glioma case: the 2023 ones)
        own = case_output_task(task, case)
        assert own == task or (task.name == "glioma2021" and own.name == "brats2023")
        values = set(np.unique(np.asarray(nib.load(preds / f"{case.case_id}.nii.gz").dataobj)).tolist())
        assert values <= {0, *own.label_values}, (case.case_id, values)
    capsys.readouterr()
    scores = tmp_path / "scores.json"
    assert cli_main(["evaluate", "--pred", str(preds), "--truth", str(src), "--task", name,
                     "--json", str(scores)]) == 0
    result = json.loads(scores.read_text())
    assert result.get("task", {"name": "glioma2021"})["name"] == name  # the default task's JSON is as it was
    for case in result["cases"].values():
        assert [r for r in task.region_names if r in case] == list(task.region_names)
        assert all(0.0 <= case[r]["dice"] <= 1.0 for r in task.region_names)
