"""Training terms that make the attention map the model's reason, not a picture beside it.

* :func:`mining_loss` — attention mining (Li et al., CVPR 2018, GAIN): the image with its
  attended region erased should no longer show the class. Only the map is trained by it (the
  network that judges the erased image is a detached copy), so the map has to cover *all* the
  evidence the model uses, and cannot win by teaching the classifier to shrug at holes.
* :func:`area_prior` — the mean of the map pulled toward the share of the image a user expects
  the evidence to take (the typical object size). With the ``multiply`` gate (``M · g``, see
  :mod:`attnloop.models.abn`) this is what makes the map choose: it can open only so much of
  the image, and the perception branch sees nothing else.
* :func:`gate_floor` — the schedule that anneals the gate from ``(1 + M) · g`` to ``M · g``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

THRESHOLD = 0.5  # GAIN's σ, on the map scaled to [0, 1] per image
SHARPNESS = 10.0  # GAIN's ω


def erase(images: torch.Tensor, attention: torch.Tensor, *, threshold: float = THRESHOLD, sharpness: float = SHARPNESS) -> torch.Tensor:
    """``images`` with their attended region set to 0 (the training mean after normalization).

    The map is upsampled to the input, scaled to [0, 1] per image, and thresholded softly
    (``sigmoid(ω (M − σ))``), so the erasing mask is differentiable in the map.
    """
    a = F.interpolate(attention, size=images.shape[-2:], mode="bilinear", align_corners=False)
    low = a.amin(dim=(2, 3), keepdim=True)
    high = a.amax(dim=(2, 3), keepdim=True)
    a = (a - low) / (high - low).clamp_min(1e-6)
    return images * (1.0 - torch.sigmoid(sharpness * (a - threshold)))


def mining_loss(model: nn.Module, images: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean probability of the true class on the erased images, through a detached copy of ``model``.

    The gradient reaches the parameters that made ``attention`` (through the erasing mask) and
    nothing else; the copy's BatchNorm statistics are thrown away, so the erased batch leaves
    the model's running statistics as they were.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    out = functional_call(model, (params, buffers), (erase(images, attention),))
    return F.softmax(out.logits, dim=1).gather(1, labels[:, None]).mean()


def area_prior(attention: torch.Tensor, target: float) -> torch.Tensor:
    """Squared gap between each map's mean and ``target``, averaged over the batch."""
    return ((attention.mean(dim=(1, 2, 3)) - target) ** 2).mean()


def gate_floor(step: int, steps: int, *, anneal: float) -> float:
    """The gate's floor at ``step`` of ``steps``: 1 → 0 linearly over the first ``anneal`` share, then 0."""
    if anneal <= 0.0:
        return 0.0
    return max(0.0, 1.0 - step / (anneal * steps))
