"""Paired comparison of two cross-validations of the same cases: per region and score, the mean per-case
difference with a bootstrap interval and a Wilcoxon test (``compare_crossval``, ``brats-keras crossval-compare``).
"""
from __future__ import annotations

import numpy as np

from .crossval import SCORES, _TABLES, _check_table, crossval_file, read_crossval, table_task
from .io import BratsInputError
from .postprocessing import paired_interval

#: whether a rise of the score is an improvement (Dice) or a worsening (HD95: lower is better)
HIGHER_IS_BETTER = {"dice": True, "hd95": False}


def _wilcoxon(diff: np.ndarray) -> tuple:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy's defaults: zero differences
    dropped), or ``(None, note)`` when every difference is zero."""
    import warnings

    from scipy.stats import wilcoxon

    if not np.any(diff):
        return None, "all differences are zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(wilcoxon(diff).pvalue), None


def _verdict(low: float, high: float, higher_is_better: bool) -> str:
    if low <= 0.0 <= high:
        return "no clear difference"
    return "B better" if (low > 0) == higher_is_better else "B worse"


def _region_verdict(dice: str, hd95: str) -> str:
    verdicts = {dice, hd95} - {"no clear difference"}
    if not verdicts:
        return "no clear difference"
    return verdicts.pop() if len(verdicts) == 1 else "mixed"


def compare_crossval(a, b, common: bool = False, postprocessed: bool = False, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> dict:
    """A paired comparison of two cross-validations of the same cases: ``a`` the baseline, ``b`` the candidate.

    With 28 cases and a per-case ET Dice standard deviation near 0.27, a difference of the means of 0.01-0.02
    can be noise; pairing each case with itself removes the spread between cases. Per region (of the tables' task:
    WT, TC, ET for the default one) and
    score (Dice, HD95): the means of A and B, the mean paired difference B - A, its ``confidence`` interval by a
    percentile bootstrap over cases (``resamples`` draws of the cases with replacement, from ``seed``: the same
    call gives the same interval), the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; ``None``
    with a note when every difference is zero) and the number of cases where B is better, worse or tied. Higher
    Dice is better, lower HD95 is better. A score's verdict is "B better" or "B worse" when its interval
    excludes 0, else "no clear difference"; a region's verdict combines its two scores ("mixed" when they
    disagree).

    Args:
        a, b: ``crossval`` output folders or their JSON files (:func:`brats_keras.crossval.read_crossval`), or the
            tables themselves (dicts as :func:`brats_keras.crossval.crossval_predict` returns them).
        common: compare only the cases both tables hold (the others are listed under ``"dropped"``) instead of
            refusing tables of different cases.
        postprocessed: read ``crossval_postprocessed.json`` from a folder instead of ``crossval.json``.
    Returns:
        ``{"a", "b", "cases" (compared, sorted), "n_cases", "dropped": {"only_a", "only_b"}, "failed": {case:
        reason}, "resamples", "seed", "confidence", "regions": {region: {"dice": {"mean_a", "mean_b",
        "mean_diff", "ci", "wilcoxon_p", "wilcoxon_note", "better", "worse", "tied", "verdict"}, "hd95": {...},
        "verdict"}}, "differences": {case: {region: {"dice", "hd95"}}}}``.
    Raises:
        BratsInputError (one line): an unreadable table; tables of different cases without ``common``
        (naming the cases in one only); no case left to compare.
    """
    if int(resamples) < 1:
        raise BratsInputError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise BratsInputError(f"confidence must be between 0 and 1, not {confidence}")
    tables, names = [], []
    for table, label in ((a, "A"), (b, "B")):
        if isinstance(table, dict):
            _check_table(table, f"table {label}")
            tables.append(table)
            names.append(f"table {label}")
        else:
            path = crossval_file(table, postprocessed)
            tables.append(read_crossval(path, postprocessed, scores_only=True))
            names.append(str(path))
    ta, tb = tables
    task = table_task(ta)
    if not task.same_classes(table_task(tb)):
        raise BratsInputError(f"{names[0]} is a table of task {task.name}, {names[1]} of {table_task(tb).name}: "
                              "compare cross-validations of one task")
    ids_a = set(ta["cases"]) | set(ta.get("failed", {}))
    ids_b = set(tb["cases"]) | set(tb.get("failed", {}))
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    if (only_a or only_b) and not common:
        parts = [f"only in {name}: {', '.join(ids)}" for name, ids in ((names[0], only_a), (names[1], only_b)) if ids]
        raise BratsInputError(f"the two cross-validations do not cover the same cases ({'; '.join(parts)}): "
                              f"give --common to compare the {len(ids_a & ids_b)} shared cases")
    failed = {}
    for name, table in zip(names, tables):
        for cid, reason in table.get("failed", {}).items():
            if cid in ids_a & ids_b:
                failed.setdefault(cid, f"{name}: {str(reason).splitlines()[0] if reason else 'failed'}")
    cases = sorted((ids_a & ids_b) - set(failed))
    if not cases:
        raise BratsInputError(f"no case to compare between {names[0]} and {names[1]}"
                              + (f" ({len(failed)} failed)" if failed else ""))
    regions, differences = {}, {cid: {} for cid in cases}
    for r in task.region_names:
        regions[r] = {}
        for s in SCORES:
            va = np.array([float(ta["cases"][c][r][s]) for c in cases])
            vb = np.array([float(tb["cases"][c][r][s]) for c in cases])
            diff = vb - va
            low, high = paired_interval(diff, confidence, resamples, seed)  # the same seeded draws for every score
            p, note = _wilcoxon(diff)
            sign = 1.0 if HIGHER_IS_BETTER[s] else -1.0
            regions[r][s] = {"mean_a": float(va.mean()), "mean_b": float(vb.mean()), "mean_diff": float(diff.mean()),
                             "ci": [low, high], "wilcoxon_p": p, "wilcoxon_note": note,
                             "better": int(np.sum(sign * diff > 0)), "worse": int(np.sum(sign * diff < 0)),
                             "tied": int(np.sum(diff == 0)), "verdict": _verdict(low, high, HIGHER_IS_BETTER[s])}
            for c, d in zip(cases, diff):
                differences[c].setdefault(r, {})[s] = float(d)
        regions[r]["verdict"] = _region_verdict(regions[r]["dice"]["verdict"], regions[r]["hd95"]["verdict"])
    return {"a": names[0], "b": names[1], "table": _TABLES[bool(postprocessed)], "cases": cases,
            "n_cases": len(cases), "dropped": {"only_a": only_a, "only_b": only_b},
            "failed": dict(sorted(failed.items())),
            "resamples": int(resamples), "seed": seed, "confidence": confidence, "regions": regions,
            "differences": differences}


def format_comparison(result: dict) -> str:
    """A text table of a :func:`compare_crossval` result, then one verdict line per region."""
    level = f"{100 * result['confidence']:g}%"
    lines = [f"A (baseline):  {result['a']}", f"B (candidate): {result['b']}"]
    dropped = result["dropped"]["only_a"] + result["dropped"]["only_b"]
    if dropped:
        lines.append(f"{len(dropped)} case(s) in one table only, left out (--common): {', '.join(dropped)}")
    if result["failed"]:
        lines.append(f"{len(result['failed'])} case(s) failed in A or B, left out: "
                     + "; ".join(f"{c} ({why})" for c, why in result["failed"].items()))
    lines.append(f"{result['n_cases']} cases, paired: B - A per case; {level} interval by a bootstrap over cases "
                 f"({result['resamples']} resamples, seed {result['seed']}); Wilcoxon signed-rank p")
    head = (f"{'region':<6} {'score':<9} {'mean A':>8} {'mean B':>8} {'B - A':>8}  {(level + ' CI'):^20}  "
            f"{'p':>6}  {'better':>6} {'worse':>5} {'tied':>4}")
    lines += [head, "-" * len(head)]
    no_test = []
    for r, scores in result["regions"].items():
        for s in SCORES:
            c = scores[s]
            digits, label = (4, "Dice") if s == "dice" else (2, "HD95 (mm)")
            p = "-" if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3g}"
            if c["wilcoxon_p"] is None:
                no_test.append(f"{r} {label.split()[0]}")
            ci = f"[{c['ci'][0]:+.{digits}f}, {c['ci'][1]:+.{digits}f}]"
            lines.append(f"{r:<6} {label:<9} {c['mean_a']:>8.{digits}f} {c['mean_b']:>8.{digits}f} "
                         f"{c['mean_diff']:>+8.{digits}f}  {ci:^20}  {p:>6}  {c['better']:>6} {c['worse']:>5} "
                         f"{c['tied']:>4}")
    lines.append("-" * len(head))
    if no_test:
        lines.append(f"p not computed (-) where every difference is zero: {', '.join(no_test)}")
    lines.append("better / worse: cases where B has the higher Dice or the lower HD95 / the reverse")
    for r, scores in result["regions"].items():
        d, h = scores["dice"], scores["hd95"]
        lines.append(f"{r}: {scores['verdict']} (Dice {d['mean_diff']:+.4f}: {d['verdict']}; "
                     f"HD95 {h['mean_diff']:+.2f} mm: {h['verdict']})")
    return "\n".join(lines)
