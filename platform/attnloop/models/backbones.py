"""ResNet backbones cut into stages, for the attention models to split.

A :class:`Backbone` is a stem plus an ordered list of stages. ABN takes the last stage as the
perception stage and a stride-1 copy of it as the attention stage; MS-ABN also reads the
output of the stage before. Two families: a small CIFAR-style ResNet (32–128 px, trains in
minutes on two CPU cores) and torchvision's ResNet-18/34/50 (≥ 64 px, random init; local
weights through :func:`load_torchvision_weights`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torchvision
from torch import nn


@dataclass
class Backbone:
    stem: nn.Module
    stages: list[nn.Module]
    channels: list[int]  # output channels of each stage


def stride_one(stage: nn.Module) -> nn.Module:
    """A copy of a ResNet stage with every stride-2 convolution set to stride 1 (ABN's attention stage)."""
    stage = copy.deepcopy(stage)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)
    return stage


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def cifar_resnet(*, in_channels: int, input_size: tuple[int, int], depth: int = 14, width: int = 16) -> Backbone:
    """CIFAR-style ResNet (depth = 6n + 2): three stages of n blocks at widths w, 2w, 4w.

    The stem brings any input of 32–128 px to a 32 px grid (stride 1, 2 or 4), so attention
    maps are 16×16 whatever the input size and compute stays CIFAR-sized.
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32…), got {depth}")
    side = min(input_size)
    if not 32 <= side <= 128:
        raise ValueError(f"the CIFAR-style ABN takes 32–128 px inputs, got {input_size}; use abn_resnet18/34/50")
    reduction = 1 if side < 64 else 2 if side < 128 else 4
    stem: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, min(reduction, 2), 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    if reduction == 4:
        stem.append(nn.MaxPool2d(3, 2, 1))
    n = (depth - 2) // 6
    widths = [width, 2 * width, 4 * width]
    stages, cin = [], width
    for i, cout in enumerate(widths):
        blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
        stages.append(nn.Sequential(*blocks))
        cin = cout
    backbone = Backbone(nn.Sequential(*stem), stages, widths)
    _init_weights(backbone)
    return backbone


def _init_weights(backbone: Backbone) -> None:
    for module in [backbone.stem, *backbone.stages]:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")


def torchvision_resnet(name: str, *, in_channels: int, input_size: tuple[int, int]) -> Backbone:
    """torchvision ResNet (random init) split into its stem and layer1–layer4."""
    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"unknown ResNet {name!r}; valid names: {', '.join(TORCHVISION_RESNETS)}")
    if min(input_size) < 64:
        raise ValueError(f"torchvision ResNet ABNs take inputs of at least 64 px, got {input_size}; use abn_cifar")
    net = getattr(torchvision.models, name)(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    expansion = 4 if name == "resnet50" else 1
    return Backbone(stem, stages, [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion])


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a 3-channel first-conv weight to another channel count (sum for gray, tile and rescale for more)."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // have)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (have / in_channels)


def torchvision_key_map(key: str, *, branch: str = "last") -> list[str]:
    """Where a key of a torchvision ResNet state dict goes in an (MS-)ABN built on it.

    With the ``last`` branch, ``layer4`` is both the perception stage and the template of the
    attention stage, so its weights initialize both, as in the ABN paper's fine-tuning from
    ImageNet weights. With the ``local`` branch, ``layer1`` is the split and ``layer2``–``layer4``
    the perception stages; the local attention block starts fresh.
    """
    head, _, rest = key.partition(".")
    if head == "conv1":
        return [f"stem.0.{rest}"]
    if head == "bn1":
        return [f"stem.1.{rest}"]
    if branch == "local" and head in ("layer2", "layer3", "layer4"):
        return [f"perception_stage.{int(head[-1]) - 2}.{rest}"]
    if head in ("layer1", "layer2", "layer3"):
        return [f"features.{int(head[-1]) - 1}.{rest}"]
    if head == "layer4":
        return [f"perception_stage.{rest}", f"attention_stage.{rest}"]
    if head == "fc":
        return [f"fc.{rest}"]
    return []
