"""Self-contained HTML reports of cases: NiiVue pages that open from ``file://`` with no network.

A case page shows the case's modalities (switchable) with the prediction, the truth and where they disagree
(false positive, false negative, other class) as overlays in the colours of the task's classes
(:func:`brats_keras.visualize.common.class_colors`): linked axial, coronal and sagittal views with a crosshair and a
3D rendering, a toggle per class, an opacity slider, and beside them the case's scores (Dice, HD95, sensitivity,
specificity per scored region of the task, computed as ``brats-keras evaluate`` computes them) and region volumes
in ml. A case off the working grid is drawn on it (as :func:`brats_keras.io.read_modalities` reads it); its scores
and volumes are those of its own voxels. An
``index.html`` lists a folder's cases, worst first, each linking to its page.

Scores and volumes come from the full-resolution label maps. The page carries copies cropped to the brain's box
and quantised (images to uint8: 256 grey levels between 0 and the 99.5th percentile of the brain, fewer when a page
would exceed 10 MB; labels exactly), so a case page stays under 10 MB.

``read_case_view`` and ``page_volumes`` (:mod:`~brats_keras.report.volumes`) read and copy a case, ``case_page`` and
``index_page`` (:mod:`~brats_keras.report.pages`) make the HTML, ``write_case_page`` and ``write_report``
(:mod:`~brats_keras.report.build`) write the files. NiiVue (BSD-2-Clause) ships in ``static/`` with its license.
"""
from __future__ import annotations

from .build import (INDEX, PAGE_LIMIT, case_html, focus_voxel, report_cases_of, report_evaluation, report_predictions,
                    write_case_page, write_report)
from .pages import NIIVUE_VERSION, case_page, index_page
from .volumes import CaseView, disagreement, page_volumes, quantise_image, read_case_view

__all__ = [
    "CaseView",
    "INDEX",
    "NIIVUE_VERSION",
    "PAGE_LIMIT",
    "case_html",
    "case_page",
    "disagreement",
    "focus_voxel",
    "index_page",
    "page_volumes",
    "quantise_image",
    "read_case_view",
    "report_cases_of",
    "report_evaluation",
    "report_predictions",
    "write_case_page",
    "write_report",
]
