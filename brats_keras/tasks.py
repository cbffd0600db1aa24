"""Tasks: what is segmented and how it is scored, as data.

A :class:`Task` names the label values stored in a task's files, the classes a softmax head predicts (background,
then one class per label, in the task's order), the regions the task scores (each a set of labels), the regions a
region head predicts with the order in which they are decoded back into labels, the modalities it expects and the
colours of its labels in pictures.

* label  -- an integer as stored in the task's files (2021 glioma: 1 NCR, 2 ED, 4 ET)
* class  -- the internal index: 0 background, then ``k`` for the task's ``k``-th label
* region -- a named set of labels that the task scores; a region head predicts :attr:`Task.region_order`

Built-in tasks are in :data:`TASKS` (the sources are in each task's ``source``); any other task is read from a
small JSON file (:func:`load_task_file`, the format is in :func:`task_from_dict`). Everything here is numpy only.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .labels import MODALITIES, _small_ints, canonical_modality, not_labels


class TaskError(ValueError):
    """A task definition (a JSON file or a record) that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Label:
    """One label of a task: the value stored in files, a short name, a long name and an RGB colour (0-255)."""

    value: int
    name: str
    long_name: str
    color: tuple

    @property
    def hex(self) -> str:
        """The colour as ``#RRGGBB``."""
        return "#" + "".join(f"{c:02X}" for c in self.color)


@dataclass(frozen=True)
class Region:
    """A region the task scores: a name and the label values it unites."""

    name: str
    labels: tuple


