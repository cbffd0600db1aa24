"""scripts/run_folds.sh: the unfinished folds of a cross-validation are resumed or started, then the table.

The brats-keras command is replaced by a stand-in that records its arguments (and, for a new fold, writes the
config.json a real training writes first), so the test checks what the script asks for, not a training.
"""
import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_folds.sh"


def stand_in(tmp_path) -> Path:
    calls = tmp_path / "calls.txt"
    cmd = tmp_path / "brats-keras"
    cmd.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
if [ "$1" = train ] && [ "$2" != --resume ]; then
  while [ $# -gt 0 ]; do [ "$1" = --out ] && mkdir -p "$2" && echo '{{}}' > "$2/config.json"; shift; done
fi
""")
    cmd.chmod(cmd.stat().st_mode | stat.S_IEXEC)
    return cmd


def run(tmp_path, *args):
    env = {**os.environ, "BRATS_KERAS": str(stand_in(tmp_path))}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=60)


def test_unfinished_folds_are_resumed_or_started_then_the_table_is_made(tmp_path):
    runs = tmp_path / "runs"
    (runs / "fold1").mkdir(parents=True)
    (runs / "fold1" / "config.json").write_text("{}")  # fold 1 was started in an earlier sitting
    proc = run(tmp_path, runs, "data/conv", 3, "--recipe", "pretrained", "--init-from", "pre/fold-{fold}.keras")
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == [
        f"train --data data/conv --out {runs}/fold0 --folds 3 --fold 0 --recipe pretrained --init-from pre/fold-0.keras",
        f"train --resume {runs}/fold1",
        f"train --data data/conv --out {runs}/fold2 --folds 3 --fold 2 --recipe pretrained --init-from pre/fold-2.keras",
        f"crossval --runs {runs}/fold0 {runs}/fold1 {runs}/fold2 --out {runs}/cv --choose-postprocessing "
        "--confidence 0 --quiet",
    ]
    # a second sitting resumes every fold (a finished one returns at once) and makes the table again
    (tmp_path / "calls.txt").unlink()
    assert run(tmp_path, runs, "data/conv", 3, "--recipe", "pretrained").returncode == 0
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[:3] == [f"train --resume {runs}/fold{k}" for k in range(3)] and calls[3].startswith("crossval")


def test_a_failing_fold_stops_the_script_before_the_table(tmp_path):
    runs = tmp_path / "runs"
    failing = tmp_path / "failing"
    failing.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {tmp_path / 'calls.txt'}\nexit 2\n")
    failing.chmod(0o755)
    env = {**os.environ, "BRATS_KERAS": str(failing)}
    proc = subprocess.run(["bash", str(SCRIPT), str(runs), "data/conv", "2"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert (tmp_path / "calls.txt").read_text().splitlines() == [
        f"train --data data/conv --out {runs}/fold0 --folds 2 --fold 0"]


def test_usage_is_one_line_and_exit_2(tmp_path):
    proc = run(tmp_path, tmp_path / "runs")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"usage: {SCRIPT} RUNS DATA FOLDS [train flags...]"]
