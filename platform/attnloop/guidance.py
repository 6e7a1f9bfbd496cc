"""Human input → attention targets and the losses that pull the attention map toward them.

Boxes (pixel coordinates ``[x0, y0, x1, y1]``, x1/y1 exclusive, several per image) become a soft
mask at the attention map's resolution; a human-edited map is resized to it. Two losses, each
applied only to the samples that carry human input (the rest get the plain ABN loss):

* ``outside`` — mean attention outside the boxes (an irrelevant-region penalty);
* ``match`` — mean squared difference between the map and the target (Mitsuhara et al. 2019);
* ``share`` — the share of the attention mass outside the boxes (1 − attention-in-box), which
  is blind to the sigmoid's floor that ``outside`` also pays for.

Attention supervision alone re-weights features the perception branch can still see, so it
does not remove a shortcut; :func:`counterexamples` does: it keeps what lies inside the boxes
and takes everything outside from another image, so the region outside stops predicting the
label.

Shortcut marks (boxes over what the model wrongly used) work the other way round: the
counterexample takes the marked region from another image and keeps the rest, and
:func:`shortcut_penalty` asks the model neither to look there (attention) nor to depend on it
(its input gradient, *right for the right reasons*, Ross et al. 2017).
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from attnloop.masks import Box, box_mask

def map_target(edited: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """A human-edited attention map (H×W, uint8/uint16 or float in [0, 1]) at the map's resolution."""
    edited = np.squeeze(edited)
    if edited.ndim != 2:
        raise ValueError(f"an edited attention map must be one channel, got shape {edited.shape}")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(edited.dtype, 1.0)
    target = edited.astype(np.float32) / scale
    target = cv2.resize(target, (out_size[1], out_size[0]), interpolation=cv2.INTER_AREA)
    return np.clip(target, 0.0, 1.0)


def _per_sample_mean(values: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    weight = guided.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def outside_box_loss(attention: torch.Tensor, target: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    """Mean attention over the cells outside the target, averaged over guided samples."""
    outside = 1.0 - target
    per_sample = (attention[:, 0] * outside).sum(dim=(1, 2)) / outside.sum(dim=(1, 2)).clamp_min(1e-6)
    return _per_sample_mean(per_sample, guided)


def outside_share_loss(attention: torch.Tensor, target: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    """Share of the attention mass that lies outside the target (1 − attention-in-box), over guided samples."""
    mass = attention[:, 0]
    per_sample = (mass * (1.0 - target)).sum(dim=(1, 2)) / mass.sum(dim=(1, 2)).clamp_min(1e-6)
    return _per_sample_mean(per_sample, guided)


def map_matching_loss(attention: torch.Tensor, target: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between attention and target, averaged over guided samples."""
    return _per_sample_mean(((attention[:, 0] - target) ** 2).mean(dim=(1, 2)), guided)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "outside": outside_box_loss,
    "match": map_matching_loss,
    "share": outside_share_loss,
}


def guidance_loss(kind: str, attention: torch.Tensor, target: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    try:
        loss = LOSSES[kind]
    except KeyError:
        raise ValueError(f"unknown guidance loss {kind!r}; valid names: {', '.join(LOSSES)}") from None
    if attention.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"attention is {tuple(attention.shape[-2:])} but targets are {tuple(target.shape[-2:])}")
    return loss(attention, target, guided)


def counterexamples(
    images: torch.Tensor, regions: torch.Tensor, selected: torch.Tensor, *, generator: torch.Generator, keep: str = "inside"
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each selected image, a copy whose pixels are partly another image's.

    ``regions`` is N×H×W (1 inside an image's boxes). ``keep="inside"`` (evidence boxes): inside
    its boxes the image, outside them the same region of another image; ``keep="outside"``
    (shortcut marks): the marked regions from another image, the rest the image's own. Returns
    the counterexamples and the indices of the images they came from (so labels and targets can follow).
    """
    if keep not in ("inside", "outside"):
        raise ValueError(f"keep is 'inside' or 'outside', got {keep!r}")
    index = torch.nonzero(selected, as_tuple=False).flatten()
    if len(images) < 2 or index.numel() == 0:
        return images[:0], index[:0]
    shift = torch.randint(1, len(images), (index.numel(),), generator=generator)
    donors = (index + shift) % len(images)
    own = (regions[index] > 0).unsqueeze(1)
    if keep == "outside":
        own = ~own
    return torch.where(own, images[index], images[donors]), index


def shortcut_penalty(
    images: torch.Tensor, logits: torch.Tensor, attention: torch.Tensor, marks: torch.Tensor, marked: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much the marked samples still use their shortcut marks, each averaged over them: the
    mean squared input gradient of the log-probabilities inside the marks (*right for the right
    reasons*; ``images`` must require grad) and the mean attention there. ``marks`` is N×H×W at
    the input's resolution."""
    if not marked.any():
        zero = logits.sum() * 0.0
        return zero, zero
    (grad,) = torch.autograd.grad(F.log_softmax(logits[marked], dim=1).sum(), images, create_graph=True)
    inside = marks[:, None].to(images.dtype)
    area = inside.sum(dim=(1, 2, 3)).clamp_min(1.0)
    reliance = (grad.pow(2) * inside).sum(dim=(1, 2, 3)) / (area * images.shape[1])
    cells = F.adaptive_avg_pool2d(inside, attention.shape[-2:])
    looked = (attention * cells).sum(dim=(1, 2, 3)) / cells.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    return _per_sample_mean(reliance, marked), _per_sample_mean(looked, marked)