@dataclass(frozen=True)
class Task:
    """A segmentation task (see the module docstring).

    Attributes:
        name: the task's key (``glioma2021``); the one :func:`get_task` takes.
        title: a line for people.
        labels: the task's labels; their order is the order of the classes (class ``k`` is ``labels[k - 1]``).
        regions: the regions the task scores, in the order tables show them.
        region_order: the regions a region head predicts, in decoding order: a voxel gets the label that the
            region adds to the ones decoded after it (nnU-Net's ``regions_class_order``), so later regions win.
        modalities: the modalities the task's cases hold, canonical names.
        source: where the labels and regions come from.
        family: tasks of one family have the same classes and regions and differ only in the values stored in
            files (glioma 2021 stores ET as 4, glioma 2023+ as 3): a model of one predicts cases of the other.
    """

    name: str
    title: str
    labels: tuple
    regions: tuple
    region_order: tuple
    modalities: tuple = MODALITIES
    source: str = ""
    family: str = ""

    # ------------------------------------------------------------------ vocabulary
    @property
    def class_names(self) -> tuple:
        """``("background", <label names>...)``: the softmax head's channels."""
        return ("background",) + tuple(lab.name for lab in self.labels)

    @property
    def class_long_names(self) -> tuple:
        return ("background",) + tuple(lab.long_name for lab in self.labels)

    @property
    def n_classes(self) -> int:
        return 1 + len(self.labels)

    @property
    def label_values(self) -> tuple:
        """The values stored in files, in class order (background 0 not included)."""
        return tuple(lab.value for lab in self.labels)

    @property
    def region_names(self) -> tuple:
        """The scored regions' names, in table order."""
        return tuple(r.name for r in self.regions)

    @property
    def colors(self) -> dict:
        """Class index -> ``#RRGGBB`` for every class but the background."""
        return {k: lab.hex for k, lab in enumerate(self.labels, start=1)}

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"task {self.name} has no region {name!r} (its regions: {', '.join(self.region_names)})")

    def region_classes(self, name: str) -> tuple:
        """The class indices that region ``name`` unites."""
        values = self.region(name).labels
        return tuple(k for k, lab in enumerate(self.labels, start=1) if lab.value in values)

    def output_channels(self, output: str) -> int:
        """Channels of a ``"softmax"`` head (the classes) or a ``"regions"`` head (:attr:`region_order`)."""
        return self.n_classes if output == "softmax" else len(self.region_order)

    @property
    def region_membership(self) -> np.ndarray:
        """``(n_classes, len(region_order))`` 0/1 float32: which classes each head region unites."""
        m = np.zeros((self.n_classes, len(self.region_order)), dtype=np.float32)
        for j, name in enumerate(self.region_order):
            m[list(self.region_classes(name)), j] = 1
        return m

    @property
    def decoded_classes(self) -> tuple:
        """The class each head region decodes to, in :attr:`region_order` (the label it adds to later ones)."""
        out = []
        for j, name in enumerate(self.region_order):
            later = set().union(*(set(self.region(n).labels) for n in self.region_order[j + 1:]))
            (value,) = set(self.region(name).labels) - later
            out.append(self.label_values.index(value) + 1)
        return tuple(out)

    # ------------------------------------------------------------------ label maps
    def label_problem(self, present) -> str | None:
        """Why the distinct values ``present`` of a label map are not this task's labels, in one line; None when
        they are."""
        present = np.asarray(present)
        problem = not_labels(present)
        if problem:
            return problem
        bad = sorted({int(v) for v in present} - {0, *self.label_values})
        if bad:
            return f"unexpected label values {bad} for task {self.name} ({self.describe_labels()})"
        return None

    def describe_labels(self) -> str:
        """``0 background, 1 NCR, 2 ED, 4 ET``."""
        return ", ".join(["0 background"] + [f"{lab.value} {lab.name}" for lab in self.labels])

    def to_classes(self, labels) -> np.ndarray:
        """Map a label map of this task to class indices (uint8); ValueError naming unexpected values."""
        labels = np.asarray(labels)
        small = _small_ints(labels)
        # a count per value of a uint8 map instead of np.unique's sort of ~9 M voxels
        present = np.flatnonzero(np.bincount(small.ravel(), minlength=1)) if small is not None else np.unique(labels)
        problem = self.label_problem(present)
        if problem:
            raise ValueError(problem)
        lut = np.zeros(256, dtype=np.uint8)
        for k, value in enumerate(self.label_values, start=1):
            lut[value] = k
        return lut[small] if small is not None else lut[labels.astype(np.intp, copy=False)]

    def to_labels(self, classes) -> np.ndarray:
        """Map class indices back to this task's label values (uint8)."""
        lut = np.array((0,) + self.label_values, dtype=np.uint8)
        return lut[np.asarray(classes).astype(np.intp, copy=False)]

    def classes_to_regions(self, classes, regions=None) -> np.ndarray:
        """One boolean channel per region, ``(..., R)``: the scored regions, or the names in ``regions`` (e.g.
        :attr:`region_order` for a region head's targets)."""
        classes = np.asarray(classes)
        names = self.region_names if regions is None else tuple(regions)
        return np.stack([np.isin(classes, self.region_classes(n)) for n in names], axis=-1)

    def regions_to_classes(self, probs, threshold=0.5) -> np.ndarray:
        """Decode region-head probabilities ``(..., len(region_order))`` into a class map ``(...)`` uint8.

        A voxel above a region's threshold gets the class that region decodes to; regions later in
        :attr:`region_order` win. ``threshold``: one value, or one per head region.
        """
        probs = np.asarray(probs)
        n = len(self.region_order)
        ts = tuple(threshold) if np.ndim(threshold) else (threshold,) * n
        if len(ts) != n:
            raise ValueError(f"threshold: one value or {n} ({', '.join(self.region_order)}), not {len(ts)}")
        out = np.zeros(probs.shape[:-1], dtype=np.uint8)
        for j, cls in enumerate(self.decoded_classes):
            out[probs[..., j] > ts[j]] = cls
        return out

    # ------------------------------------------------------------------ records
    def to_dict(self) -> dict:
        """The task as the JSON object :func:`task_from_dict` reads (what manifests and model files record)."""
        d = {"name": self.name, "title": self.title,
             "labels": {lab.name: lab.value for lab in self.labels},
             "long_names": {lab.name: lab.long_name for lab in self.labels},
             "colors": {lab.name: list(lab.color) for lab in self.labels},
             "regions": {r.name: [self._name_of(v) for v in r.labels] for r in self.regions},
             "region_order": list(self.region_order),
             "modalities": list(self.modalities)}
        if self.source:
            d["source"] = self.source
        if self.family:
            d["family"] = self.family
        return d

    def _name_of(self, value: int) -> str:
        return next(lab.name for lab in self.labels if lab.value == value)

    def same_classes(self, other: "Task") -> bool:
        """Whether a model of this task predicts ``other``'s cases: the same classes and head regions, maybe other
        stored values (one family, or identical definitions)."""
        if self.family and self.family == other.family:
            return True
        mine, theirs = self.to_dict(), other.to_dict()
        return all(mine[k] == theirs[k] for k in ("labels", "regions", "region_order"))


