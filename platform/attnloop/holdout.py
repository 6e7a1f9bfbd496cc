"""A fixed holdout, scored the way production scores: ONNX Runtime on the raw image bytes.

The gate compares champion and challenger on the same :class:`Holdout`; its content hash goes
into the decision, so a report says which images it was made on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnloop import imaging
from attnloop.datasets import Record, by_split, class_names, read_manifest
from attnloop.evaluation import energy_share
from attnloop.gate import Outcome
from attnloop.masks import box_mask
from attnloop.runtime import OnnxModel


@dataclass(frozen=True)
class Holdout:
    records: list[Record]
    images: list[bytes]
    sizes: list[tuple[int, int]]  # (h, w) of each decoded image
    class_names: list[str]
    digest: str  # content hash of the images and labels

    @property
    def labels(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[r.label] for r in self.records], np.int64)


def load_holdout(root: str | Path, *, split: str = "test") -> Holdout:
    """The ``split`` images of a manifest folder; unreadable images are an error here (a holdout must be whole)."""
    root = Path(root)
    records = read_manifest(root)
    chosen = by_split(records).get(split, [])
    if not chosen:
        raise ValueError(f"{root} has no {split!r} images to hold out")
    digest = hashlib.sha256()
    images, sizes, bad = [], [], []
    for record in chosen:
        try:
            data = (root / record.image).read_bytes()
            sizes.append(imaging.decode(data, name=record.image).shape[:2])
        except (OSError, imaging.ImageError) as err:
            bad.append(f"{record.image} ({'missing' if isinstance(err, FileNotFoundError) else getattr(err, 'reason', 'unreadable')})")
            continue
        images.append(data)
        digest.update(record.image.encode() + b"\0" + record.label.encode() + b"\0" + hashlib.sha256(data).digest())
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"the holdout {root} ({split!r} split) must be whole, and {len(bad)} of its {len(chosen)} images cannot be read: {shown}; "
            f"models are compared on exactly the same images, so restore them or remove their lines from {root / 'manifest.jsonl'}"
        )
    return Holdout(chosen, images, sizes, class_names(records), digest.hexdigest()[:16])


def score(model: OnnxModel, holdout: Holdout, *, batch_size: int = 64) -> Outcome:
    """Per-image correctness and attention-in-box of one model on the holdout."""
    if list(model.card.class_names) != holdout.class_names:
        raise ValueError(f"the model knows classes {list(model.card.class_names)}; the holdout has {holdout.class_names}")
    predictions, shares = [], []
    for start in range(0, len(holdout.images), batch_size):
        out = model.predict_bytes(holdout.images[start : start + batch_size])
        attention = out["attention"][:, 0]
        masks = np.stack(
            [
                box_mask(r.boxes, image_size=size, out_size=attention.shape[1:])
                for r, size in zip(holdout.records[start : start + batch_size], holdout.sizes[start : start + batch_size])
            ]
        )
        predictions.append(out["probabilities"].argmax(axis=1))
        shares.append(energy_share(attention, masks))
    labels = holdout.labels
    return Outcome(correct=np.concatenate(predictions) == labels, in_box=np.concatenate(shares), labels=labels)
