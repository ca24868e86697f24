"""Training losses of DAPO (shared by the learned baseline).

total = CE(image logits, label)
      + pixel_weight * sum over tapped layers of [focal(gamma) on the (1+C)-way pixel softmax
                                                 + Dice(p_normal, 1 - mask) + Dice(sum of abnormal p, mask)]
      + type_weight * CE(per-image type distribution, true word)   [defective samples; 0 by default]

Pixel terms only for samples that have a mask (``has_mask``); mask-free samples train on the image
term alone. Layer probabilities are upsampled bilinearly to the mask size before the pixel terms.
The type term is not in the paper: its pixel softmax trains the defect words on patches, but
nothing trains the per-image type that names a defect (docs/dapo.md "Fourth round": not adopted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qc_stream.dapo.model import DapoOutput


@dataclass
class LossParts:
    total: torch.Tensor
    image: torch.Tensor
    pixel: torch.Tensor  # already multiplied by pixel_weight; 0 when no sample has a mask
    types: torch.Tensor | None = (
        None  # already multiplied by type_weight; None when the term is off
    )


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Multi-class focal loss per sample: ``probs`` [B, C, H, W], ``target`` [B, H, W] class index -> [B]."""
    p_t = probs.gather(1, target[:, None]).squeeze(1).clamp(1e-6, 1.0)
    return (-((1 - p_t) ** gamma) * torch.log(p_t)).flatten(1).mean(1)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample: ``pred``/``target`` [B, H, W] in 0..1 -> [B]."""
    inter = (pred * target).flatten(1).sum(1)
    denom = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return 1 - (2 * inter + smooth) / (denom + smooth)


def dapo_loss(
    out: DapoOutput,
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    has_mask: torch.Tensor,
    classes: torch.Tensor,
    gamma: float = 2.0,
    pixel_weight: float = 4.0,
    type_weight: float = 0.0,
) -> LossParts:
    """``labels`` [B] 0/1; ``masks`` [B, H, W] 0/1 floats (rows without a mask are ignored);
    ``has_mask`` [B] bool; ``classes`` [B] the abnormal class index (1..C) of each sample's defect.
    ``type_weight`` > 0 needs a type-aware model (classes index the defect words)."""
    image = F.cross_entropy(out.image_logits, labels.long())
    zero = out.image_logits.sum() * 0
    types = None
    if type_weight > 0:
        defective = (labels > 0) & (classes > 0)
        if bool(defective.any()):
            p_true = (
                out.image_type_probs[defective]
                .float()
                .gather(1, (classes[defective].long() - 1)[:, None])
            )
            types = type_weight * (-torch.log(p_true.clamp_min(1e-6))).mean()
        else:
            types = zero
        image_total = image + types
    else:
        image_total = image
    if masks is None or not bool(has_mask.any()):
        return LossParts(total=image_total, image=image, pixel=zero, types=types)
    sel = has_mask.nonzero().squeeze(1)
    mask = masks[sel].float()
    size = mask.shape[-2:]
    target = (mask > 0.5).long() * classes[sel].long()[:, None, None]
    pixel = zero
    for logits in out.layer_logits:
        probs = logits[sel].float().softmax(dim=1)
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        term = (
            focal_loss(probs, target, gamma)
            + dice_loss(probs[:, 0], 1 - mask)
            + dice_loss(probs[:, 1:].sum(1), mask)
        )
        pixel = pixel + term.mean()
    pixel = pixel_weight * pixel
    return LossParts(total=image_total + pixel, image=image, pixel=pixel, types=types)
