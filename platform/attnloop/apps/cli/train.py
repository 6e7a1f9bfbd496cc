"""``attnloop train | export | models``: training, ONNX export with its parity check, the architectures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnloop.config import Settings
from attnloop.redact import redact


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return values[0], values[1]


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.options import ATTENTION_FORMS
    from attnloop.training import TrainConfig, data_hash, save_run, train

    config = TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        input_size=args.input_size,
        guidance=args.guidance,
        guidance_weight=args.guidance_weight,
        counterexamples=args.counterexamples,
        guided_share=args.guided_share,
        margin=args.margin,
        blur=args.blur,
        init_weights=args.init_weights,
        init_from=args.init_from,
        threads=args.threads or settings.threads,
        device=args.device,
        **ATTENTION_FORMS[args.attention],
    )
    from attnloop.trainset import default_boxes, training_set

    boxes, note = (args.boxes, "") if args.boxes is not None else default_boxes(args.data)
    store = settings.store(args.store) if args.store else None
    data, annotations = training_set(args.data, boxes, out=args.out / "trainset", store=store)  # a harvested set: its frames
    result = train(data, config, annotations=annotations)
    own_set = boxes if boxes not in (None, "none", "manifest") and data == args.data else None
    out = save_run(args.out, result, config, data=data_hash(data, own_set), source=data, boxes=boxes)
    left_out = []
    for split, m in result.metrics["splits"].items():
        extra = "".join(
            f", {k} {m[k]:.3f}" for k in ("attention_in_box", "wrong_reason") if m.get(k) is not None
        )
        lost = m.get("quarantined", [])
        left_out += [f"{q['image']} ({q['reason']})" for q in lost]
        print(f"{split:6} accuracy {m['accuracy']:.3f} (n={m['n']}{f', {len(lost)} left out' if lost else ''}){extra}")
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        print(
            f"warning: {len(left_out)} images of {data / 'manifest.jsonl'} were left out: {shown}. Training goes on without them, but "
            "a holdout must be whole: `attnloop registry gate` refuses a split with any of them until they are restored or their "
            "lines removed", file=sys.stderr,
        )
    print(f"wrote {out}/model.pt, card.json, metrics.json ({result.metrics['guided_images']} guided images{'; ' + note if note else ''})")
    if not args.no_track:
        from attnloop.publish import track
        from attnloop.registry import connect

        run_id = track(connect(settings.registry_uri), out, artifact_root=settings.artifact_root)
        print(f"tracked in MLflow at {redact(settings.registry_uri)} (run {run_id})")
    print(f"next: `attnloop registry register {out} --holdout DATA` makes it the challenger (the gate then compares it with the "
          f"champion), or `attnloop export {out} --out model.onnx` for a file to score with")
    return 0


def _parity_samples(run: Path, card, count: int = 8) -> list[bytes]:
    """Raw bytes of the run's own test images when its data is still there, else seeded synthetic PNGs."""
    import numpy as np

    from attnloop.datasets import read_manifest
    from attnloop.imaging import encode_png
    from attnloop.training import run_data

    info = run_data(run)
    if info is not None:
        root = Path(info["data"])
        if (root / "manifest.jsonl").exists():
            records = read_manifest(root)
            chosen = [r for r in records if r.split == "test"][:count] or records[:count]
            return [(root / r.image).read_bytes() for r in chosen]
    rng = np.random.default_rng(0)
    shape = (*card.input_size, card.channels if card.channels in (1, 3) else 1)
    return [encode_png(rng.integers(0, 256, size=shape, dtype=np.uint8)) for _ in range(count)]


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.export import PARITY_LIMIT, export_onnx, parity
    from attnloop.models import load_checkpoint

    run = Path(args.run)
    model, card, _ = load_checkpoint(run)
    path = export_onnx(model, card, args.out)
    diff = parity(model, card, path, _parity_samples(run if run.is_dir() else run.parent, card))
    worst = max(diff["logits"], diff["attention"])
    print(f"wrote {path} ({card.arch}, {card.channels}×{card.input_size[0]}×{card.input_size[1]}, classes {', '.join(card.class_names)})")
    print("parity max |Δ|: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    if worst > PARITY_LIMIT:
        print(f"parity FAILED: {worst:.2e} > {PARITY_LIMIT:.0e} on logits/attention", file=sys.stderr)
        return 1
    print(f"next: `attnloop score --model {path}` scores the store's frames with it; serving takes it as ATTNLOOP_SERVING_MODEL={path}")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.models import list_models

    print("\n".join(list_models()))
    return 0


def add_commands(sub) -> None:
    """Register ``attnloop train | export | models`` on the main parser's subcommands."""
    from attnloop.options import COUNTEREXAMPLES, GUIDANCE

    tr = sub.add_parser("train", help="train or fine-tune an attention model")
    tr.add_argument("--data", required=True, type=Path, help="folder with manifest.jsonl")
    tr.add_argument("--out", required=True, type=Path, help="run folder to write")
    tr.add_argument("--arch", default="abn_cifar", help="see `attnloop models`")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--input-size", type=_size, default=None, help="N or HxW (default: image size, or 224 for ResNets)")
    tr.add_argument(
        "--boxes", default=None,
        help="human boxes: 'manifest' (the manifest's boxes), 'none', a JSONL naming the data's images, or a harvested set "
        "(STORE/annotations/v000N.jsonl of a local store, or its key with --store): its frames join the data. Default: the "
        "boxes `attnloop data import --boxes` imported with the data; a generated family's true boxes only with 'manifest'",
    )
    tr.add_argument("--store", default=None, help="the store a harvested --boxes key is read from (any store URI)")
    tr.add_argument(
        "--attention", choices=("faithful", "original"), default="faithful",
        help="faithful: the map gates perception (M · g from a local branch, area prior, attention mining), so it shows "
        "what the prediction uses; original: the original ABN ((1 + M) · g), whose map need not",
    )
    tr.add_argument("--guidance", choices=GUIDANCE, default="outside")
    tr.add_argument("--lambda", dest="guidance_weight", type=float, default=1.0, help="guidance loss weight")
    tr.add_argument(
        "--counterexamples",
        choices=COUNTEREXAMPLES,
        default="none",
        help="counterexamples for boxed images (outside the boxes taken from another image): added to the batch, or in place of the image",
    )
    tr.add_argument(
        "--guided-share", type=float, default=0.0,
        help="oversample the boxed images to this expected share of every batch (0: as often as any other image)",
    )
    tr.add_argument("--margin", type=float, default=0.0, help="widen boxes by this share of their side")
    tr.add_argument("--blur", type=float, default=0.0, help="soft fall-off of box targets, in attention cells")
    tr.add_argument("--init-weights", default=None, help="local state dict (torchvision ResNet or attnloop checkpoint)")
    tr.add_argument("--init-from", default=None, help="run folder or model.pt to fine-tune")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--device", default="auto", help="auto (a GPU when PyTorch sees one) | cpu | cuda | cuda:N")
    tr.add_argument("--no-track", action="store_true", help="do not log the run to MLflow (MLFLOW_TRACKING_URI, else the SQLite file under ATTNLOOP_HOME)")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="export a run to ONNX and print the parity figure")
    ex.add_argument("run", type=Path, help="run folder (with model.pt) or a model.pt")
    ex.add_argument("--out", required=True, type=Path)
    ex.set_defaults(func=cmd_export)

    sub.add_parser("models", help="list the registered architectures").set_defaults(func=cmd_models)
