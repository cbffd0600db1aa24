"""The BraTS vocabulary: modalities, labels, classes and regions.

* label  -- an integer as stored in BraTS files: 1 NCR, 2 ED, 4 ET (2018-2021) or 3 ET (2023+)
* class  -- the internal index 0 background, 1 NCR, 2 ED, 3 ET (softmax models)
* region -- the nested unions BraTS scores: WT = NCR+ED+ET, TC = NCR+ET, ET (sigmoid models)

Everything here is numpy only.
"""
from __future__ import annotations

import numpy as np

#: canonical modality names, in the report's vocabulary
MODALITIES = ("flair", "t1", "t1ce", "t2")
#: BraTS 2023 names -> canonical names
MODALITY_ALIASES = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}
#: the report's default input: FLAIR, T1ce, T2 stacked in that order
DEFAULT_MODALITIES = ("flair", "t1ce", "t2")

CLASS_NAMES = ("background", "NCR", "ED", "ET")
CLASS_LONG_NAMES = ("background", "NECROTIC/CORE", "EDEMA", "ENHANCING")
REGION_NAMES = ("WT", "TC", "ET")
#: classes belonging to each region
REGION_CLASSES = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
#: value written to files for enhancing tumor in each label convention
ET_LABEL = {"2021": 4, "2023": 3}


def canonical_modality(name: str) -> str:
    """Return the canonical name (flair, t1, t1ce, t2) of a modality in either vocabulary.

    Raises ValueError for an unknown name.
    """
    key = name.strip().lower()
    key = MODALITY_ALIASES.get(key, key)
    if key not in MODALITIES:
        raise ValueError(
            f"unknown modality {name!r}: use one of {', '.join(MODALITIES)} "
            f"or {', '.join(MODALITY_ALIASES)}"
        )
    return key


def parse_modalities(spec) -> tuple[str, ...]:
    """Parse ``"flair,t1ce,t2"`` or a sequence of names into canonical names (order kept)."""
    if isinstance(spec, str):
        spec = [s for s in spec.replace(" ", ",").split(",") if s]
    names = tuple(canonical_modality(s) for s in spec)
    if not names:
        raise ValueError("no modality given")
    if len(set(names)) != len(names):
        raise ValueError(f"modality listed twice in {spec!r}")
    return names


def labels_to_classes(labels: np.ndarray, convention: str = "auto") -> np.ndarray:
    """Map a BraTS label map to class indices 0..3 (uint8).

    Args:
        labels: integer array of BraTS labels, any shape.
        convention: ``"2021"`` (ET stored as 4), ``"2023"`` (ET stored as 3) or
            ``"auto"``: 4 present means 2021; otherwise 3 is taken as ET (2023).
    Raises:
        ValueError saying what the map holds that no convention allows (:func:`label_problem`).
    """
    labels = np.asarray(labels)
    small = _small_ints(labels)
    if small is not None:  # a few comparisons instead of np.unique's sort / hash of ~9 M voxels
        lo, hi = int(small.min()), int(small.max())
        present = np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (small == v).any()])
    else:
        present = np.unique(labels)
    problem = label_problem(present, convention)
    if problem:
        raise ValueError(problem)
    if convention == "auto":
        convention = "2023" if 3 in present else "2021"
    et = ET_LABEL[str(convention)]
    lut = np.zeros(256 if small is not None else max(5, et + 1), dtype=np.uint8)
    lut[1], lut[2], lut[et] = 1, 2, 3
    if small is not None:
        return lut[small]  # uint8 indices: no 8-byte index copy of the volume
    return lut[labels.astype(np.intp, copy=False)]


#: the labels of both conventions, as the messages of :func:`label_problem` name them
_CONVENTIONS_TEXT = "; ".join(f"{c}: 0, 1, 2, {et}" for c, et in ET_LABEL.items())


