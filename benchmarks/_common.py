"""Helpers shared by the benchmark scripts: machine header, load average, tables, real-data paths.

Every script prints the command line it was run with, the machine, the 1-minute load
average next to each measured row (other jobs share the CPU: compare numbers only within
one run), and markdown tables that can be pasted into ``benchmarks/RESULTS.md`` as they are.

numpy only: no deep-learning framework is imported here.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the real BraTS cases beside the checkout (never copied into the repository)
REAL_DATA = REPO.parent / "shared" / "data" / "brats-real"


def command_line() -> str:
    """The command that started this script, as one could type it again from the repository root."""
    script = os.path.relpath(sys.argv[0], Path.cwd()) if sys.argv and sys.argv[0] else "?"
    return "python " + " ".join(shlex.quote(a) for a in [script] + sys.argv[1:])


def load_avg() -> str:
    """The 1 / 5 / 15-minute load averages as ``'a / b / c'``."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def load1() -> str:
    """The 1-minute load average, for a table column."""
    return f"{os.getloadavg()[0]:.1f}"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def busy_processes(n: int = 3, width: int = 110) -> list[str]:
    """The ``n`` processes using the most CPU, other than this one (what else is running)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    me = {str(os.getpid()), str(os.getppid())}
    rows = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[0] in me or parts[3].startswith("ps "):
            continue
        if float(parts[1]) < 5:
            break
        rows.append(f"pid {parts[0]:>6}  {parts[1]:>5}% cpu  up {parts[2]:>9}  {parts[3][:width]}")
        if len(rows) == n:
            break
    return rows


#: distribution name of an importable module, where they differ
_DIST = {"sklearn": "scikit-learn"}


def versions(modules) -> str:
    """``name version`` of each installed distribution in ``modules`` (read from metadata, nothing imported)."""
    from importlib import metadata

    out = [f"python {platform.python_version()}"]
    for name in modules:
        try:
            out.append(f"{name} {metadata.version(_DIST.get(name, name))}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def print_header(title: str, modules=("numpy",), extra: dict | None = None) -> None:
    """Print the title, command line, machine, versions, load and the busiest other processes."""
    flags = cpu_flags()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    print(f"# {title}")
    print(f"command: {command_line()}")
    print(f"date:    {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib():.1f} GiB RAM, "
          f"SIMD: {' '.join(simd) or 'none'}")
    print(f"software: {versions(modules)}")
    for k, v in (extra or {}).items():
        print(f"{k}: {v}")
    print(f"load average at start (1/5/15 min): {load_avg()}  (other jobs share these {os.cpu_count()} cores)")
    busy = busy_processes()
    if busy:
        print("busiest other processes at start:")
        for line in busy:
            print("  " + line)
    print(flush=True)


def print_footer() -> None:
    print(f"\nload average at end (1/5/15 min): {load_avg()}", flush=True)


def fmt(x, digits: int = 2) -> str:
    """A number for a table cell ('-' for None / NaN)."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, int)) and not isinstance(x, float):
        return str(x)
    if x != x:  # NaN
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if 0 < abs(x) < 0.1:
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


def print_table(headers, rows, title: str | None = None) -> None:
    """Print a markdown table with aligned columns."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    if title:
        print(f"\n{title}\n")
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))
    print(flush=True)


def ratio(a, b):
    """``a / b`` or NaN when either is missing or ``b`` is 0."""
    if a is None or b is None or not b or a != a or b != b:
        return float("nan")
    return a / b


def progress(total: int, desc: str, enabled: bool = True, unit: str = "it"):
    """A tqdm bar on stderr (so the tables on stdout stay clean)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, leave=False)


def pick_cases(data_dir, n: int | None):
    """The first ``n`` labelled cases (sorted by id) under ``data_dir``; SystemExit with a clear message if none."""
    from brats_keras import io as bio

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SystemExit(f"{data_dir}: no such folder (pass --data; the real cases live in ../shared/data/brats-real)")
    cases = bio.find_cases(data_dir, require_seg=True)
    if not cases:
        raise SystemExit(f"{data_dir}: no labelled BraTS case found")
    return cases[: n] if n else cases


def link_cases(cases, dst: Path, repeat: int = 1) -> Path:
    """Make ``dst/<case>/<file>`` symbolic links to the cases' files, so a folder tool sees only these cases.

    ``repeat`` > 1 links each case that many times under new ids (``<case>_rep2``, ...): a larger folder
    for throughput runs, from the same files.
    """
    dst = Path(dst)
    for k in range(1, repeat + 1):
        for case in cases:
            new_id = case.case_id if k == 1 else f"{case.case_id}_rep{k}"
            folder = dst / new_id
            folder.mkdir(parents=True, exist_ok=True)
            for p in list(case.images.values()) + ([case.seg] if case.seg else []):
                link = folder / Path(p).name.replace(case.case_id, new_id, 1)
                if not link.exists():
                    link.symlink_to(Path(p).resolve())
    return dst


def warm_page_cache(paths) -> int:
    """Read files once so every method below reads them from memory; return the bytes read."""
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            while True:
                chunk = f.read(1 << 24)
                if not chunk:
                    break
                total += len(chunk)
    return total


def quiet_tensorflow() -> None:
    """Call before importing keras: keep TensorFlow's start-up chatter off the output, and import
    brats_keras first so its default ``TF_ENABLE_ONEDNN_OPTS=1`` is in place when TensorFlow starts.

    (TensorFlow reads the variable once, at import: a script that imports keras before brats_keras
    runs with oneDNN off on this AMD CPU even though the variable reads 1 afterwards.)
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import brats_keras  # noqa: F401


def onednn_state() -> str:
    """Whether TensorFlow's oneDNN kernels are really on in this process (after keras is imported)."""
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            return f"n/a ({keras.backend.backend()} backend)"
        from tensorflow.python.util import _pywrap_util_port

        on = bool(_pywrap_util_port.IsMklEnabled())
    except ImportError:
        return f"unknown (TF_ENABLE_ONEDNN_OPTS={env})"
    return f"{'on' if on else 'OFF'} (TF_ENABLE_ONEDNN_OPTS={env} at TensorFlow import)"
