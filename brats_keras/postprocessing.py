"""Post-processing of predicted class maps: the settings (``postprocessing_spec``), applying them, and choosing
them on out-of-fold predictions (``choose_postprocessing``).

A setting removes small components of a region, keeps its largest ones, moves the region thresholds of a region
model, or turns a small predicted ET into necrosis (the BraTS rule); :class:`brats_keras.inference.Predictor`
applies the settings stored in a model file, and ``brats-keras crossval --choose-postprocessing`` chooses them.

Settings are per region a region head predicts (the task's :attr:`~brats_keras.tasks.Task.region_order`: WT, TC,
ET for the default task), keyed by region name; choices are scored by the task's scored regions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import BratsInputError
from .tasks import get_task

#: candidate post-processing settings tried by :func:`choose_postprocessing` (voxels of the predicted label map)
COMPONENT_SIZES = (10, 50, 100, 250, 500, 1000)
ET_THRESHOLDS = (50, 100, 200, 300, 500)
#: region thresholds tried by :func:`choose_postprocessing` besides the default 0.5 (a coarse grid: 28 cases
#: cannot tell 0.65 from 0.7)
REGION_THRESHOLDS = (0.3, 0.4, 0.6, 0.7, 0.8)
#: the least rise of a region's mean Dice that makes :func:`choose_postprocessing` take a setting (0.1 Dice
#: points): on 4 real validation cases the shipped model's gains were 0.0003-0.002, the size of noise
MIN_GAIN = 1e-3
#: the paired test of :func:`choose_postprocessing`: a setting is taken only if the lower end of this two-sided
#: bootstrap interval of its per-case Dice gain is not below 0. On the 28-case cross-validation the mean-only
#: rule took a TC threshold of 0.4 for +0.0011 that helped 11 cases and hurt 17 (90% interval -0.0038..+0.0068);
#: a rule that helps a few cases and hurts none (the BraTS small-ET rule on cases without ET) still passes
PAIRED_CONFIDENCE = 0.9
PAIRED_RESAMPLES = 2000


# ----------------------------------------------------------------------------- applying a setting
STRUCT26 = np.ones((3, 3, 3), bool)


def remove_small_components(classes: np.ndarray, min_size: int = 0, keep_largest: int = 0, task=None) -> np.ndarray:
    """Drop tumor islands: components (26-connectivity) of the task's first head region (the whole tumor)
    smaller than ``min_size`` voxels, and, when ``keep_largest`` > 0, all but the ``keep_largest`` biggest
    components (the WT rule of :func:`apply_postprocessing`)."""
    if min_size <= 0 and keep_largest <= 0:
        return classes
    return apply_postprocessing(classes, {"min_component": min_size, "keep_largest": keep_largest}, task)


def small_et_to_ncr(classes: np.ndarray, threshold: int, task=None) -> np.ndarray:
    """The BraTS post-processing rule: if fewer than ``threshold`` voxels are predicted ET, call them NCR (the
    class of the region around ET, :func:`removed_becomes`; a task without a head region ET is left as it is).

    (Cases without enhancing tumor score ET Dice 1 only for an empty ET prediction.)
    """
    task = get_task(task)
    if threshold <= 0 or "ET" not in task.region_order:
        return classes
    (et_class,) = task.region_classes("ET")
    et = classes == et_class
    n = int(et.sum())
    if 0 < n < threshold:
        classes = classes.copy()
        classes[et] = removed_becomes(task)["ET"]
    return classes


def removed_becomes(task=None) -> dict:
    """Head region -> the class a voxel takes when a component of that region is removed: it leaves that region
    and no other, taking the class of the nearest head region before it that holds it (0 where none does), so
    nested regions stay nested (default task: WT -> background, TC -> edema, ET -> necrosis)."""
    task = get_task(task)
    out = {}
    for j, name in enumerate(task.region_order):
        mine = set(task.region_classes(name))
        parents = [k for k in range(j) if mine < set(task.region_classes(task.region_order[k]))]
        out[name] = task.decoded_classes[parents[-1]] if parents else 0
    return out


#: :func:`removed_becomes` of the default task
REMOVED_BECOMES = removed_becomes()


#: the probability above which a voxel is in a region (region models); a stored choice may move it per region
DEFAULT_THRESHOLD = 0.5


def postprocessing_spec(spec=None, min_component=None, keep_largest=None, et_threshold=None,
                        thresholds=None, task=None) -> dict:
    """A complete post-processing choice: ``{"thresholds": {"WT": t, "TC": t, "ET": t}, "min_component":
    {"WT": n, "TC": n, "ET": n}, "keep_largest": {"WT": k, "TC": k, "ET": k}, "et_threshold": n}``
    (thresholds 0.5 and 0 elsewhere = off), one entry per head region of ``task``
    (:attr:`~brats_keras.tasks.Task.region_order`; None: the default task's WT, TC, ET).

    ``thresholds`` are the region probabilities above which a voxel is in that region (models with region outputs;
    :func:`brats_keras.labels.regions_to_classes`); a softmax model takes the most probable class and ignores them.
    ``spec`` may be such a dict (partial is fine; an int for ``min_component`` or ``keep_largest`` means the first
    head region, the whole tumor, as the ``--min-component`` / ``--keep-largest`` flags; a number or one number per
    head region for ``thresholds``), or None. The keyword arguments, when not None, replace the matching entries.
    Other keys (e.g. ``"chosen_on"``) are dropped. A stored spec without ``thresholds`` (written before they
    existed) reads as 0.5 for every region. """
    regions = get_task(task).region_order
    spec = dict(spec or {})
    for key, value in (("min_component", min_component), ("keep_largest", keep_largest),
                       ("et_threshold", et_threshold), ("thresholds", thresholds)):
        if value is not None:
            spec[key] = value
    out = {"thresholds": _thresholds(spec.get("thresholds"), regions), "min_component": {}, "keep_largest": {},
           "et_threshold": int(spec.get("et_threshold") or 0)}
    for key in ("min_component", "keep_largest"):
        value = spec.get(key) or 0
        if not isinstance(value, dict):
            value = {regions[0]: value}
        unknown = sorted(set(value) - set(regions))
        if unknown:
            raise ValueError(f"post-processing {key}: unknown region {', '.join(unknown)} (use {', '.join(regions)})")
        out[key] = {r: int(value.get(r) or 0) for r in regions}
    return out


def _thresholds(value, regions) -> dict:
    """``{"WT": t, "TC": t, "ET": t}`` (one per head region in ``regions``) from None (0.5 each), a number, one
    number per region or a partial dict."""
    names = ", ".join(regions)
    if value is None:
        value = {}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dict.fromkeys(regions, value)
    elif isinstance(value, (list, tuple)):
        if len(value) != len(regions):
            raise ValueError(f"post-processing thresholds: {_count(len(regions))} values ({names}), not {len(value)}")
        value = dict(zip(regions, value))
    elif not isinstance(value, dict):
        raise ValueError(f"post-processing thresholds: a number, {_count(len(regions))} numbers or a dict, "
                         f"not {value!r}")
    unknown = sorted(set(value) - set(regions))
    if unknown:
        raise ValueError(f"post-processing thresholds: unknown region {', '.join(unknown)} (use {names})")
    out = {}
    for region in regions:
        t = value.get(region, DEFAULT_THRESHOLD)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t < 1.0:
            raise ValueError(f"post-processing thresholds: {region} {t!r} is not a probability between 0 and 1")
        out[region] = float(t)
    return out


def _count(n: int) -> str:
    return {3: "three", 4: "four", 5: "five", 6: "six"}.get(n, str(n))


def is_postprocessing_off(spec, task=None) -> bool:
    spec = postprocessing_spec(spec, task=task)
    return (not spec["et_threshold"] and all(t == DEFAULT_THRESHOLD for t in spec["thresholds"].values())
            and not any(v for k in ("min_component", "keep_largest") for v in spec[k].values()))


def thresholds_ignored(spec, regions: bool, task=None) -> bool:
    """True when ``spec`` sets region thresholds other than 0.5 for a model without region outputs (a softmax
    model takes the most probable class, so it would ignore them): callers refuse that in one line."""
    return not regions and any(t != DEFAULT_THRESHOLD for t in region_thresholds(spec, task))


def region_thresholds(spec, task=None) -> tuple:
    """``(t_WT, t_TC, t_ET)`` of a post-processing spec, one per head region of ``task``, for
    :meth:`brats_keras.tasks.Task.regions_to_classes`."""
    task = get_task(task)
    return tuple(postprocessing_spec(spec, task=task)["thresholds"][r] for r in task.region_order)


def _kept_components(mask: np.ndarray, min_size: int, keep_largest: int) -> np.ndarray:
    """The voxels of ``mask`` in components (26-connectivity) of at least ``min_size`` voxels and,
    when ``keep_largest`` > 0, among the ``keep_largest`` biggest."""
    lab, n = ndimage.label(mask, structure=STRUCT26)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = sizes >= max(min_size, 1)
    if keep_largest > 0:
        top = np.zeros(n, bool)
        top[np.argsort(sizes, kind="stable")[::-1][:keep_largest]] = True
        keep &= top
    return np.concatenate([[False], keep])[lab]


def apply_postprocessing(classes: np.ndarray, spec, task=None) -> np.ndarray:
    """Apply a :func:`postprocessing_spec` to a class map ``(D, H, W)``; return a new map (or ``classes``).

    In order: for each head region of ``task`` (WT, TC and ET), components smaller than
    ``min_component[region]`` voxels, and all but the ``keep_largest[region]`` biggest, leave that region (see
    :func:`removed_becomes`); then a predicted ET under ``et_threshold`` voxels becomes necrosis
    (:func:`small_et_to_ncr`).
    """
    task = get_task(task)
    spec = postprocessing_spec(spec, task=task)
    for region, becomes in removed_becomes(task).items():
        min_size, largest = spec["min_component"][region], spec["keep_largest"][region]
        if min_size <= 0 and largest <= 0:
            continue
        mask = np.isin(classes, task.region_classes(region))
        drop = mask & ~_kept_components(mask, min_size, largest)
        if drop.any():
            classes = classes.copy()
            classes[drop] = becomes
    return small_et_to_ncr(classes, spec["et_threshold"], task)


def postprocessing_for_voxels(spec, voxel_mm3: float, task=None) -> dict:
    """A :func:`postprocessing_spec` for a label map of ``voxel_mm3`` mm^3 voxels (a prediction written back on
    an input's own grid, :class:`brats_keras.inference.Predictor`).

    Its sizes (``min_component``, ``et_threshold``) count voxels of the 1 mm grid they are chosen on, so they are
    mm^3: on this grid they become ``ceil(n / voxel_mm3)`` voxels (``keep_largest`` counts components, and stays).
    """
    spec = postprocessing_spec(spec, task=task)

    def voxels(n: int) -> int:
        return int(np.ceil(n / voxel_mm3 - 1e-9)) if n > 0 else 0

    return {**spec, "min_component": {r: voxels(n) for r, n in spec["min_component"].items()},
            "et_threshold": voxels(spec["et_threshold"])}


# ----------------------------------------------------------------------------- choosing the settings
def read_postprocessing_file(path) -> dict:
    """A post-processing choice from a JSON file (``postprocessing.json`` of crossval, or a spec).

    Raises:
        BratsInputError naming the file when it cannot be read, is not JSON or is not a JSON object.
    """
    try:
        choice = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a readable post-processing file ({exc})") from None
    if not isinstance(choice, dict):
        raise BratsInputError(f"{path}: a post-processing file holds a JSON object, not {type(choice).__name__}")
    return choice


def _tumor_crop(pred: np.ndarray, true: np.ndarray):
    """Both maps cut to the box of their tumor voxels (:func:`brats_keras.evaluation._tumor_box`): post-processing
    only removes voxels and connectivity stays inside the box, so every Dice is that of the whole volume, faster."""
    from .evaluation import _tumor_box

    box = _tumor_box(pred, true)
    if box is None:
        return pred[:1, :1, :1], true[:1, :1, :1]
    return pred[box], true[box]


def _threshold_crop(probs_q: np.ndarray, box, shape, truth: np.ndarray):
    """The quantized probabilities and the truth cut to one box: the brain box grown to hold every true
    tumor voxel (outside the brain box the probabilities are 0), so every Dice is that of the whole volume."""
    from .preprocessing import bounding_box

    lo = [a for a, _ in box]
    hi = [b for _, b in box]
    if (truth > 0).any():
        tbox = bounding_box(truth > 0)
        lo = [min(a, b[0]) for a, b in zip(lo, tbox)]
        hi = [max(a, b[1]) for a, b in zip(hi, tbox)]
    if tuple(truth.shape) != tuple(shape):
        raise BratsInputError(f"probabilities of shape {tuple(shape)} for a label map of shape {truth.shape}")
    p = _paste(probs_q, box, lo, [h - l for l, h in zip(lo, hi)])
    return p, truth[tuple(slice(l, h) for l, h in zip(lo, hi))]


def _paste(q: np.ndarray, box, lo, size) -> np.ndarray:
    """A zero uint8 array of ``size`` (plus ``q``'s channel axis) holding ``q``, the values of ``box``, where that
    box lies when ``lo`` is the array's corner: ``lo = (0, 0, 0)`` and ``size`` the volume's shape give the whole
    volume of a stored box (outside the brain box the probabilities are 0)."""
    out = np.zeros(tuple(size) + q.shape[3:], np.uint8)
    out[tuple(slice(a - l, b - l) for (a, b), l in zip(box, lo))] = q
    return out


def _decode(probs_q: np.ndarray, thresholds: dict, task=None) -> np.ndarray:
    task = get_task(task)
    return task.regions_to_classes(probs_q, [thresholds[r] * 255 for r in task.region_order])


def _case_dice(preds, truths, task=None) -> dict:
    """Dice per scored region and case, ``{region: array (cases,)}`` (BraTS convention: both empty scores 1)."""
    from .evaluation import dice

    task = get_task(task)
    per = {r: [] for r in task.region_names}
    for p, t in zip(preds, truths):
        pr, tr = task.classes_to_regions(p), task.classes_to_regions(t)
        for i, r in enumerate(task.region_names):
            per[r].append(dice(pr[..., i], tr[..., i]))
    return {r: np.asarray(v, float) for r, v in per.items()}


def _means(per_case: dict) -> dict:
    return {r: float(np.mean(v)) for r, v in per_case.items()}


def _bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` draws of ``n`` case positions with replacement; the same draws serve every region and
    score, so each resample is one re-drawn set of cases."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def paired_interval(diff, confidence: float = PAIRED_CONFIDENCE, resamples: int = PAIRED_RESAMPLES,
                    seed: int = 0) -> tuple:
    """Two-sided percentile-bootstrap interval ``(low, high)`` of the mean of paired per-case differences
    (``resamples`` draws of the cases with replacement from ``seed``: the same answer every call)."""
    diff = np.asarray(diff, float)
    if diff.size == 0:
        raise BratsInputError("no cases to compare")
    means = diff[_bootstrap_indices(diff.size, int(resamples), seed)].mean(axis=1)
    tail = (1.0 - float(confidence)) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def choose_postprocessing(preds, truths, sizes=COMPONENT_SIZES, et_thresholds=ET_THRESHOLDS,
                          min_gain: float = MIN_GAIN, probs=None, thresholds=REGION_THRESHOLDS,
                          confidence: float | None = PAIRED_CONFIDENCE, task=None) -> dict:
    """Choose, on out-of-fold predictions, the post-processing that raises the mean Dice.

    The settings are those of ``task``'s head regions (:attr:`~brats_keras.tasks.Task.region_order`; default WT,
    TC, ET, as below), the Dice those of its scored regions.

    With ``probs`` (region models), first the region thresholds: per region in the order ET, TC, WT (inner
    first: a voxel above the ET threshold is in all three regions), each on top of the choices already made, try
    each of ``thresholds`` (nearest 0.5 first, so ties go to the gentler one) instead of 0.5 as the probability
    above which a voxel is in that region, under the test below; the class maps decoded with the chosen thresholds replace
    ``preds``. Then per region, in the order WT, TC, ET and each on top of the choices already made (nnU-Net's
    sequential rule): try removing components under each of ``sizes`` voxels and keeping only the largest component
    (see :func:`apply_postprocessing`); keep the candidate with the highest mean Dice
    of that region if it beats doing nothing by more than ``min_gain`` and lowers no region's mean Dice by more
    than ``min_gain`` (ties go to the gentler candidate: smaller sizes first, keeping the largest last). Then
    the BraTS rule: a predicted ET under each of ``et_thresholds`` voxels becomes necrosis; the best threshold
    is kept under the same test on the ET Dice.

    With ``confidence`` (the default), a candidate must also pass a paired test against doing nothing: the lower
    end of the two-sided ``confidence`` bootstrap interval (:func:`paired_interval`) of its per-case Dice gain in
    that region must not be below 0. A setting whose small mean gain comes from helping some cases and hurting
    about as many is left out; one that helps a few cases and hurts none is kept. ``confidence=None`` (or 0)
    is the mean-only rule.

    Only Dice decides (HD95 is reported by :func:`crossval_predict`, not used here).

    Args:
        preds, truths: class maps ``(D, H, W)`` uint8 (classes 0..3), one pair per case, same shapes (``preds``
            is not used when ``probs`` is given).
        sizes, et_thresholds: the grids tried (voxels of the label maps: mm^3 at BraTS' 1 mm).
        min_gain: the least rise of the mean Dice a setting must bring (see ``MIN_GAIN``).
        probs: None, or per case ``(probs uint8, box, shape)`` as :func:`load_probabilities` gives (the region
            probabilities x 255 inside ``box`` of a volume of ``shape``); the maps they decode to at 0.5 stand for
            ``preds``.
        thresholds: the region thresholds tried besides 0.5.
        confidence: the paired test's interval (see above), or None for none.
        task: a :class:`~brats_keras.tasks.Task` or its name; None: the default task.
    Returns:
        ``{"min_gain", "confidence", "postprocess": spec for :func:`postprocessing_spec`,
        "dice_before": {region: mean}, "dice_after": {region: mean}, "tried": [{"step", "setting", "dice":
        {region: mean}, "gain_interval": [low, high] of that step's region against doing nothing, "chosen"}],
        "cases": n}``.
    """
    task = get_task(task)
    spec = postprocessing_spec(task=task)
    tried = []

    def interval(cand_cases, region):
        return list(paired_interval(cand_cases[region] - base[region], confidence or PAIRED_CONFIDENCE))

    def accept(cand_cases, best_score, region, row):
        """``cand_cases`` beats the best so far by ``min_gain``, lowers no region's mean by more than
        ``min_gain`` against doing nothing (``base``), and passes the paired test in ``region``."""
        cand = _means(cand_cases)
        score = _means(base)
        return (cand[region] > best_score[region] + min_gain
                and all(cand[r] >= score[r] - min_gain for r in task.region_names)
                and (not confidence or row["gain_interval"][0] >= 0.0))

    if probs is not None:
        crops = [_threshold_crop(np.asarray(q), box, shape, np.asarray(t)) for (q, box, shape), t in zip(probs, truths)]
        if not crops:
            raise BratsInputError("no predictions to choose post-processing on")
        chosen = dict(spec["thresholds"])
        full_truths = [t for _, t in crops]
        current = [_decode(q, chosen, task) for q, _ in crops]
        base = _case_dice(current, full_truths, task)
        before = score = _means(base)
        for region in reversed(task.region_order):  # inner first: ET voxels are TC and WT whatever their thresholds
            best = None
            # nearest to 0.5 first: of two thresholds within min_gain of each other the gentler one stays
            for t in sorted(thresholds, key=lambda t: (abs(t - DEFAULT_THRESHOLD), t)):
                if t == DEFAULT_THRESHOLD:
                    continue
                trial = {**chosen, region: float(t)}
                outs = [_decode(q, trial, task) for q, _ in crops]
                cases = _case_dice(outs, full_truths, task)
                cand = _means(cases)
                row = {"step": f"{region} threshold", "setting": {"threshold": float(t)}, "dice": cand,
                       "gain_interval": interval(cases, region), "chosen": False}
                tried.append(row)
                if accept(cases, best[1] if best else score, region, row):
                    best = (float(t), cand, outs, len(tried) - 1, cases)
            if best:
                chosen[region], score, current, base = best[0], best[1], best[2], best[4]
                tried[best[3]]["chosen"] = True
        spec["thresholds"] = chosen
        preds, truths = current, full_truths
    pairs = [_tumor_crop(np.asarray(p), np.asarray(t)) for p, t in zip(preds, truths)]
    if not pairs:
        raise BratsInputError("no predictions to choose post-processing on")
    current, truths = [p for p, _ in pairs], [t for _, t in pairs]
    base = _case_dice(current, truths, task)
    score = _means(base)
    if probs is None:
        before = score

    for region in task.region_order:
        candidates = [("min_component", s) for s in sizes] + [("keep_largest", 1)]
        best = None
        for key, value in candidates:
            one = postprocessing_spec({key: {region: value}}, task=task)
            outs = [apply_postprocessing(p, one, task) for p in current]
            cases = _case_dice(outs, truths, task)
            cand = _means(cases)
            row = {"step": f"{region} components", "setting": {key: value}, "dice": cand,
                   "gain_interval": interval(cases, region), "chosen": False}
            tried.append(row)
            if accept(cases, best[2] if best else score, region, row):
                best = (key, value, cand, outs, len(tried) - 1, cases)
        if best:
            key, value, score, current, row, base = best
            spec[key][region] = value
            tried[row]["chosen"] = True
    best = None
    for t in et_thresholds if "ET" in task.region_order else ():
        outs = [small_et_to_ncr(p, t, task) for p in current]
        cases = _case_dice(outs, truths, task)
        cand = _means(cases)
        row = {"step": "ET under N voxels to necrosis", "setting": {"et_threshold": t}, "dice": cand,
               "gain_interval": interval(cases, "ET"), "chosen": False}
        tried.append(row)
        if accept(cases, best[1] if best else score, "ET", row):
            best = (t, cand, len(tried) - 1)
    if best:
        spec["et_threshold"], score = best[0], best[1]
        tried[best[2]]["chosen"] = True
    return {"min_gain": min_gain, "confidence": confidence or None, "postprocess": spec, "dice_before": before, "dice_after": score, "tried": tried, "cases": len(pairs)}


def format_choice(choice: dict) -> str:
    """The tried settings with the mean Dice they give (per scored region, in the order the choice holds them),
    the chosen ones marked with ``*``."""
    b = choice["dice_before"]
    regions = list(b)

    def dice(d):
        return " ".join(f"{d[r]:.4f}" for r in regions)

    lines = [f"post-processing chosen on {choice['cases']} out-of-fold case(s); mean Dice {' / '.join(regions)}",
             f"  {'none':<48} {dice(b)}"]
    for row in choice["tried"]:
        (key, value), = row["setting"].items()
        label = f"{row['step']}: {key} {value}"
        gain = row.get("gain_interval")
        gain = f"  gain {gain[0]:+.4f}..{gain[1]:+.4f}" if gain else ""
        lines.append(f"{'*' if row['chosen'] else ' '} {label:<48} {dice(row['dice'])}{gain}")
    if choice.get("note"):
        lines.append(choice["note"])
    lines.append(f"  {'chosen together':<48} {dice(choice['dice_after'])}")
    rule = f"a setting must raise a mean Dice by more than {choice.get('min_gain', MIN_GAIN)}"
    if choice.get("confidence"):
        rule += (f" and the lower end of the {choice['confidence']:.0%} bootstrap interval of its per-case gain"
                 " (gain ..) must not be below 0")
    lines.append(f"chosen ({rule}): "
                 f"{json.dumps(choice['postprocess'])}")
    return "\n".join(lines)


def choice_rule_flags(choice: dict) -> str:
    """The ``brats-keras crossval`` flags that repeat the rule a :func:`choose_postprocessing` result was made
    under, where it differs from today's defaults ("" when it does not). A choice made before the paired test
    (no ``"confidence"`` key) was made by the mean-only rule: ``--confidence 0``."""
    flags = []
    min_gain = choice.get("min_gain", MIN_GAIN)
    if min_gain != MIN_GAIN:
        flags.append(f"--min-gain {min_gain:g}")
    confidence = choice.get("confidence") or 0.0
    if confidence != PAIRED_CONFIDENCE:
        flags.append(f"--confidence {confidence:g}")
    return "".join(" " + f for f in flags)


def set_postprocessing(model_path, choice) -> dict:
    """Store a post-processing choice in a model file's info (``info["postprocess"]``); return the new info.

    ``choice`` is a :func:`choose_postprocessing` result (its ``postprocess`` and ``chosen_on`` are stored),
    a spec dict, or None to remove the stored choice. :class:`~brats_keras.inference.Predictor` then applies
    it to every prediction unless told otherwise (``--no-postprocess`` or explicit flags).

    A file listed in an ``ensemble.json`` beside it is changed only when its folder is what the record says
    (:func:`brats_keras.ensemble_record.ensemble_files`), and the record then gets the file's new checksum.
    """
    from .checkpoint import read_info, write_info
    from .ensemble_record import ensemble_files, listed_in_record, update_checksum

    model_path = Path(model_path)
    if model_path.is_dir():
        raise BratsInputError(f"{model_path}: an export folder keeps the post-processing of the .keras file it was "
                              "exported from: set it on that file, then export again")
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found")
    member = listed_in_record(model_path)
    if member:  # trusted before its bytes (and so its checksum) change
        ensemble_files(model_path.parent)
    info = read_info(model_path)
    if not info:
        raise BratsInputError(f"{model_path}: not a brats-keras model file (no preprocessing info)")
    if choice is None:
        info.pop("postprocess", None)
    else:
        info["postprocess"] = _postprocess_info(choice, info.get("task"))
        _thresholds_apply(info, model_path)
    write_info(model_path, info)
    if member:
        update_checksum(model_path)
    return info


def _postprocess_info(choice: dict, task=None) -> dict:
    """The ``info["postprocess"]`` that :func:`set_postprocessing` would store for ``choice`` (the settings of
    ``task``'s head regions: the task a model file records, None for one that records none)."""
    if not isinstance(choice, dict):
        raise BratsInputError(f"a post-processing choice is a JSON object, not {type(choice).__name__}")
    try:
        spec = postprocessing_spec(choice.get("postprocess", choice), task=task)
    except (ValueError, TypeError) as exc:
        raise BratsInputError(f"post-processing: {exc}") from None
    if "chosen_on" in choice:
        spec["chosen_on"] = {**choice["chosen_on"], "dice_before": choice.get("dice_before"),
                             "dice_after": choice.get("dice_after")}
    return spec


def _thresholds_apply(info: dict, name) -> None:
    """Refuse (BratsInputError naming ``name``) region thresholds other than 0.5 in the post-processing of a model
    without region outputs: a softmax model takes the most probable class and would ignore them."""
    if thresholds_ignored(info.get("postprocess"), info.get("output") == "regions", info.get("task")):
        raise BratsInputError(f"{name}: the post-processing sets region thresholds, which a model with "
                              f"{info.get('output') or 'no'} outputs ignores (chosen for a region model?)")
