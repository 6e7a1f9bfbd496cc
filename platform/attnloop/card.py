"""The model card: the metadata that travels with every model's weights.

Serving and scoring build their preprocessing from the card alone (never from copied
constants), so the card is saved beside ``model.pt`` and inside the ONNX file's metadata.
It lives outside ``attnloop.models`` because that package imports torch and the card must
not: serving reads it from ONNX metadata with ONNX Runtime alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_METADATA_KEY = "attnloop.model_card"


@dataclass(frozen=True)
class ModelCard:
    arch: str
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    attention_size: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {list(self.class_names)}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names must be unique, got {list(self.class_names)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean/std need one value per channel ({self.channels}); got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {list(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        return cls(
            arch=data["arch"],
            class_names=tuple(data["class_names"]),
            input_size=tuple(data["input_size"]),
            channels=int(data["channels"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            attention_size=tuple(data["attention_size"]),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        return cls.from_json(Path(path).read_text())
