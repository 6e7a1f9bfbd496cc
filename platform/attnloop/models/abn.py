"""Attention Branch Network (Fukui et al., CVPR 2019).

The backbone's last stage is the perception stage. The attention branch is a stride-1 copy of
it, then BN → 1×1 conv (C→K) → BN → ReLU; from those K class maps (a) a 1×1 conv K→K and global
average pooling give the attention-branch logits and (b) a 3×3 conv K→1 → BN → sigmoid gives
the attention map M. The perception stage sees ``(1 + M) · g(x)``. Training minimizes
CE(attention logits) + CE(perception logits), plus guidance where people gave boxes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnloop.models.backbones import Backbone, BasicBlock, stride_one

OUTPUT_NAMES = ("logits", "attention", "attention_logits", "embedding")


class ABNOutput(NamedTuple):
    """What every attention model returns; the ONNX outputs carry the same names in this order."""

    logits: torch.Tensor  # N×K perception-branch logits: the prediction
    attention: torch.Tensor  # N×1×h×w attention map in [0, 1]
    attention_logits: torch.Tensor  # N×K attention-branch logits
    embedding: torch.Tensor  # N×C pooled perception features


class ClassMaps(nn.Module):
    """BN → 1×1 conv C→K → BN → ReLU: one response map per class."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, num_classes, 1, bias=False),
            nn.BatchNorm2d(num_classes),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MapHead(nn.Module):
    """3×3 conv (→1) → BN → sigmoid: the attention map from class maps."""

    def __init__(self, in_maps: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_maps, 1, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv(x)))


def pooled_logits(classifier: nn.Conv2d, class_maps: torch.Tensor) -> torch.Tensor:
    return classifier(class_maps).mean(dim=(2, 3))


class ABN(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        channels = backbone.channels[-1]
        self.stem = backbone.stem
        self.features = nn.Sequential(*backbone.stages[:-1])
        self.perception_stage = backbone.stages[-1]
        self.attention_stage = stride_one(backbone.stages[-1])
        self.class_maps = ClassMaps(channels, num_classes)
        self.attention_classifier = nn.Conv2d(num_classes, num_classes, 1, bias=False)
        self.map_head = MapHead(num_classes)
        self.fc = nn.Linear(channels, num_classes)

    def perceive(self, features: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perception branch on ``(1 + M) · g``: logits and the pooled embedding."""
        embedding = self.perception_stage(features * (1.0 + attention)).mean(dim=(2, 3))
        return self.fc(embedding), embedding

    def forward(self, x: torch.Tensor) -> ABNOutput:
        features = self.features(self.stem(x))
        maps = self.class_maps(self.attention_stage(features))
        attention = self.map_head(maps)
        logits, embedding = self.perceive(features, attention)
        return ABNOutput(logits, attention, pooled_logits(self.attention_classifier, maps), embedding)


class MSABN(ABN):
    """Multi-scale ABN: attention at the resolution of the stage before the split.

    Gupta & Sintorn (2022) fuse attention from several stages at a higher resolution; their
    exact layers are not public, so attnloop's version is:

    * the coarse branch is ABN's (a stride-1 copy of the last stage on the split features g,
      then class maps), giving K maps at g's resolution;
    * a light fine branch (one residual block + class maps) reads the output of the stage
      before, f, which has twice g's resolution;
    * the coarse class maps are upsampled (bilinear) to f's grid, summed with the fine ones for
      the attention-branch logits, and concatenated with them for the 3×3 map head, so the
      map M is at f's resolution (16×16 → 32×32 for the CIFAR net, 14×14 → 28×28 at 224 px);
    * the perception branch is ABN's, on ``(1 + avgpool(M)) · g``: each coarse cell gets the
      mean of its fine cells, so M's extra resolution serves localization (box guidance,
      attention-in-box, proposals for annotators) without a second pass over the backbone.

    Box guidance therefore acts on a map with 4× as many cells, which is what lets small
    objects (a dirt spot on a board, one cell in a well) be singled out.
    """

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__(backbone, num_classes)
        if len(backbone.stages) < 3:
            raise ValueError("MS-ABN needs a backbone with at least three stages")
        fine_channels = backbone.channels[-3]
        self.fine_branch = nn.Sequential(BasicBlock(fine_channels, fine_channels, 1), ClassMaps(fine_channels, num_classes))
        self.map_head = MapHead(2 * num_classes)

    def forward(self, x: torch.Tensor) -> ABNOutput:
        fine_features = self.features[:-1](self.stem(x))
        features = self.features[-1](fine_features)
        coarse = self.class_maps(self.attention_stage(features))
        fine = self.fine_branch(fine_features)
        coarse_up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        attention = self.map_head(torch.cat([coarse_up, fine], dim=1))
        logits, embedding = self.perceive(features, F.adaptive_avg_pool2d(attention, features.shape[-2:]))
        return ABNOutput(logits, attention, pooled_logits(self.attention_classifier, coarse_up + fine), embedding)