def label_problem(present, convention: str = "auto") -> str | None:
    """Why the label values ``present`` (the distinct values of a map) are not a BraTS glioma label map, in one
    line that names what was found; None when they are one.

    ``convention`` ``"2021"`` allows 0, 1, 2, 4 and ``"2023"`` 0, 1, 2, 3; ``"auto"`` allows either (not both 3
    and 4: the post-treatment maps of BraTS 2024, where 4 is the resection cavity, are not supported).
    """
    present = np.asarray(present)
    problem = not_labels(present)
    if problem:
        return problem + (f": a label map holds whole numbers ({_CONVENTIONS_TEXT})" if "non-integer" in problem
                          else "")
    values = sorted({int(v) for v in present})
    others = [v for v in values if v not in (0, 1, 2, 3, 4)]
    if 3 in values and 4 in values:
        also = f" (and {', '.join(map(str, others))})" if others else ""
        return (f"holds both 3 and 4{also}: not a 2021 or 2023 glioma label map "
                f"({_CONVENTIONS_TEXT}); a post-treatment map with "
                "4 = resection cavity is not supported yet")
    if convention == "auto":
        if others:
            return (f"unexpected label values {others}: neither a 2021 nor a 2023 glioma label map "
                    f"({_CONVENTIONS_TEXT})")
        return None
    et = ET_LABEL[str(convention)]
    bad = [v for v in values if v not in (0, 1, 2, et)]
    if not bad:
        return None
    other = next(c for c in ET_LABEL if c != str(convention))
    hint = f"; {bad[0]} is ET in {other} label maps" if bad == [ET_LABEL[other]] else ""
    return f"unexpected label values {bad} (the {convention} convention: 0, 1, 2, {et}{hint})"


def not_labels(present) -> str | None:
    """Why the distinct values ``present`` of a map cannot be labels of any task (fractions, NaN or infinities),
    in one line; None when they are whole numbers."""
    present = np.asarray(present)
    if present.dtype.kind != "f":
        return None
    finite = present[np.isfinite(present)]
    fractions = finite[finite != np.round(finite)]
    if fractions.size:
        shown = ", ".join(f"{v:g}" for v in fractions[:3]) + (", ..." if fractions.size > 3 else "")
        return f"holds non-integer values (e.g. {shown}), not labels"
    if finite.size < present.size:
        return "holds NaN or infinite values, not labels"
    return None


def _small_ints(labels: np.ndarray):
    """``labels`` as uint8 when it is a non-empty integer array with values in 0..255, else None."""
    if labels.dtype.kind not in "iu" or labels.size == 0:
        return None
    if labels.dtype == np.uint8:
        return labels
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi > 255:
        return None
    return labels.astype(np.uint8)


def classes_to_labels(classes: np.ndarray, convention: str = "2021") -> np.ndarray:
    """Map class indices 0..3 back to BraTS labels (uint8), ET as 4 (``"2021"``) or 3 (``"2023"``)."""
    lut = np.array([0, 1, 2, ET_LABEL[str(convention)]], dtype=np.uint8)
    return lut[np.asarray(classes).astype(np.intp, copy=False)]


def classes_to_regions(classes: np.ndarray) -> np.ndarray:
    """One boolean channel per region: ``(..., 3)`` with WT, TC, ET for a class map ``(...)``."""
    classes = np.asarray(classes)
    return np.stack([classes > 0, (classes == 1) | (classes == 3), classes == 3], axis=-1)


def regions_to_classes(regions: np.ndarray, threshold=0.5) -> np.ndarray:
    """Turn region probabilities ``(..., 3)`` (WT, TC, ET) into a class map ``(...)`` uint8.

    The regions are nested: a voxel is ET where ET > t, else NCR where TC > t,
    else ED where WT > t, else background (the usual BraTS decoding).
    ``threshold``: one ``t`` for all three, or ``(t_WT, t_TC, t_ET)``.
    """
    regions = np.asarray(regions)
    ts = tuple(threshold) if np.ndim(threshold) else (threshold,) * 3
    if len(ts) != 3:
        raise ValueError(f"threshold: one value or three (WT, TC, ET), not {len(ts)}")
    wt, tc, et = (regions[..., i] > ts[i] for i in range(3))
    out = np.zeros(regions.shape[:-1], dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 3
    return out


def one_hot(classes: np.ndarray, n_classes: int = 4, dtype=np.float32) -> np.ndarray:
    """One-hot encode a class map ``(...)`` into ``(..., n_classes)``."""
    classes = np.asarray(classes)
    return (classes[..., None] == np.arange(n_classes, dtype=classes.dtype)).astype(dtype)


# ----------------------------------------------------------------------------- output modes
#: what a model outputs, and so what its targets, losses and metrics see: ``"softmax"``, one probability per class
#: (background, NCR, ED, ET) summing to 1, or ``"regions"``, three independent sigmoids WT, TC, ET
OUTPUTS = ("softmax", "regions")


def check_output(output) -> str:
    """Return the output mode ``output`` (one of :data:`OUTPUTS`, any case) in lower case.

    Raises:
        ValueError ``unknown output 'sigmoid': use one of 'softmax', 'regions'`` for anything else.
    """
    key = output.lower() if isinstance(output, str) else output
    if key not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}: use one of {', '.join(map(repr, OUTPUTS))}")
    return key