# ---------------------------------------------------------------------------------------------------- user tasks
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")


def _pairs_no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise TaskError(f"{twice[0]!r} is given twice")
    return dict(pairs)


def task_from_dict(d: dict, where: str = "task") -> Task:
    """Build and validate a task from its JSON object.

    The object (like nnU-Net's ``dataset.json``)::

        {"name": "glioma2021",
         "labels": {"NCR": 1, "ED": 2, "ET": 4},          # name -> stored value; order = class order
         "regions": {"WT": ["NCR", "ED", "ET"], "TC": ["NCR", "ET"], "ET": ["ET"]},   # by label name or value
         "region_order": ["WT", "TC", "ET"],              # optional: the regions, in the order given
         "modalities": ["flair", "t1", "t1ce", "t2"],     # optional: all four
         "title": "...", "source": "...", "long_names": {...}, "colors": {"NCR": [213, 94, 0], ...}}

    Raises:
        TaskError, one line naming the first mistake (``where`` prefixes it).
    """
    def fail(msg):
        raise TaskError(f"{where}: {msg}")

    if not isinstance(d, dict):
        fail("a task is a JSON object with name, labels and regions")
    unknown = sorted(set(d) - {"name", "title", "labels", "regions", "region_order", "modalities", "source",
                               "long_names", "colors", "family"})
    if unknown:
        fail(f"unknown key {unknown[0]!r} (a task has name, labels, regions, region_order, modalities, title, "
             "source, long_names, colors)")
    for key in ("name", "labels", "regions"):
        if key not in d:
            fail(f"no {key!r}")
    name = d["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        fail(f"name {name!r}: a word of letters, digits and _ . + - starting with a letter")
    labels_in = d["labels"]
    if not isinstance(labels_in, dict) or not labels_in:
        fail("labels: an object of label name -> stored value, e.g. {\"NCR\": 1, \"ED\": 2, \"ET\": 4}")
    labels_in = {k: v for k, v in labels_in.items() if not (k.lower() == "background" and v == 0)}
    seen = {}
    for lname, value in labels_in.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            fail(f"label {lname!r}: its value must be a whole number from 1 to 255 (0 is the background), "
                 f"not {value!r}")
        if value in seen:
            fail(f"label value {value} is given twice ({seen[value]!r} and {lname!r})")
        seen[value] = lname
    long_names = d.get("long_names", {})
    colors = d.get("colors", {})
    for key, obj in (("long_names", long_names), ("colors", colors)):
        if not isinstance(obj, dict):
            fail(f"{key}: an object keyed by label name")
        extra = sorted(set(obj) - set(labels_in))
        if extra:
            fail(f"{key} names unknown label {extra[0]!r} (labels: {', '.join(labels_in)})")
    labels = []
    for k, (lname, value) in enumerate(labels_in.items()):
        color = colors.get(lname, _DEFAULT_COLORS[k % len(_DEFAULT_COLORS)])
        if (not isinstance(color, (list, tuple)) or len(color) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            fail(f"colors: {lname!r} must be [R, G, B] with whole numbers 0-255, not {color!r}")
        labels.append(Label(value, lname, str(long_names.get(lname, lname)), tuple(color)))
    regions_in = d["regions"]
    if not isinstance(regions_in, dict) or not regions_in:
        fail("regions: an object of region name -> list of label names (or values)")
    regions = []
    by_value = {lab.value: lab for lab in labels}
    by_name = {lab.name: lab for lab in labels}
    for rname, members in regions_in.items():
        if not isinstance(members, list) or not members:
            fail(f"region {rname!r}: a non-empty list of label names or values")
        values = []
        for m in members:
            lab = by_name.get(m) if isinstance(m, str) else by_value.get(m) if isinstance(m, int) else None
            if lab is None:
                fail(f"region {rname!r} names unknown label {m!r} (labels: {', '.join(lab.name for lab in labels)})")
            if lab.value in values:
                fail(f"region {rname!r} names label {lab.name!r} twice")
            values.append(lab.value)
        regions.append(Region(rname, tuple(sorted(values))))
    order = d.get("region_order", list(regions_in))
    if not isinstance(order, list) or not order:
        fail("region_order: a non-empty list of region names")
    for rname in order:
        if rname not in regions_in:
            fail(f"region_order names unknown region {rname!r} (regions: {', '.join(regions_in)})")
    if len(set(order)) != len(order):
        fail("region_order names a region twice")
    covered, members_of = set(), {r.name: set(r.labels) for r in regions}
    for j, rname in enumerate(order):
        own = members_of[rname] - set().union(*(members_of[n] for n in order[j + 1:]))
        if len(own) != 1:
            fail(f"region_order: region {rname!r} must add exactly one label to the regions after it "
                 f"(it adds {sorted(own) or 'none'}); order nested regions from the largest to the smallest")
        covered |= own
    missing = [lab.name for lab in labels if lab.value not in covered]
    if missing:
        fail(f"region_order: no region decodes to label {missing[0]!r}; a region head could never predict it")
    mods = d.get("modalities", list(MODALITIES))
    try:
        mods = tuple(canonical_modality(m) for m in mods) if isinstance(mods, list) else None
    except ValueError as exc:
        fail(f"modalities: {exc}")
    if not mods or len(set(mods)) != len(mods):
        fail("modalities: a list of distinct modality names")
    for key in ("title", "source", "family"):
        if key in d and not isinstance(d[key], str):
            fail(f"{key}: a string")
    return Task(name=name, title=d.get("title", name), labels=tuple(labels), regions=tuple(regions),
                region_order=tuple(order), modalities=mods, source=d.get("source", ""), family=d.get("family", ""))


def load_task_file(path) -> Task:
    """Read and validate a task JSON file; TaskError naming the file and the first mistake."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read the task file ({exc.strerror or exc})") from None
    try:
        d = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
    except TaskError as exc:
        raise TaskError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return task_from_dict(d, where=str(path))


# ---------------------------------------------------------------------------------------------------- built-ins
#: colours for labels of a task that gives none (Okabe-Ito, readable with colour-blindness)
_DEFAULT_COLORS = ((213, 94, 0), (240, 228, 66), (86, 180, 233), (0, 158, 115), (204, 121, 167), (0, 114, 178),
                   (230, 159, 0))
_NCR, _ED, _ET = (213, 94, 0), (240, 228, 66), (86, 180, 233)


def _task(**kw) -> Task:
    return task_from_dict(kw, where=f"built-in task {kw['name']}")


TASKS: dict = {}


def _register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


GLIOMA_2021 = _register(_task(
    name="glioma2021", family="glioma",
    title="BraTS 2021 adult glioma (2018-2021 label values)",
    labels={"NCR": 1, "ED": 2, "ET": 4},
    long_names={"NCR": "NECROTIC/CORE", "ED": "EDEMA", "ET": "ENHANCING"},
    colors={"NCR": list(_NCR), "ED": list(_ED), "ET": list(_ET)},
    regions={"WT": ["NCR", "ED", "ET"], "TC": ["NCR", "ET"], "ET": ["ET"]},
    source="Baid et al., The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and Radiogenomic "
           "Classification, arXiv:2107.02314 (labels 1 NCR, 2 ED, 4 ET; regions ET, TC = ET + NCR, "
           "WT = TC + ED)",
))

#: the 2023 label values, shared by every 2023 BraTS task and the later adult glioma (pre-treatment), meningioma,
#: metastasis and sub-Saharan Africa tasks: one scorer for all (ET moved from 4 to 3; the classes of 2021)
BRATS_2023 = _register(_task(
    name="brats2023", family="glioma",
    title="BraTS 2023+ pre-treatment tumours: adult glioma (GLI), meningioma (MEN), metastases (MET), "
          "sub-Saharan Africa glioma (SSA)",
    labels={"NETC": 1, "SNFH": 2, "ET": 3},
    long_names={"NETC": "NECROTIC/NON-ENHANCING CORE", "SNFH": "EDEMA/FLAIR HYPERINTENSITY", "ET": "ENHANCING"},
    colors={"NETC": list(_NCR), "SNFH": list(_ED), "ET": list(_ET)},
    regions={"WT": ["NETC", "SNFH", "ET"], "TC": ["NETC", "ET"], "ET": ["ET"]},
    source="The official BraTS 2023 scorer used for GLI, MEN, MET, SSA and PED 2023 "
           "(github.com/rachitsaluja/BraTS-2023-Metrics, brats_metrics.py: WT = 1, 2, 3; TC = 1, 3; ET = 3), a "
           "submodule of the organisers' Synapse workflow (github.com/Sage-Bionetworks-Challenges/brats2023); "
           "label names from the 2023 glioma data description (Synapse syn51156910, wiki 622351: ET label 3, ED "
           "label 2, NCR label 1) and the meningioma / metastasis papers (arXiv:2305.07642, arXiv:2306.00838: "
           "enhancing tumor, non-enhancing tumor core, surrounding non-enhancing FLAIR hyperintensity)",
))

#: BraTS 2024 post-treatment adult glioma: four sub-regions, the resection cavity scored on its own (not in WT)
GLIOMA_2024_POST = _register(_task(
    name="glioma2024-post",
    title="BraTS 2024 post-treatment adult glioma (GLI), with the resection cavity",
    labels={"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4},
    long_names={"NETC": "NON-ENHANCING CORE", "SNFH": "FLAIR HYPERINTENSITY", "ET": "ENHANCING",
                "RC": "RESECTION CAVITY"},
    colors={"NETC": list(_NCR), "SNFH": list(_ED), "ET": list(_ET), "RC": [204, 121, 167]},
    regions={"WT": ["NETC", "SNFH", "ET"], "TC": ["NETC", "ET"], "NETC": ["NETC"], "SNFH": ["SNFH"],
             "ET": ["ET"], "RC": ["RC"]},
    region_order=["WT", "TC", "ET", "RC"],
    source="The official BraTS 2024 scorer (github.com/rachitsaluja/BraTS-2024-Metrics, metrics_GLI.py: "
           "label_values WT, TC, NETC, SNFH, ET, RC with WT = 1-3, TC = 1, 3, NETC = 1, SNFH = 2, ET = 3, RC = 4); "
           "the data description (Synapse syn53708249, wiki 627500: ET label 3, SNFH label 2, NETC label 1, RC "
           "label 4); the challenge paper arXiv:2405.18368. The region head's decoding order (WT, TC, ET, then RC) "
           "is this library's: the sources give none",
))

#: BraTS-PEDs 2024: its own label values (ET is 1) and a cystic component
PEDIATRIC_2024 = _register(_task(
    name="pediatric2024",
    title="BraTS-PEDs 2024 pediatric brain tumours",
    labels={"ET": 1, "NETC": 2, "CC": 3, "ED": 4},
    long_names={"ET": "ENHANCING", "NETC": "NON-ENHANCING TUMOR", "CC": "CYSTIC COMPONENT", "ED": "EDEMA"},
    colors={"ET": list(_ET), "NETC": list(_NCR), "CC": [0, 158, 115], "ED": list(_ED)},
    regions={"WT": ["ET", "NETC", "CC", "ED"], "TC": ["ET", "NETC", "CC"], "ET": ["ET"], "NETC": ["NETC"],
             "CC": ["CC"], "ED": ["ED"]},
    region_order=["WT", "TC", "CC", "ET"],
    source="The official BraTS 2024 scorer (github.com/rachitsaluja/BraTS-2024-Metrics, metrics_PED.py: "
           "label_values WT, TC, ET, NETC, CC, ED with WT = 1-4, TC = 1-3, ET = 1, NETC = 2, CC = 3, ED = 4); "
           "Kazerooni et al., The Brain Tumor Segmentation in Pediatrics (BraTS-PEDs) Challenge, arXiv:2404.15009 "
           "(1 enhancing tumor, 2 non-enhancing tumor, 3 cystic component, 4 peritumoral edema). PEDs 2023 used the "
           "2023 values (task brats2023). The region head's decoding order is this library's: the sources give none",
))

#: BraTS 2024 meningioma radiotherapy planning: one label, the gross tumour volume, on the post-contrast T1 alone
MEN_RT_2024 = _register(_task(
    name="men-rt2024",
    title="BraTS 2024 meningioma radiotherapy (MEN-RT): the gross tumour volume",
    labels={"GTV": 1},
    long_names={"GTV": "GROSS TUMOR VOLUME"},
    colors={"GTV": [255, 0, 255]},
    regions={"GTV": ["GTV"]},
    modalities=["t1ce"],
    source="The official BraTS 2024 scorer (github.com/rachitsaluja/BraTS-2024-Metrics, metrics_MEN_RT.py: "
           "label_values GTV with GTV = 1) and the organisers' Synapse workflow "
           "(github.com/Sage-Bionetworks-Challenges/brats2023, evaluation/lesionwise/score.py: BraTS-MEN-RT scores "
           "the gold standard <case>_gtv.nii.gz); cases BraTS-MEN-RT-0000-1 with the one image _t1c",
))

#: the Medical Segmentation Decathlon's brain tumours: BraTS 2016-2017 cases with their labels renumbered
MSD_TASK01 = _register(_task(
    name="msd-task01", family="glioma",
    title="Medical Segmentation Decathlon Task01_BrainTumour",
    labels={"NET": 2, "ED": 1, "ET": 3},
    long_names={"NET": "NON-ENHANCING TUMOR", "ED": "EDEMA", "ET": "ENHANCING"},
    colors={"NET": list(_NCR), "ED": list(_ED), "ET": list(_ET)},
    regions={"WT": ["NET", "ED", "ET"], "TC": ["NET", "ET"], "ET": ["ET"]},
    source="The task's dataset.json (Antonelli et al., The Medical Segmentation Decathlon, Nat. Commun. 13:4128, "
           "2022; arXiv:1902.09063): modality 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w; labels 1 edema, 2 non-enhancing "
           "tumor, 3 enhancing tumour. Its classes are those of the 2021 task (class 1 = label 2), so BraTS models "
           "predict it; ET is label 3 as dataset.json says (MONAI's BraTS tutorial takes label 2 for ET)",
))

#: the task every command assumes unless told otherwise (the report's)
DEFAULT_TASK = GLIOMA_2021.name


def get_task(spec=None) -> Task:
    """A task from a :class:`Task`, a built-in name, a path to a task JSON file, a task record (dict) or None
    (the default task). Raises TaskError naming the built-in tasks for an unknown name."""
    if spec is None:
        return TASKS[DEFAULT_TASK]
    if isinstance(spec, Task):
        return spec
    if isinstance(spec, dict):
        return task_from_dict(spec, where="task record")
    key = str(spec).strip()
    if key.lower() in TASKS:
        return TASKS[key.lower()]
    if key.lower().endswith(".json") or Path(key).is_file():
        return load_task_file(key)
    raise TaskError(f"unknown task {key!r}: use one of {', '.join(TASKS)} or a task JSON file")


#: how a case's files are named, as :func:`brats_keras.io.find_cases` tells it: BraTS 2018-2021 (``_seg``), BraTS
#: 2023 and later (``BraTS-GLI-00000-000-seg``), the Medical Segmentation Decathlon, or plain names (``seg.nii.gz``)
NAMINGS = ("2021", "2023", "msd", "plain")


def fitting_tasks(present) -> list:
    """The built-in tasks whose labels hold every value in ``present``."""
    return [t.name for t in TASKS.values() if not t.label_problem(present)]


def detect_task(present, case_id: str = "", naming: str | None = None, given=None) -> Task:
    """The task of a label map with the distinct values ``present``, from its case's naming and the values.

    ``given`` (a task or its name) wins and is only checked. Otherwise the naming decides where it says enough:
    the Decathlon's layout is ``msd-task01``; 2018-2021 names are ``glioma2021``; in 2023+ names ET is 3, so a
    ``BraTS-GLI-`` map holding 4 is the 2024 post-treatment task (4 = resection cavity), any other 2023+ map is
    ``brats2023``, a ``BraTS-MEN-RT-`` map is ``men-rt2024`` (its ``_gtv`` file), and a ``BraTS-PED-`` map is
    ``pediatric2024`` when it holds 4 (edema) and ambiguous when not.
    Plain names go by the values: 4 without 3 is 2021, 3 without 4 is 2023, neither is the default task.
    Never a guess: where several tasks fit, TaskError names the values and the tasks that fit.
    """
    present = np.asarray(present)
    if given is not None:
        task = get_task(given)
        problem = task.label_problem(present)
        if problem:
            raise TaskError(problem + (f"; it fits {', '.join(fitting_tasks(present))}"
                                       if fitting_tasks(present) else ""))
        return task
    values = {int(v) for v in present if np.isfinite(v)} - {0} if present.dtype.kind == "f" else \
        {int(v) for v in present} - {0}
    if naming == "msd":
        name = MSD_TASK01.name
    elif naming == "2021":
        name = GLIOMA_2021.name
    elif naming == "2023" and "-MEN-RT-" in case_id.upper():
        name = MEN_RT_2024.name
    elif naming == "2023" and "-PED-" in case_id.upper():
        if 4 not in values:
            return _refuse(present, "a BraTS-PED map without 4 fits the 2023 values (brats2023) and the 2024 ones "
                                    "(pediatric2024)", ("brats2023", "pediatric2024"))
        name = PEDIATRIC_2024.name
    elif naming == "2023":
        name = GLIOMA_2024_POST.name if 4 in values and "-GLI-" in case_id.upper() else BRATS_2023.name
    elif {3, 4} <= values:
        return _refuse(present, "3 and 4 together are the 2024 post-treatment glioma (4 = resection cavity) or "
                                "the 2024 pediatric labels (4 = edema), never 2021's",
                       ("glioma2024-post", "pediatric2024"))
    else:
        name = BRATS_2023.name if 3 in values else GLIOMA_2021.name
    task = TASKS[name]
    problem = task.label_problem(present)
    if problem:
        fits = fitting_tasks(present)
        raise TaskError(problem + (f"; the values fit {', '.join(fits)}: give the task (--task)" if fits else ""))
    return task


def _refuse(present, why: str, choices) -> Task:
    values = sorted({int(v) for v in np.asarray(present)})
    raise TaskError(f"label values {values}: {why}; give the task: --task {' or --task '.join(choices)}")
