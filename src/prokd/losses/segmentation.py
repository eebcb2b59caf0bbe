"""Supervised segmentation loss: a weighted sum of Dice, Lovász and cross-entropy terms.

The network outputs either one foreground logit (sigmoid) or two class logits (softmax); each term has
a matching form for both, chosen so that two logits ``(0, d)`` give the same Dice and cross-entropy as
the single logit ``d``:

=========  ==========================================  =================================================
term       1 channel (sigmoid)                         2 channels (softmax)
=========  ==========================================  =================================================
dice       MONAI ``DiceLoss(sigmoid=True)``            MONAI ``DiceLoss(softmax=True, to_onehot_y=True,
                                                       include_background=False)``
lovasz     :func:`~prokd.losses.lovasz.lovasz_hinge`   :func:`~prokd.losses.lovasz.lovasz_softmax` of the
           on the logits                               softmax probabilities (classes present)
ce         binary cross-entropy with logits            cross-entropy
=========  ==========================================  =================================================

Dice settings: ``batch=True`` pools the intensities of the whole batch into one soft Dice, so a slice
without prostate does not contribute a Dice of 0 or 1 on its own (per-slice Dice is unstable and, with
small smoothing, maximal for any false positive on an empty slice). Smoothing stays at MONAI's 1e-5 in
numerator and denominator, which only matters for a batch without any foreground. The background channel
is left out of the 2-channel Dice (as in nnU-Net) so that Dice measures the foreground only in both modes.
The Lovász terms also treat the batch as one set of pixels (``per_image=False``) for the same reason.

Lovász warm-up: Berman et al. (CVPR 2018) fine-tune with the Lovász loss after cross-entropy training. From
a random start, the Lovász hinge holds the logits near 0 (correct sign, margin far below 1) for a long
plateau: on PROMISE12 a unet-small student with the three terms sat at a training Dice loss of 0.91 for 500
steps, and reached 0.45 validation Dice at step 500 against 0.60 without the Lovász term. ``lovasz_warmup``
ramps the Lovász weight linearly from 0 to ``lovasz`` over that fraction of training; the training loop
reports progress with :meth:`SegmentationLoss.set_progress`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from prokd.config import LossConfig
from prokd.losses.lovasz import lovasz_hinge, lovasz_softmax

__all__ = ["SegmentationLoss", "probabilities"]


class SegmentationLoss(nn.Module):
    """``dice * Dice + lovasz * Lovász + ce * cross-entropy`` for binary segmentation.

    Args:
        out_channels: 1 (sigmoid logit of the foreground) or 2 (softmax logits of background, foreground).
        dice: weight of the soft Dice loss.
        lovasz: weight of the Lovász loss (hinge for 1 channel, softmax for 2).
        ce: weight of the (binary) cross-entropy.
        lovasz_warmup: fraction of training (in [0, 1)) over which the Lovász weight ramps up from 0.

    Terms with weight 0 are not computed. Until :meth:`set_progress` is called the Lovász term has its full
    weight; the logged term values are always unweighted.
    """

    def __init__(
        self,
        out_channels: int = 1,
        dice: float = 1.0,
        lovasz: float = 1.0,
        ce: float = 1.0,
        lovasz_warmup: float = 0.0,
    ) -> None:
        super().__init__()
        if out_channels not in (1, 2):
            raise ValueError(f"SegmentationLoss: out_channels must be 1 or 2, got {out_channels}")
        weights = {"dice": dice, "lovasz": lovasz, "ce": ce}
        if any(weight < 0 for weight in weights.values()) or not any(weight > 0 for weight in weights.values()):
            raise ValueError(f"SegmentationLoss: weights must be >= 0 with at least one > 0, got {weights}")
        if not 0.0 <= lovasz_warmup < 1.0:
            raise ValueError(f"SegmentationLoss: lovasz_warmup must be in [0, 1), got {lovasz_warmup}")
        self.out_channels = out_channels
        self.weights = {name: weight for name, weight in weights.items() if weight > 0}
        self.lovasz_warmup = lovasz_warmup
        self.lovasz_ramp = 1.0
        if out_channels == 1:
            self.dice_loss = DiceLoss(sigmoid=True, batch=True)
        else:
            self.dice_loss = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)

    @classmethod
    def from_config(cls, loss_cfg: LossConfig, out_channels: int) -> SegmentationLoss:
        return cls(
            out_channels=out_channels,
            dice=loss_cfg.dice,
            lovasz=loss_cfg.lovasz,
            ce=loss_cfg.ce,
            lovasz_warmup=loss_cfg.lovasz_warmup,
        )

    def set_progress(self, progress: float) -> None:
        """Scale the Lovász weight for training ``progress`` in [0, 1] (linear ramp over ``lovasz_warmup``)."""
        self.lovasz_ramp = min(1.0, progress / self.lovasz_warmup) if self.lovasz_warmup > 0 else 1.0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted total loss and the value of each computed term.

        Args:
            logits: (B, C, H, W) raw network outputs, C == ``out_channels``.
            target: (B, 1, H, W) ground truth in {0, 1} (any dtype).

        Returns:
            The scalar weighted total, and ``{term: value}`` (unweighted) for the terms with weight > 0.
        """
        self._check_shapes(logits, target)
        terms = {name: getattr(self, f"_{name}")(logits, target) for name in self.weights}
        total = sum(self._weight(name) * value for name, value in terms.items())
        return total, {name: float(value.detach()) for name, value in terms.items()}

    def _weight(self, name: str) -> float:
        return self.weights[name] * (self.lovasz_ramp if name == "lovasz" else 1.0)

    def _dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_loss(logits, target.to(logits.dtype))

    def _lovasz(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.out_channels == 1:
            return lovasz_hinge(logits, target, per_image=False)
        return lovasz_softmax(logits.softmax(dim=1), target[:, 0].long(), per_image=False)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.out_channels == 1:
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return F.cross_entropy(logits, target[:, 0].long())

    def _check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 4 or logits.shape[1] != self.out_channels:
            raise ValueError(
                f"SegmentationLoss: logits must be (B, {self.out_channels}, H, W), got {tuple(logits.shape)}"
            )
        expected = (logits.shape[0], 1, *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"SegmentationLoss: target must be {expected}, got {tuple(target.shape)}")


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability from one sigmoid logit or two softmax logits.

    Args:
        logits: (B, 1, H, W) or (B, 2, H, W).

    Returns:
        (B, 1, H, W) probabilities in [0, 1].
    """
    if logits.ndim != 4 or logits.shape[1] not in (1, 2):
        raise ValueError(f"probabilities: logits must be (B, 1, H, W) or (B, 2, H, W), got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return logits.softmax(dim=1)[:, 1:2]
