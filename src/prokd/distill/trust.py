"""Teacher trust without labels: how far each teacher keeps its prediction when the image is zoomed.

A hospital with no labels cannot say which of its teachers works on its images, yet a teacher trained on another
scanner's images is rarely wrong in a stable way: on images unlike its own it hesitates, and a small change of
framing moves its prediction. The trust of teacher k on a volume is the soft Dice between its foreground
probability on the volume, :math:`p`, and its probability on the volume zoomed :math:`z` times about the grid's
centre, mapped back, :math:`q_z`, averaged over the zooms :data:`ZOOMS` (0.8 and 1.25):

.. math::

    t_k(v) = \\frac{1}{|Z|} \\sum_{z \\in Z} \\frac{2 \\sum_x m_z(x) \\, p(x) \\, q_z(x)}
             {\\sum_x m_z(x) \\, (p(x) + q_z(x))},

over all slices of the volume, where :math:`m_z` marks the pixels the zoomed view covers. A volume where the
teacher finds less than one pixel of gland in both scores 0: a prostate MRI volume always holds a gland, so a
teacher that sees none is no guide. A site's trust is the mean over its volumes.

This is prediction stability under input transformations as a label-free estimate of accuracy: the spread of
test-time-augmented predictions (flips, scaling, rotations) marks a segmentation's errors (Wang et al., "Aleatoric
uncertainty estimation with test-time augmentation for medical image segmentation with convolutional neural
networks", Neurocomputing 2019), and a model's consistency on a self-supervised transformation tracks its accuracy
on a new test distribution (Deng, Gould and Zheng, "What does rotation prediction tell us about classifier accuracy
under varying testing environments?", ICML 2021). Zoom was chosen among flips, gamma changes of the intensities,
zooms, their mean, the teachers' mean confidence and their agreement with each other, on the strong-augmentation
site teachers of ``configs/promise12_regime_c_strong.yaml``, each on the labeled volumes of the three sites it never
trained on (``python benchmarks/teacher_trust.py``, BENCHMARKS.md ``teacher-trust``): zoom ranks the teachers' true
3D Dice best over all 108 (teacher, volume) pairs (Spearman +0.75; flips +0.69, agreement +0.70, confidence +0.59,
gamma +0.47), and with each site left out in turn it is chosen on the other three in three of the four folds, and it
trusts the best teacher most on every site. With BIDMC left out the other three sites preferred agreement, by 0.003
of correlation (+0.702 against +0.699); agreement would have trusted the wrong teacher on BIDMC (HK, Dice 0.367,
instead of RUNMC, 0.631), so zoom on BIDMC is a choice its labels took part in.

Shapes: volumes ``(Z, S, S)`` on the student's grid; teachers map ``(B, C, S, S)`` to logits ``(B, 1 or 2, S, S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prokd.data.slices import GridCase, volume_inputs
from prokd.distill.teachers import Teacher
from prokd.losses.kd_kl import soft_foreground

__all__ = ["ZOOMS", "site_trust", "soft_dice", "teacher_probabilities", "volume_trust", "zoom_about_centre",
           "zoom_agreement"]

ZOOMS = (0.8, 1.25)
"""Zooms about the grid's centre a teacher's prediction is compared across: a field of view 25 % wider and 20 %
tighter."""


def zoom_about_centre(x: torch.Tensor, zoom: float, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``x`` ``(B, C, S, S)`` zoomed ``zoom`` times about the centre (bilinear): 2 shows the central half, 0.5 the
    slice at half its size amid ``fill``. ``zoom_about_centre(y, 1 / zoom)`` maps a result back."""
    theta = torch.tensor([[1 / zoom, 0.0, 0.0], [0.0, 1 / zoom, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _covered(size: int, zoom: float) -> torch.Tensor:
    """``(1, 1, S, S)`` bool: the pixels whose content a view zoomed ``zoom`` times still shows (all for zoom <= 1)."""
    half_width = min(1.0, 1 / zoom)
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    inside = centres.abs() <= half_width
    return (inside[:, None] & inside[None, :])[None, None]


@torch.no_grad()
def teacher_probabilities(teacher: Teacher, inputs: torch.Tensor) -> torch.Tensor:
    """``(Z, 1, S, S)`` calibrated foreground probabilities of ``teacher`` for the slices ``inputs`` ``(Z, C, S, S)``."""
    return soft_foreground(teacher.volume_logits(inputs) / teacher.temperature, 1.0)


def soft_dice(p: torch.Tensor | np.ndarray, q: torch.Tensor | np.ndarray) -> float:
    """``2 sum(p q) / (sum p + sum q)`` of two probability maps of one shape; 0 when together they hold less than
    one pixel of foreground (no gland found, no guide)."""
    mass = float(p.sum() + q.sum())
    return 2 * float((p * q).sum()) / mass if mass >= 1 else 0.0


def volume_trust(teacher: Teacher, image: np.ndarray, context: int) -> float:
    """The trust :math:`t_k(v)` in [0, 1] of ``teacher`` on one volume ``image`` ``(Z, S, S)``, whose slices get
    ``context`` neighbours on each side (at least the teacher's own)."""
    inputs = torch.from_numpy(volume_inputs(image, context))
    return zoom_agreement(teacher, inputs, teacher_probabilities(teacher, inputs))


def zoom_agreement(teacher: Teacher, inputs: torch.Tensor, base: torch.Tensor) -> float:
    """:math:`t_k(v)` from the slices ``inputs`` ``(Z, C, S, S)`` of a volume and ``teacher``'s probabilities on them,
    ``base`` ``(Z, 1, S, S)`` (:func:`teacher_probabilities`), for a caller that has them already."""
    fill = inputs.amin()
    agreement = []
    for zoom in ZOOMS:
        zoomed = teacher_probabilities(teacher, zoom_about_centre(inputs, zoom, fill))
        back = zoom_about_centre(zoomed, 1 / zoom)
        covered = _covered(inputs.shape[-1], zoom)
        agreement.append(soft_dice(base * covered, back * covered))
    return float(np.mean(agreement))


def site_trust(teachers: Sequence[Teacher], cases: Sequence[GridCase]) -> dict[str, list[float]]:
    """``{site: each teacher's trust there}``: the mean :func:`volume_trust` of each teacher over the site's
    ``cases`` (grouped by :attr:`GridCase.site`, the unknown site ``""`` among them)."""
    context = max(teacher.preprocess.context for teacher in teachers)
    by_site: dict[str, list[GridCase]] = {}
    for case in cases:
        by_site.setdefault(case.site, []).append(case)
    return {
        site: [float(np.mean([volume_trust(teacher, case.image, context) for case in members])) for teacher in teachers]
        for site, members in sorted(by_site.items())
    }
