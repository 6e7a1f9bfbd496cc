"""The registered architectures: ABN and MS-ABN on the CIFAR-style net and torchvision ResNets."""

from __future__ import annotations

from torch import nn

from attnloop.models._registry import register_model
from attnloop.models.abn import ABN, MSABN
from attnloop.models.backbones import cifar_resnet, torchvision_resnet

_HEADS = {"abn": ABN, "msabn": MSABN}


def _build(
    head: str, base: str, *, num_classes: int, in_channels: int = 3, input_size=(224, 224), attention: dict | None = None, **kwargs
) -> nn.Module:
    input_size = tuple(input_size)
    if base == "cifar":
        backbone = cifar_resnet(in_channels=in_channels, input_size=input_size, **kwargs)
    else:
        backbone = torchvision_resnet(base, in_channels=in_channels, input_size=input_size, **kwargs)
    return _HEADS[head](backbone, num_classes, attention=attention)


@register_model
def abn_cifar(**config) -> nn.Module:
    return _build("abn", "cifar", **{"input_size": (32, 32), **config})


@register_model
def msabn_cifar(**config) -> nn.Module:
    return _build("msabn", "cifar", **{"input_size": (32, 32), **config})


@register_model
def abn_resnet18(**config) -> nn.Module:
    return _build("abn", "resnet18", **config)


@register_model
def abn_resnet34(**config) -> nn.Module:
    return _build("abn", "resnet34", **config)


@register_model
def abn_resnet50(**config) -> nn.Module:
    return _build("abn", "resnet50", **config)


@register_model
def msabn_resnet18(**config) -> nn.Module:
    return _build("msabn", "resnet18", **config)


@register_model
def msabn_resnet34(**config) -> nn.Module:
    return _build("msabn", "resnet34", **config)


@register_model
def msabn_resnet50(**config) -> nn.Module:
    return _build("msabn", "resnet50", **config)
