"""From a training run folder to a registered challenger: export, track, score the holdout, register.

This is the step the retrain flow and ``attnloop registry register`` share. It needs torch (the
export); :mod:`attnloop.registry` itself does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attnloop import figures, imaging
from attnloop.datasets import read_manifest
from attnloop.export import PARITY_LIMIT, export_onnx, parity
from attnloop.holdout import Holdout, score
from attnloop.models import load_checkpoint
from attnloop.registry import CHAMPION, RUN_FILE, alias_version, log_training, register
from attnloop.runtime import OnnxModel
from attnloop.training import run_data

EXPERIMENT = "attnloop-training"


def training_figures(run_dir: str | Path, *, count: int = 16) -> dict[str, bytes]:
    """The test split's confusion matrix, and attention overlays of its first ``count`` images when the data is still there."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out: dict[str, bytes] = {}
    split = "test" if "test" in metrics["splits"] else next(iter(metrics["splits"]), None)
    if split is None:
        return out
    out[f"confusion_{split}.png"] = figures.confusion_png(metrics["splits"][split]["confusion"], metrics["classes"], title=f"{split} split")
    info = run_data(run_dir)
    root = Path(info["data"]) if info else None
    if root is not None and (root / "manifest.jsonl").exists():
        model, card, _ = load_checkpoint(run_dir)
        records, raws = [], []
        for record in (r for r in read_manifest(root) if r.split == split):
            try:  # an image gone since training is left out of the picture (training reported it)
                raws.append(imaging.decode((root / record.image).read_bytes(), name=record.image))
            except (OSError, imaging.ImageError):
                continue
            records.append(record)
            if len(records) == count:
                break
        if raws:
            import torch

            with torch.no_grad():
                result = model.eval()(torch.from_numpy(imaging.preprocess_batch(raws, card)))
            predicted = result.logits.argmax(1).tolist()
            captions = [f"{r.label}>{card.class_names[p]}" for r, p in zip(records, predicted)]
            out[f"attention_{split}.png"] = figures.attention_grid(raws, list(result.attention[:, 0].numpy()), captions)
    return out


def run_params(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    params = {f"config.{k}": v for k, v in metrics.get("config", {}).items()}
    params["data_hash"] = metrics.get("data_hash")
    params.update({f"data.{k}": v for k, v in (run_data(run_dir) or {}).items()})
    return params


def logged_run_id(client, run_dir: Path) -> str | None:
    """The MLflow run already holding this run folder, if it was logged to this same store."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return info["run_id"] if info.get("tracking_uri") == client.tracking_uri else None


def track(client, run_dir: str | Path, *, artifact_root: str | Path | None = None, extra_params: dict | None = None) -> str:
    """Log a training run folder to MLflow (once per store); returns the run id."""
    run_dir = Path(run_dir)
    found = logged_run_id(client, run_dir)
    if found:
        return found
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return log_training(
        client,
        experiment=EXPERIMENT,
        run_dir=run_dir,
        params={**run_params(run_dir), **(extra_params or {})},
        history=metrics.get("history", []),
        figures=training_figures(run_dir),
        artifact_root=artifact_root,
    )


def register_run(
    client,
    *,
    name: str,
    run_dir: str | Path,
    holdout: Holdout | None = None,
    annotation_set: str | None = None,
    parent: str | None = None,
    artifact_root: str | Path | None = None,
) -> str:
    """Export ``run_dir`` to ONNX (parity-checked), track it, score it on the holdout and register it
    as the new ``challenger``. The parent defaults to the current champion. Returns the version."""
    run_dir = Path(run_dir)
    model, card, _ = load_checkpoint(run_dir)
    onnx_path = export_onnx(model, card, run_dir / "model.onnx")
    rng = np.random.default_rng(0)
    shape = (*card.input_size, card.channels if card.channels in (1, 3) else 1)
    samples = [imaging.encode_png(rng.integers(0, 256, size=shape, dtype=np.uint8)) for _ in range(4)]
    diff = parity(model, card, onnx_path, samples)
    if max(diff["logits"], diff["attention"]) > PARITY_LIMIT:
        raise ValueError(f"{run_dir}: ONNX export differs from PyTorch by {diff}; not registering it")
    run_id = track(client, run_dir, artifact_root=artifact_root, extra_params={"annotation_set": annotation_set})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tags: dict[str, object] = {
        "arch": card.arch,
        "data_hash": metrics.get("data_hash"),
        "annotation_set": annotation_set,
        "parent_version": parent if parent is not None else alias_version(client, name, CHAMPION),
        "parity": f"{max(diff.values()):.2e}",
    }
    if holdout is not None:
        outcome = score(OnnxModel(onnx_path, device="cpu"), holdout)
        tags.update(
            holdout=holdout.digest,
            holdout_accuracy=f"{outcome.accuracy:.4f}",
            holdout_attention_in_box=None if outcome.attention_in_box is None else f"{outcome.attention_in_box:.4f}",
        )
    return register(client, name=name, run_id=run_id, onnx_path=onnx_path, tags=tags)
