"""Train or fine-tune an attention model, with box guidance on the samples people annotated.

Loss = CE(perception logits) + CE(attention-branch logits) + λ · guidance, where guidance (see
:mod:`attnloop.guidance`) is computed on the samples that carry human input only. By default
the map gates perception (``M · g``, from a local branch) with an area prior and attention
mining (:mod:`attnloop.mining`), so the map shows what the prediction uses, guided or not
(``ORIGINAL_ABN``: the original ABN, whose map need not). Optional
counterexamples (the region outside the boxes taken from another image) are appended to each
batch for those samples (``append``) or take their place (``replace``). Seeded and
deterministic on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from tqdm.auto import tqdm

from attnloop import imaging
from attnloop.card import ModelCard
from attnloop.datasets import Annotation, Record, by_split, class_names, from_manifest_boxes, read_annotations, read_manifest
from attnloop.evaluation import summarize
from attnloop.guidance import box_mask, counterexamples, guidance_loss, map_target, shortcut_penalty
from attnloop.mining import area_prior, gate_floor, mining_loss
from attnloop.models import build_model, load_checkpoint, load_init_weights, make_card, save_checkpoint
from attnloop.models.abn import BRANCHES, GATES
from attnloop.models.checkpoint import default_attention
from attnloop.options import ATTENTION_FORMS, COUNTEREXAMPLES, GUIDANCE, ORIGINAL_ABN, TRAINABLE  # noqa: F401 (re-exported)
from attnloop.threads import resolve as resolve_threads

log = logging.getLogger(__name__)



@dataclass
class TrainConfig:
    arch: str = "abn_cifar"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: tuple[int, int] | None = None  # default: the images' size (CIFAR net) or 224 px
    # how the map gates perception (new models only; docs/benchmarks/faithfulness.md): the defaults make the map
    # the model's reason; ORIGINAL_ABN restores the original ABN
    gate: str = "multiply"  # multiply (M · g) | residual ((1 + M) · g, the original ABN)
    branch: str | None = None  # local (a block on the first stage, whose map gates it) | last (a stride-1 copy of the last stage); None: local for ABNs, last for MS-ABNs
    area_target: float = 0.15  # share of the image the map should open (the typical size of the evidence)
    area_weight: float = 10.0  # weight of the area prior (multiply gate only)
    mining_weight: float = 1.0  # weight of attention mining: the image with its attended region erased loses its class
    anneal: float = 0.3  # share of training over which the gate goes from (1 + M) · g to M · g
    guidance: str = "outside"  # none | outside | match
    guidance_weight: float = 1.0  # λ
    counterexamples: str = "none"  # none | append | replace
    guided_share: float = 0.0  # oversample guided (and marked) images to this expected share of every batch where they are rarer
    mark_weight: float = 1.0  # weight of the attention inside shortcut marks (images without marks: no effect)
    reliance_weight: float = 1.0  # weight of the input gradient inside shortcut marks (right for the right reasons)
    margin: float = 0.0  # box widening, as a share of the box's side
    blur: float = 0.0  # Gaussian fall-off of targets, in attention cells
    init_weights: str | None = None  # local state dict (torchvision ResNet or attnloop)
    init_from: str | None = None  # checkpoint to fine-tune
    trainable: str = "all"  # all | head (the perception classifier alone, features and BatchNorm frozen)
    threads: int | None = None
    device: str = "auto"  # auto (a GPU when there is one) | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if self.guidance not in GUIDANCE:
            raise ValueError(f"unknown guidance {self.guidance!r}; valid names: {', '.join(GUIDANCE)}")
        if self.counterexamples not in COUNTEREXAMPLES:
            raise ValueError(
                f"unknown counterexample mode {self.counterexamples!r}; valid names: {', '.join(COUNTEREXAMPLES)}"
            )
        if self.trainable not in TRAINABLE:
            raise ValueError(f"unknown trainable part {self.trainable!r}; valid names: {', '.join(TRAINABLE)}")
        if self.trainable == "head" and not self.init_from:
            raise ValueError("trainable='head' retrains the classifier of a trained model: give init_from")
        if self.gate not in GATES:
            raise ValueError(f"unknown gate {self.gate!r}; valid names: {', '.join(GATES)}")
        if self.branch is not None and self.branch not in BRANCHES:
            raise ValueError(f"unknown attention branch {self.branch!r}; valid names: {', '.join(BRANCHES)}")
        if not 0.0 < self.area_target < 1.0:
            raise ValueError(f"area_target is a share of the image in (0, 1), got {self.area_target}")
        if min(self.mark_weight, self.reliance_weight) < 0:
            raise ValueError(f"mark_weight and reliance_weight must be ≥ 0, got {self.mark_weight} and {self.reliance_weight}")
        if min(self.area_weight, self.mining_weight) < 0 or not 0.0 <= self.anneal <= 1.0:
            raise ValueError(
                f"area_weight and mining_weight must be ≥ 0 and anneal in [0, 1]; got {self.area_weight}, "
                f"{self.mining_weight}, {self.anneal}"
            )
        if not 0.0 <= self.guided_share < 1.0:
            raise ValueError(f"guided_share is a share of each batch in [0, 1), got {self.guided_share}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")


@dataclass
class ImageSet:
    """A split decoded and preprocessed into memory, with its targets and evaluation masks."""

    records: list[Record]
    images: torch.Tensor  # N×C×H×W normalized
    labels: torch.Tensor  # N (class index; an annotated correction replaces the manifest label)
    targets: torch.Tensor  # N×h×w attention targets (zeros where not guided)
    inside: torch.Tensor  # N×H×W 1 inside the boxes at input resolution (for counterexamples)
    guided: torch.Tensor  # N bool
    marks: torch.Tensor  # N×H×W 1 inside shortcut marks at input resolution
    marked: torch.Tensor  # N bool: the image has shortcut marks
    box_masks: np.ndarray  # N×h×w ground-truth box coverage (evaluation)
    confounder_masks: np.ndarray  # N×h×w
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)

    def tensors(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels, self.targets, self.inside, self.guided, self.marks, self.marked)


def load_split(
    records: Sequence[Record],
    root: str | Path,
    card: ModelCard,
    *,
    annotations: dict[str, Annotation] | None = None,
    margin: float = 0.0,
    blur: float = 0.0,
    progress: bool = False,
) -> ImageSet:
    root, annotations = Path(root), annotations or {}
    index = {name: i for i, name in enumerate(card.class_names)}
    kept, images, labels, targets, inside, guided, marks, boxes, confounders, bad = [], [], [], [], [], [], [], [], [], []
    for record in tqdm(records, desc="loading", disable=not progress, leave=False):
        try:
            raw = imaging.decode((root / record.image).read_bytes(), name=record.image)
            x = imaging.preprocess(raw, card, name=record.image)
        except (imaging.ImageError, OSError) as err:
            bad.append((record.image, "missing" if isinstance(err, FileNotFoundError) else getattr(err, "reason", "unreadable")))
            log.warning("%s — left out", err)
            continue
        size = raw.shape[:2]
        note = annotations.get(record.image)
        label = note.label if note is not None and note.label else record.label
        if label not in index:
            raise ValueError(f"{record.image}: label {label!r} is not one of the model's classes {list(card.class_names)}")
        target = np.zeros(card.attention_size, np.float32)
        hit = np.zeros(card.input_size, np.float32)
        if note is not None:
            if note.attention_map is not None:
                edited = imaging.decode((root / note.attention_map).read_bytes(), name=note.attention_map)
                target = map_target(edited, card.attention_size)
                hit = (map_target(edited, card.input_size) > 0.5).astype(np.float32)
            if note.boxes:
                target = np.maximum(target, box_mask(note.boxes, image_size=size, out_size=card.attention_size, margin=margin, blur=blur))
                hit = np.maximum(hit, box_mask(note.boxes, image_size=size, out_size=card.input_size, margin=margin))
        kept.append(record)
        images.append(x)
        labels.append(index[label])
        targets.append(target)
        inside.append(hit)
        guided.append(note is not None and (bool(note.boxes) or note.attention_map is not None))  # a class correction alone guides nothing
        shortcut = note.shortcut_boxes if note is not None else []
        marks.append(box_mask(shortcut, image_size=size, out_size=card.input_size) if shortcut else np.zeros(card.input_size, np.float32))
        boxes.append(box_mask(record.boxes, image_size=size, out_size=card.attention_size))
        confounders.append(box_mask(record.confounder_boxes, image_size=size, out_size=card.attention_size))
    h, w = card.attention_size
    return ImageSet(
        records=kept,
        images=torch.from_numpy(np.stack(images)) if images else torch.zeros(0, card.channels, *card.input_size),
        labels=torch.tensor(labels, dtype=torch.long),
        targets=torch.from_numpy(np.stack(targets)) if targets else torch.zeros(0, h, w),
        inside=torch.from_numpy(np.stack(inside).astype(np.float32)) if inside else torch.zeros(0, *card.input_size),
        guided=torch.tensor(guided, dtype=torch.bool),
        marks=torch.from_numpy(np.stack(marks)) if marks else torch.zeros(0, *card.input_size),
        marked=torch.tensor([bool(m.any()) for m in marks], dtype=torch.bool),
        box_masks=np.stack(boxes) if boxes else np.zeros((0, h, w), np.float32),
        confounder_masks=np.stack(confounders) if confounders else np.zeros((0, h, w), np.float32),
        quarantined=bad,
    )


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first GPU when PyTorch sees one, else the CPU; a GPU asked for and absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but PyTorch sees no GPU here (use --device cpu or auto)")
    return device


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Probabilities of both branches, attention maps and embeddings for a tensor of inputs (on the model's device)."""
    model.eval()
    device = _device_of(model)
    parts: dict[str, list[np.ndarray]] = {"probabilities": [], "attention_probabilities": [], "attention": [], "embedding": []}
    for start in range(0, len(images), batch_size):
        out = model(images[start : start + batch_size].to(device))
        parts["probabilities"].append(F.softmax(out.logits, dim=1).cpu().numpy())
        parts["attention_probabilities"].append(F.softmax(out.attention_logits, dim=1).cpu().numpy())
        parts["attention"].append(out.attention[:, 0].cpu().numpy())
        parts["embedding"].append(out.embedding.cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


@torch.no_grad()
def prediction_flips(model: nn.Module, images: torch.Tensor, masks: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """Per image, whether the prediction changes when the masked region is blanked (set to the
    training mean, 0 after normalization); False where the mask is empty."""
    model.eval()
    device = _device_of(model)
    has = masks.reshape(len(masks), -1).any(axis=1)
    flips = np.zeros(len(images), bool)
    for start in range(0, len(images), batch_size):
        keep = has[start : start + batch_size]
        if not keep.any():
            continue
        x = images[start : start + batch_size][torch.from_numpy(keep)].to(device)
        m = torch.from_numpy(masks[start : start + batch_size][keep]).float()[:, None].to(device)
        m = (F.interpolate(m, size=x.shape[-2:], mode="nearest") > 0).float()
        changed = (model(x).logits.argmax(1) != model(x * (1 - m)).logits.argmax(1)).cpu().numpy()
        flips[start : start + batch_size][keep] = changed
    return flips


def reliance(model: nn.Module, images: torch.Tensor, masks: np.ndarray, *, batch_size: int = 128) -> float | None:
    """Share of predictions that change when the masked region is blanked (:func:`prediction_flips`).

    The attention map is what a model *shows*; this is what it *uses*: an unguided model can
    hinge on a shortcut its map does not point at. Images with an empty mask are not counted.
    """
    has = masks.reshape(len(masks), -1).any(axis=1)
    if not has.any():
        return None
    return float(prediction_flips(model, images, masks, batch_size=batch_size)[has].mean())


def evaluate(model: nn.Module, card: ModelCard, sets: dict[str, ImageSet]) -> dict:
    """Metrics per split, as written to ``metrics.json``: :func:`summarize` plus box and confounder reliance."""
    splits = {}
    for split, data in sets.items():
        if len(data.labels) == 0:
            continue
        out = predict(model, data.images)
        has_confounders = data.confounder_masks.any()
        splits[split] = summarize(
            out["probabilities"],
            data.labels.numpy(),
            card.class_names,
            attention=out["attention"],
            box_masks=data.box_masks,
            confounder_masks=data.confounder_masks if has_confounders else None,
        )
        splits[split]["object_reliance"] = reliance(model, data.images, data.box_masks)
        if has_confounders:
            splits[split]["confounder_reliance"] = reliance(model, data.images, data.confounder_masks)
        splits[split]["quarantined"] = [{"image": image, "reason": reason} for image, reason in data.quarantined]
    return {"classes": list(card.class_names), "splits": splits}


def _new_card(config: TrainConfig, records: Sequence[Record], root: Path, classes: Sequence[str]) -> ModelCard:
    """A card for a model trained anew: input size and channels from the images, mean/std from up to 256 of them."""
    sample = []
    for record in records:
        try:
            sample.append(imaging.to_float(imaging.decode((root / record.image).read_bytes(), name=record.image)))
        except (imaging.ImageError, OSError):
            continue  # left out, and reported, when the split is loaded
        if len(sample) == 256:
            break
    if not sample:
        raise ValueError(f"none of the {len(records)} training images of {root / 'manifest.jsonl'} can be read")
    height, width, channels = sample[0].shape
    if config.input_size is not None:
        size = tuple(config.input_size)
    elif "cifar" in config.arch:
        size = (int(min(128, max(32, height))), int(min(128, max(32, width))))
    else:
        size = (224, 224)
    pixels = np.concatenate([imaging.resize(imaging.match_channels(x, channels), size).reshape(-1, channels) for x in sample])
    mean = pixels.mean(axis=0).round(4).tolist()
    std = np.maximum(pixels.std(axis=0), 1e-3).round(4).tolist()
    attention = {
        "gate": config.gate,
        "branch": config.branch or default_attention(config.arch)["branch"],
        **({"area_target": config.area_target} if config.gate == "multiply" else {}),
    }
    return make_card(config.arch, class_names=classes, input_size=size, channels=channels, mean=mean, std=std, attention=attention)


def data_hash(root: str | Path, annotations_path: str | Path | None = None) -> str:
    digest = hashlib.sha256((Path(root) / "manifest.jsonl").read_bytes())
    if annotations_path is not None and Path(annotations_path).is_file():
        digest.update(Path(annotations_path).read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class TrainResult:
    model: nn.Module
    card: ModelCard
    metrics: dict
    history: list[dict]
    sets: dict[str, ImageSet]  # the decoded splits, so callers can score them without decoding again


def train(
    root: str | Path,
    config: TrainConfig,
    *,
    annotations: dict[str, Annotation] | None = None,
    records: Sequence[Record] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on the manifest's ``train`` split (or ``records``), evaluate on every split."""
    root = Path(root)
    records = list(records) if records is not None else read_manifest(root)
    splits = by_split(records)
    if not splits.get("train"):
        raise ValueError(f"{root} has no 'train' images")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    threads = resolve_threads(config.threads)  # ATTNLOOP_THREADS, else the CPUs this process may use (attnloop.threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    device = resolve_device(config.device)
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; a few CUDA kernels have no
        # deterministic variant, so GPU runs are reproducible up to those (a warning names them)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        if config.init_from:
            model, card, _ = load_checkpoint(config.init_from)
            if list(card.class_names) != class_names(records):
                raise ValueError(f"{config.init_from} knows classes {list(card.class_names)}; the data has {class_names(records)}")
        else:
            card = _new_card(config, splits["train"], root, class_names(records))
            model = build_model(card)
            if config.init_weights:
                log.info("init weights from %s: %s", config.init_weights, load_init_weights(model, config.init_weights))
        sets = {
            name: load_split(
                part, root, card, annotations=annotations if name == "train" else None,
                margin=config.margin, blur=config.blur, progress=progress,
            )
            for name, part in splits.items()
        }
        model.to(device)
        history = fit(model, sets["train"], config, progress=progress)
        metrics = evaluate(model, card, sets)
        metrics["guided_images"] = int(sets["train"].guided.sum())
        metrics["marked_images"] = int(sets["train"].marked.sum())
        metrics["device"] = device.type
        return TrainResult(model.cpu().eval(), card, metrics, history, sets)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def fit(model: nn.Module, data: ImageSet, config: TrainConfig, *, progress: bool = True) -> list[dict]:
    """The training loop (on the model's device); returns one record of mean losses and accuracy per epoch."""
    device = _device_of(model)
    generator = torch.Generator().manual_seed(config.seed)
    corrected = data.guided | data.marked
    n, n_guided = len(data.labels), int(corrected.sum())
    drop_last = n > config.batch_size
    if 0 < n_guided < config.guided_share * n:
        # A few boxed (or marked) images among many: draw them (with replacement) as ``guided_share`` of each batch.
        share = config.guided_share
        weights = torch.where(corrected, share / n_guided, (1 - share) / (n - n_guided)).double()
        sampler = WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
        loader = DataLoader(data.tensors(), batch_size=config.batch_size, sampler=sampler, drop_last=drop_last)
    else:
        loader = DataLoader(data.tensors(), batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=drop_last)
    head_only = config.trainable == "head"
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not head_only or name.startswith("fc."))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    history = []
    gated = getattr(model, "gate", "residual") == "multiply"
    # a model built for M · g starts from (1 + M) · g; one fine-tuned from such a model is already there
    anneal = config.anneal if gated and config.init_from is None else 0.0
    area_target = getattr(model, "opening", None) or config.area_target
    bar = tqdm(total=steps, desc="training", disable=not progress, unit="batch")
    step = 0
    for epoch in range(config.epochs):
        model.train(not head_only)  # frozen features keep their BatchNorm statistics
        sums = {"loss": 0.0, "ce": 0.0, "attention_ce": 0.0, "guidance": 0.0, "area": 0.0, "mining": 0.0, "marks": 0.0, "correct": 0, "seen": 0}
        for images, labels, targets, inside, guided, marks, marked in loader:
            if config.counterexamples != "none":
                for regions, selected, keep in ((inside, guided, "inside"), (marks, marked, "outside")):
                    if not selected.any():
                        continue
                    extra, source = counterexamples(images, regions, selected, generator=generator, keep=keep)
                    if config.counterexamples == "replace":
                        images = images.clone()
                        images[source] = extra
                    else:
                        images, labels = torch.cat([images, extra]), torch.cat([labels, labels[source]])
                        targets, guided = torch.cat([targets, targets[source]]), torch.cat([guided, guided[source]])
                        marks, marked = torch.cat([marks, marks[source]]), torch.cat([marked, marked[source]])
            images, labels, targets, guided, marks, marked = (
                t.to(device, non_blocking=True) for t in (images, labels, targets, guided, marks, marked)
            )
            penalize = bool(marked.any()) and (config.mark_weight > 0 or config.reliance_weight > 0)
            images.requires_grad_(penalize)  # the input gradient inside the marks
            if gated:
                model.floor = gate_floor(step, steps, anneal=anneal)
            out = model(images)
            ce = F.cross_entropy(out.logits, labels)
            attention_ce = F.cross_entropy(out.attention_logits, labels)
            loss = ce + attention_ce
            guide = area = mining = torch.zeros(())
            if config.guidance != "none" and guided.any():
                guide = guidance_loss(config.guidance, out.attention, targets, guided)
                loss = loss + config.guidance_weight * guide
            if gated and config.area_weight > 0 and not head_only:
                area = area_prior(out.attention, area_target)
                loss = loss + config.area_weight * area
            if config.mining_weight > 0 and not head_only:
                mining = mining_loss(model, images.detach(), out.attention, labels)
                loss = loss + config.mining_weight * mining
            marked_loss = torch.zeros(())
            if penalize:
                reliant, looked = shortcut_penalty(images, out.logits, out.attention, marks, marked)
                marked_loss = config.reliance_weight * reliant + config.mark_weight * looked
                loss = loss + marked_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = len(labels)
            step += 1
            for key, value in (
                ("loss", loss), ("ce", ce), ("attention_ce", attention_ce), ("guidance", guide), ("area", area), ("mining", mining), ("marks", marked_loss),
            ):
                sums[key] += float(value.detach()) * n
            sums["correct"] += int((out.logits.argmax(1) == labels).sum())
            sums["seen"] += n
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
        seen = max(1, sums.pop("seen"))
        record = {"epoch": epoch + 1, "accuracy": sums.pop("correct") / seen, **{k: v / seen for k, v in sums.items()}}
        history.append(record)
    bar.close()
    if gated:
        model.floor = 0.0
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return history


RUN_DATA = "data.json"  # beside a run's model: the data folder it trained on and the boxes it was given


def save_run(
    out: str | Path, result: TrainResult, config: TrainConfig, *, data: str, source: str | Path | None = None, boxes: str | None = None
) -> Path:
    """Write ``model.pt``, ``card.json`` and ``metrics.json`` into the run folder; ``data`` is the
    data's hash. With ``source``, the folder trained on, also ``data.json`` (where the data is and
    which ``boxes``): registration shows the run's attention on that data and logs both."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"config": asdict(config), "data_hash": data}
    save_checkpoint(out / "model.pt", result.model, result.card, info)
    result.card.save(out / "card.json")
    metrics = {**result.metrics, "history": result.history, **info}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if source is not None:
        (out / RUN_DATA).write_text(json.dumps({"data": str(Path(source).resolve()), "boxes": boxes}) + "\n")
    return out


def run_data(run_dir: str | Path) -> dict | None:
    """What :func:`save_run` recorded of a run's data (``{"data": folder, "boxes": ...}``), or None."""
    path = Path(run_dir) / RUN_DATA
    return json.loads(path.read_text()) if path.exists() else None


def resolve_annotations(root: str | Path, boxes: str | None) -> dict[str, Annotation] | None:
    """``--boxes``: none, ``manifest`` (every training image's true boxes) or an annotation-set JSONL."""
    if boxes in (None, "", "none"):
        return None
    if boxes == "manifest":
        return from_manifest_boxes([r for r in read_manifest(root) if r.split == "train"])
    return read_annotations(boxes)
