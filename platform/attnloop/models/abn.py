"""Attention Branch Network (Fukui et al., CVPR 2019).

The backbone's last stage is the perception stage. The attention branch is a stride-1 copy of
it, then BN → 1×1 conv (C→K) → BN → ReLU; from those K class maps (a) a 1×1 conv K→K and global
average pooling give the attention-branch logits and (b) a 3×3 conv K→1 → BN → sigmoid gives
the attention map M. Training minimizes CE(attention logits) + CE(perception logits), plus
guidance where people gave boxes.

How the perception stage sees the map is the model's *gate* (recorded in its card):

* ``residual`` — Fukui et al.'s ``(1 + M) · g``. Every feature stays available wherever M is, so
  nothing ties the map to what the model uses: on a shortcut set its share on the shortcut is
  the shortcut's area (docs/benchmarks/faithfulness.md).
* ``multiply`` — ``M · g``: the perception stage sees only what the map lets through, so a
  feature the prediction uses must lie under the map. The map head then has no BatchNorm (a
  bias, started at the logit of the area prior's target, sets how much of the image it opens)
  and training anneals the gate from ``(1 + M) · g`` (``floor`` 1 → 0) so early training is not
  starved of features.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnloop.models.backbones import Backbone, BasicBlock, stride_one

OUTPUT_NAMES = ("logits", "attention", "attention_logits", "embedding")
GATES = ("residual", "multiply")
BRANCHES = ("last", "local")
LEGACY_ATTENTION = {"gate": "residual"}  # a card without an ``attention`` entry: models made before the gate was a choice


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
    """3×3 conv (→1) → BN → sigmoid: the attention map from class maps.

    With ``opening`` (a share of the image in (0, 1)) the BatchNorm gives way to a bias started
    at ``logit(opening)``: BatchNorm fixes the batch's mean logit to its own slow-moving shift, so
    a prior on how much of the image the map opens could barely move it.
    """

    def __init__(self, in_maps: int, *, opening: float | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_maps, 1, 3, 1, 1, bias=opening is not None)
        if opening is None:
            self.bn = nn.BatchNorm2d(1)
        else:
            nn.init.constant_(self.conv.bias, math.log(opening / (1.0 - opening)))
            self.bn = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv(x)))


def check_attention(options: dict) -> dict:
    """The attention options of a card (``gate``, ``branch``, ``area_target``), checked; unknown keys are refused."""
    options = dict(options)
    unknown = set(options) - {"gate", "branch", "area_target"}
    if unknown:
        raise ValueError(f"unknown attention options {sorted(unknown)}; valid: gate, branch, area_target")
    gate = options.setdefault("gate", "residual")
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; valid names: {', '.join(GATES)}")
    branch = options.setdefault("branch", "last")
    if branch not in BRANCHES:
        raise ValueError(f"unknown attention branch {branch!r}; valid names: {', '.join(BRANCHES)}")
    if gate == "multiply":
        target = float(options.setdefault("area_target", 0.15))
        if not 0.0 < target < 1.0:
            raise ValueError(f"area_target is the share of the image the map should open, in (0, 1); got {target}")
    return options


def pooled_logits(classifier: nn.Conv2d, class_maps: torch.Tensor) -> torch.Tensor:
    return classifier(class_maps).mean(dim=(2, 3))


class ABN(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, *, attention: dict | None = None) -> None:
        super().__init__()
        self.attention_options = check_attention(attention or LEGACY_ATTENTION)
        self.gate = self.attention_options["gate"]
        self.floor = 1.0 if self.gate == "residual" else 0.0  # the gate is (floor + M) · g; training anneals it
        self.opening = self.attention_options.get("area_target")
        self.branch = self.attention_options["branch"]
        channels = backbone.channels[-1]
        self.stem = backbone.stem
        if self.branch == "last":
            self.features = nn.Sequential(*backbone.stages[:-1])
            self.perception_stage = backbone.stages[-1]
            self.attention_stage = stride_one(backbone.stages[-1])
            self.class_maps = ClassMaps(channels, num_classes)
        else:
            # the map is read off the first stage, whose cells see only their neighbourhood, and
            # gates that stage's output: the perception branch is every later stage
            first = backbone.channels[0]
            self.features = nn.Sequential(backbone.stages[0])
            self.perception_stage = nn.Sequential(*backbone.stages[1:])
            self.attention_stage = BasicBlock(first, first, 1)
            self.class_maps = ClassMaps(first, num_classes)
        self.attention_classifier = nn.Conv2d(num_classes, num_classes, 1, bias=False)
        self.map_head = MapHead(num_classes, opening=self.opening)
        self.fc = nn.Linear(channels, num_classes)

    def perceive(self, features: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perception branch on ``(floor + M) · g``: logits and the pooled embedding."""
        gated = features * attention if self.floor == 0.0 else features * (self.floor + attention)
        embedding = self.perception_stage(gated).mean(dim=(2, 3))
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

    def __init__(self, backbone: Backbone, num_classes: int, *, attention: dict | None = None) -> None:
        super().__init__(backbone, num_classes, attention=attention)
        if self.branch != "last":
            raise ValueError("MS-ABN refines the last stage's map; its branch is 'last' (a 'local' branch is already at the first stage's resolution: use an ABN)")
        if len(backbone.stages) < 3:
            raise ValueError("MS-ABN needs a backbone with at least three stages")
        fine_channels = backbone.channels[-3]
        self.fine_branch = nn.Sequential(BasicBlock(fine_channels, fine_channels, 1), ClassMaps(fine_channels, num_classes))
        self.map_head = MapHead(2 * num_classes, opening=self.opening)

    def forward(self, x: torch.Tensor) -> ABNOutput:
        fine_features = self.features[:-1](self.stem(x))
        features = self.features[-1](fine_features)
        coarse = self.class_maps(self.attention_stage(features))
        fine = self.fine_branch(fine_features)
        coarse_up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        attention = self.map_head(torch.cat([coarse_up, fine], dim=1))
        logits, embedding = self.perceive(features, F.adaptive_avg_pool2d(attention, features.shape[-2:]))
        return ABNOutput(logits, attention, pooled_logits(self.attention_classifier, coarse_up + fine), embedding)
