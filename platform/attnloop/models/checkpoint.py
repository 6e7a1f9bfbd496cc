"""Build a model from its card, load local initial weights, save and load checkpoints.

A checkpoint (``model.pt``) is a plain dict: ``{"state_dict", "card", "info"}``; loading never
unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from attnloop.card import ModelCard
from attnloop.models._registry import get_model
from attnloop.models.abn import LEGACY_ATTENTION, check_attention
from attnloop.models.backbones import adapt_input_conv, torchvision_key_map


def default_attention(arch: str) -> dict[str, Any]:
    """How a new model's map gates perception unless told otherwise — the faithfulness benchmark's winner
    (docs/benchmarks/faithfulness.md): ``M · g`` from a local branch for ABNs; MS-ABNs keep their branch on
    the last stage. ``LEGACY_ATTENTION`` is the original ABN."""
    return {"gate": "multiply", "branch": "last" if arch.startswith("msabn") else "local", "area_target": 0.15}


def build_model(card: ModelCard) -> nn.Module:
    """The card's architecture; its ``extra["attention"]`` says how the map gates perception (absent: the original ABN)."""
    return get_model(
        card.arch,
        num_classes=card.num_classes,
        in_channels=card.channels,
        input_size=card.input_size,
        attention=card.extra.get("attention", LEGACY_ATTENTION),
    )


def make_card(
    arch: str,
    *,
    class_names: Sequence[str],
    input_size: tuple[int, int],
    channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    attention: dict[str, Any] | None = None,
) -> ModelCard:
    """A card for a new model; the attention resolution is read off one forward pass.

    ``attention`` (``gate``, ``branch``, ``area_target``) defaults to :func:`default_attention`.
    """
    card = ModelCard(
        arch=arch,
        class_names=tuple(class_names),
        input_size=tuple(input_size),
        channels=channels,
        mean=tuple(mean) if mean is not None else (0.5,) * channels,
        std=tuple(std) if std is not None else (0.25,) * channels,
        attention_size=(0, 0),
        extra={**dict(extra or {}), "attention": check_attention(attention or default_attention(arch))},
    )
    model = build_model(card).eval()
    with torch.no_grad():
        attention = model(torch.zeros(1, channels, *card.input_size)).attention
    return replace(card, attention_size=tuple(attention.shape[-2:]))


@dataclass
class WeightsReport:
    loaded: int
    skipped: list[str]

    def __str__(self) -> str:
        tail = f"; skipped {len(self.skipped)}: {', '.join(self.skipped[:5])}" if self.skipped else ""
        return f"loaded {self.loaded} tensors{tail}"


def load_init_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Initialize from a local state dict: a full (MS-)ABN one, or a torchvision ResNet's.

    Tensors whose shape does not fit (a classifier for other classes) are skipped and named;
    a first convolution for another channel count is adapted (summed or tiled).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        targets = [key] if key in own else torchvision_key_map(key, branch=getattr(model, "branch", "last"))
        targets = [t for t in targets if t in own]
        if not targets:
            skipped.append(key)
            continue
        for target in targets:
            if value.ndim == 4 and own[target].ndim == 4 and value.shape[1] != own[target].shape[1] and target == "stem.0.weight":
                value = adapt_input_conv(value, own[target].shape[1])
            if value.shape != own[target].shape:
                skipped.append(key)
                continue
            mapped[target] = value
    if not mapped:
        raise ValueError(
            f"{path} holds no tensor that fits {type(model).__name__}: expected an attnloop checkpoint "
            "or a torchvision ResNet state dict of the same depth"
        )
    model.load_state_dict(mapped, strict=False)
    return WeightsReport(len(mapped), skipped)


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard, info: dict[str, Any] | None = None) -> None:
    torch.save({"state_dict": model.state_dict(), "card": card.to_dict(), "info": dict(info or {})}, path)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelCard, dict[str, Any]]:
    """Model (in eval mode), its card and the info saved with it, from ``model.pt`` or its run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; expected a run folder holding model.pt")
    data = torch.load(path, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(data["card"])
    model = build_model(card)
    model.load_state_dict(data["state_dict"])
    return model.eval(), card, data.get("info", {})
