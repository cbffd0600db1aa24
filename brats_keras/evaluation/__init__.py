"""BraTS scores of class maps: Dice, HD95, sensitivity, specificity, lesion-wise scores (``scores``), and the scoring
of folders of predictions (``folders``: ``brats-keras evaluate``).

numpy and scipy only (nibabel and tqdm are imported only to read label maps: by
:func:`evaluate_folder`, and by :func:`score_case` given a path), so evaluation runs
without a deep-learning framework. Volumes are ``(D, H, W)`` class
maps (0 background, 1 NCR, 2 ED, 3 ET) or boolean masks; ``spacing`` is the voxel
size in mm along each axis, as in the NIfTI header's zooms.

Conventions for empty masks, the same in every function here and in the Keras
metrics of :mod:`brats_keras.metrics`:

==========================  ======  ===================  ===========  ==========  ===========
case                        Dice    HD95                 sensitivity  precision   specificity
==========================  ======  ===================  ===========  ==========  ===========
both empty                  1       0                    1            1           as usual
truth empty, pred not       0       ``HD95_EMPTY``       0            0           as usual
pred empty, truth not       0       ``HD95_EMPTY``       0            0           as usual
==========================  ======  ===================  ===========  ==========  ===========

``HD95_EMPTY = 373.13`` mm is the value the BraTS challenge gives a missed or spurious
region (the diagonal of the 240 x 240 x 155 volume). Specificity is 1 when there is no
negative voxel at all.
"""
from __future__ import annotations

from .folders import (_aggregate, _read_classes, evaluate_folder, format_table, grid_difference,  # noqa: F401
                      read_task_labels, score_case)
from .scores import (HD95_EMPTY, LESION_HD95_MISS, REPORT_NAMES, SCORE_NAMES, _tumor_box, dice, grid_dice, hd95,  # noqa: F401
                     label_contrast, lesion_wise_scores, region_scores, report_scores, resolution_ceiling, sensitivity,
                     specificity, surface_distances)

__all__ = [
    "HD95_EMPTY",
    "LESION_HD95_MISS",
    "SCORE_NAMES",
    "REPORT_NAMES",
    "dice",
    "hd95",
    "surface_distances",
    "sensitivity",
    "specificity",
    "region_scores",
    "report_scores",
    "lesion_wise_scores",
    "score_case",
    "evaluate_folder",
    "read_task_labels",
    "format_table",
]
