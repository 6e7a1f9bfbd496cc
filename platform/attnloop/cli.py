"""The ``attnloop`` command line (contracts in DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from attnloop.config import Settings
from attnloop.storage import StoreUnavailable


def _split_counts(records) -> str:
    from attnloop.datasets import SPLITS

    counts = Counter(r.split for r in records)
    return ", ".join(f"{split} {counts[split]}" for split in SPLITS if counts[split])


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


def cmd_data_make(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.datasets import make_dataset

    records = make_dataset(args.family, args.out, seed=args.seed, size=args.size, shortcut_rate=args.shortcut_rate)
    print(f"{args.family}: {len(records)} images in {args.out} ({_split_counts(records)})")
    return 0


def cmd_data_import(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.datasets import write_manifest
    from attnloop.datasets.folders import import_folder

    result = import_folder(args.root, boxes=args.boxes, val=args.val, test=args.test, seed=args.seed)
    path = write_manifest(args.root, result.records)
    boxed = sum(bool(r.boxes) for r in result.records)
    print(f"wrote {path}: {len(result.records)} images ({_split_counts(result.records)}), {boxed} with boxes")
    if result.problems:
        print(f"left out {len(result.problems)}:")
        for problem in result.problems:
            print(f"  {problem.reason:16} {problem.message}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.training import ATTENTION_FORMS, TrainConfig, data_hash, save_run, train

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
    from attnloop.trainset import training_set

    store = settings.store(args.store, create=False) if args.store else None
    data, annotations = training_set(args.data, args.boxes, out=args.out / "trainset", store=store)  # a harvested set: its frames
    result = train(data, config, annotations=annotations)
    own_set = args.boxes if args.boxes not in (None, "none", "manifest") and data == args.data else None
    out = save_run(args.out, result, config, data=data_hash(data, own_set))
    (out / "data.json").write_text(json.dumps({"data": str(Path(data).resolve()), "boxes": args.boxes}) + "\n")
    for split, m in result.metrics["splits"].items():
        extra = "".join(
            f", {k} {m[k]:.3f}" for k in ("attention_in_box", "wrong_reason") if m.get(k) is not None
        )
        print(f"{split:6} accuracy {m['accuracy']:.3f} (n={m['n']}){extra}")
    print(f"wrote {out}/model.pt, card.json, metrics.json ({result.metrics['guided_images']} guided images)")
    if not args.no_track:
        from attnloop.publish import track
        from attnloop.registry import connect

        run_id = track(connect(settings.registry_uri), out, artifact_root=settings.artifact_root)
        print(f"tracked in MLflow at {settings.registry_uri} (run {run_id})")
    return 0


def _parity_samples(run: Path, card, count: int = 8) -> list[bytes]:
    """Raw bytes of the run's own test images when its data is still there, else seeded synthetic PNGs."""
    import numpy as np

    from attnloop.datasets import read_manifest
    from attnloop.imaging import encode_png

    info = run / "data.json"
    if info.exists():
        root = Path(json.loads(info.read_text())["data"])
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
    return 0


def cmd_bench_strategies(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop import bench

    profile = bench.PROFILES[args.profile]
    strategies = tuple(args.strategies.split(",")) if args.strategies else profile.strategies
    budgets = bench.parse_budgets(args.budgets) if args.budgets else profile.budgets
    initial_epochs = args.initial_epochs or profile.initial_epochs
    # a model trained anew gets as many epochs as the initial one; fine-tuning continues for fewer
    retrain_epochs = args.retrain_epochs or (profile.retrain_epochs if args.retrain == "finetune" else initial_epochs)
    rows = bench.run(
        args.data,
        strategies=strategies,
        budgets=budgets,
        seeds=args.seeds or profile.seeds,
        initial_epochs=initial_epochs,
        retrain_epochs=retrain_epochs,
        arch=args.arch,
        finetune=args.retrain == "finetune",
        replay=not args.no_replay,
        retrain_options=dict(
            guidance=args.guidance,
            guidance_weight=args.guidance_weight,
            counterexamples=args.counterexamples,
            guided_share=args.guided_share,
        ),
        rounds=args.rounds,
        first_seed=args.first_seed,
        device=args.device,
    )
    options = {
        "--arch": args.arch if args.arch != "abn_cifar" else None,
        "--retrain": args.retrain if args.retrain != "finetune" else None,
        "--guidance": args.guidance,
        "--lambda": args.guidance_weight,
        "--counterexamples": args.counterexamples,
        "--guided-share": args.guided_share,
        "--budgets": args.budgets,
        "--seeds": args.seeds,
        "--strategies": args.strategies,
        "--initial-epochs": args.initial_epochs,
        "--retrain-epochs": args.retrain_epochs,
        "--rounds": args.rounds if args.rounds != 1 else None,
        "--first-seed": args.first_seed or None,
        "--device": args.device if args.device != "auto" else None,
    }
    command = f"attnloop bench strategies --data {args.data} --out {args.out} --profile {args.profile}" + "".join(
        f" {flag} {value}" for flag, value in options.items() if value is not None
    ) + (" --no-replay" if args.no_replay else "")
    summary = bench.write(args.out, rows, command=command)
    if settings.mlflow_tracking_uri:
        params = {"data": args.data, "strategies": ",".join(strategies), "budgets": ",".join(map(str, budgets)), "command": command}
        run_id = bench.log_to_mlflow(settings.mlflow_tracking_uri, args.out, summary, params)
        print(f"logged to MLflow at {settings.mlflow_tracking_uri} (run {run_id})")
    _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    for strategy, s in summary["strategies"].items():
        print(f"{strategy:22} 90 % of the gain at budget {s['budget_for_90pct_gain']}, AUC {s['auc']}")
    print(f"wrote {out}/results.json, report.md, curves.png")


def cmd_bench_merge(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop import bench

    _print_summary(bench.merge(args.parts, args.out), args.out)
    return 0


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    """The registry commands; a registry that fails ends them with one line naming it, exit code 2."""
    from attnloop import registry

    if not getattr(args, "verbose", False):  # MLflow's retries log one warning each; the error line says it all
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        return _registry_command(args, settings, registry.connect(settings.registry_uri))
    except registry.RegistryError as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2


def _registry_command(args: argparse.Namespace, settings: Settings, client) -> int:
    import dataclasses
    import getpass

    from attnloop import registry

    name = getattr(args, "name", None) or settings.model_name
    if args.registry_command == "register":
        from attnloop.holdout import load_holdout
        from attnloop.publish import register_run

        holdout = load_holdout(args.holdout, split=args.split) if args.holdout else None
        version = register_run(
            client, name=name, run_dir=args.run, holdout=holdout, annotation_set=args.annotation_set,
            parent=args.parent, artifact_root=settings.artifact_root,
        )
        print(f"registered {name} version {version} as challenger at {settings.registry_uri}")
    elif args.registry_command == "gate":
        from attnloop.holdout import load_holdout

        policy = dataclasses.replace(settings.gate, approval=settings.gate.approval or args.approval)
        decision, version, text = registry.gate(client, name=name, holdout=load_holdout(args.holdout, split=args.split), policy=policy)
        print(text)
        return 0 if decision.passed else 3
    elif args.registry_command == "approve":
        registry.approve(client, name, args.version, by=args.by or getpass.getuser())
        print(f"{name} version {args.version} approved and promoted to champion")
    elif args.registry_command == "rollback":
        current, previous = registry.rollback(client, name)
        print(f"{name}: champion moved back from version {current} to version {previous}")
    else:  # show
        with registry.guarded(client, doing=f"listing the versions of {name}", unchanged="nothing was changed (show only reads)"):
            versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
            by_alias = client.get_registered_model(name).aliases if versions else {}
        if not versions:
            print(f"{name}: no versions at {settings.registry_uri}")
        aliases_of: dict[str, list[str]] = {}
        for alias, version in by_alias.items():
            aliases_of.setdefault(str(version), []).append(alias)
        for v in versions:
            tags = {k[len(registry.TAG) :]: t for k, t in v.tags.items() if k.startswith(registry.TAG)}
            aliases = ",".join(sorted(aliases_of.get(str(v.version), []))) or "-"
            print(
                f"version {v.version:>3}  aliases {aliases:20} gate {tags.get('gate', '-'):18} "
                f"holdout accuracy {tags.get('holdout_accuracy', '-'):7} parent {tags.get('parent_version') or '-'}"
            )
    return 0


def cmd_stream_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.stream import simulate

    store = settings.store(args.to)
    keys = simulate(store, args.family, count=args.count, rate=args.rate, seed=args.seed, source=args.source)
    print(f"wrote {len(keys)} frames to {store.uri}/{keys[0].rsplit('/', 1)[0]}/")
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.scoring import report_markdown, score_store

    store = settings.store(args.store)
    import tempfile

    from attnloop import lease
    from attnloop.registry import champion_uri, open_source

    source = args.model or champion_uri(settings.model_name)
    model, version = open_source(source, registry_uri=settings.registry_uri, dst=tempfile.mkdtemp(prefix="attnloop-model-"), threads=settings.threads)
    try:
        summary = score_store(
            store, model, model_version=args.model_version or version, source=args.source, batch_size=args.batch_size,
            object_fraction=args.object_fraction, overlays=args.overlays, lease_wait=args.wait,
        )
    except lease.Busy as err:
        print(f"another scoring run holds the lease for model version {args.model_version or version} ({err}); it scores these frames, "
              "so nothing was scored twice; run again once it has finished to score frames that arrive later")
        return 0
    except lease.Lost as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2
    print(report_markdown(summary))
    print(f"results under {store.uri}/scores/, report at reports/{summary.model_version}/{summary.run_id}.md ({model.provider})")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.models import list_models

    print("\n".join(list_models()))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.demo import DemoConfig, run_comparison, run_demo

    workdir = args.workdir or settings.home / "demo"
    if args.offline:
        run_comparison(workdir, size=args.size or 400, epochs=args.epochs or 30, seed=args.seed)
        return 0
    defaults = DemoConfig()
    config = DemoConfig(
        size=args.size or defaults.size,
        frames=args.frames or defaults.frames,
        top_k=args.top_k or defaults.top_k,
        initial_epochs=args.epochs or defaults.initial_epochs,
        retrain_epochs=args.retrain_epochs or defaults.retrain_epochs,
        seed=args.seed,
        annotator=args.annotator,
    )
    try:
        result = run_demo(workdir, config=config)
    except (RuntimeError, KeyboardInterrupt) as err:
        print(f"attnloop: demo stopped: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130 if isinstance(err, KeyboardInterrupt) else 1
    return 0 if result["promoted"] else 1


def build_parser() -> argparse.ArgumentParser:
    from attnloop.datasets import FAMILIES
    from attnloop.training import COUNTEREXAMPLES, GUIDANCE

    parser = argparse.ArgumentParser(prog="attnloop", description="Correct image classifiers through their attention.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="benchmark datasets").add_subparsers(dest="data_command", required=True)
    make = data.add_parser("make", help="generate a dataset family with its manifest")
    make.add_argument("family", choices=sorted(FAMILIES))
    make.add_argument("--out", required=True, type=Path)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--size", type=int, default=None, help="number of training images")
    make.add_argument(
        "--shortcut-rate", type=float, default=1.0,
        help="share of train/val images on which the confounder follows the class (below 1: the subgroup variant)",
    )
    make.set_defaults(func=cmd_data_make)
    imp = data.add_parser("import", help="write a manifest for a class-subfolder tree (ROOT/<class>/… or ROOT/<split>/<class>/…)")
    imp.add_argument("root", type=Path)
    imp.add_argument("--boxes", type=Path, default=None, help="a Label Studio JSON export or a COCO file")
    imp.add_argument("--val", type=float, default=0.1, help="share for val when there are no split folders")
    imp.add_argument("--test", type=float, default=0.2, help="share for test when there are no split folders")
    imp.add_argument("--seed", type=int, default=0)
    imp.set_defaults(func=cmd_data_import)

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
        help="human boxes: 'manifest' (every training image), a JSONL naming the data's images, or a harvested set "
        "(STORE/annotations/v000N.jsonl of a local store, or its key with --store): its frames join the data",
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

    bench_cmd = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    st = bench_cmd.add_parser("strategies", help="compare selection strategies under a simulated annotator")
    st.add_argument("--data", required=True, type=Path, help="dataset folder with manifest.jsonl")
    st.add_argument("--out", required=True, type=Path)
    st.add_argument("--profile", choices=("quick", "full"), default="quick")
    st.add_argument("--budgets", default=None, help="comma-separated, e.g. 0,10,25,all (default: the profile's)")
    st.add_argument("--seeds", type=int, default=None)
    st.add_argument("--strategies", default=None, help="comma-separated names (default: the profile's)")
    st.add_argument("--initial-epochs", type=int, default=None)
    st.add_argument("--retrain-epochs", type=int, default=None, help="default: the profile's for finetune, the initial epochs for scratch")
    st.add_argument("--arch", default="abn_cifar")
    st.add_argument("--retrain", choices=("finetune", "scratch"), default="finetune", help="fine-tune the initial model or train anew")
    st.add_argument("--no-replay", action="store_true", help="retrain on the boxed images alone, not the whole labeled set")
    st.add_argument("--rounds", type=int, default=1, help="spend each budget in this many score → select → annotate → retrain rounds")
    st.add_argument("--guidance", choices=GUIDANCE, default="match")
    st.add_argument("--lambda", dest="guidance_weight", type=float, default=10.0)
    st.add_argument("--counterexamples", choices=COUNTEREXAMPLES, default="append")
    st.add_argument(
        "--guided-share", type=float, default=0.5,
        help="oversample the boxed images to this expected share of every batch (0: as often as any other image)",
    )
    st.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed … first-seed + seeds - 1 (parts joined by `bench merge`)")
    st.add_argument("--device", default="auto", help="auto (a GPU when PyTorch sees one) | cpu | cuda | cuda:N")
    st.set_defaults(func=cmd_bench_strategies)
    mg = bench_cmd.add_parser("merge", help="join strategy benchmarks run apart (distinct seeds) into one report")
    mg.add_argument("parts", nargs="+", type=Path, help="output folders of `bench strategies`")
    mg.add_argument("--out", required=True, type=Path)
    mg.set_defaults(func=cmd_bench_merge)

    stream = sub.add_parser("stream", help="image streams in the object store").add_subparsers(dest="stream_command", required=True)
    sim = stream.add_parser("simulate", help="write a dataset family's stream split as frames")
    sim.add_argument("--family", required=True)
    sim.add_argument("--to", default=None, help="store URI (s3://bucket/prefix or file:///path; default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)")
    sim.add_argument("--count", type=int, required=True)
    sim.add_argument("--rate", type=float, default=None, help="frames per second (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--source", default=None, help="source name in the frame keys (default: the family)")
    sim.set_defaults(func=cmd_stream_simulate)

    sc = sub.add_parser("score", help="score every new frame in the store with ONNX Runtime, once per model version")
    sc.add_argument("--store", default=None, help="store URI (default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)")
    sc.add_argument("--model", default=None, help="an .onnx file or models:/NAME@ALIAS (default: the registry's champion)")
    sc.add_argument("--model-version", default=None, help="version recorded in the rows (default: the registry version, or the file's name@sha256)")
    sc.add_argument("--source", default=None, help="only this source")
    sc.add_argument("--batch-size", type=int, default=64)
    sc.add_argument("--object-fraction", type=float, default=0.1, help="typical object area as a share of the image")
    sc.add_argument("--overlays", type=int, default=16, help="attention overlays for this many highest-priority frames")
    sc.add_argument("--wait", type=float, default=60.0, help="seconds to wait while another run scores with the same model version "
                    "(it holds the store's lease), then leave its frames to it and exit 0 (default 60)")
    sc.set_defaults(func=cmd_score)

    from attnloop.labelstudio.cli import add_commands as add_label_studio_commands

    add_label_studio_commands(sub)

    reg = sub.add_parser("registry", help="MLflow model registry: register, gate, approve, roll back")
    reg_cmd = reg.add_subparsers(dest="registry_command", required=True)
    rr = reg_cmd.add_parser("register", help="export a run to ONNX, log it and register it as the challenger")
    rr.add_argument("run", type=Path, help="training run folder")
    rr.add_argument("--name", default=None, help="registered model (default: ATTNLOOP_MODEL_NAME or attnloop-abn)")
    rr.add_argument("--holdout", type=Path, default=None, help="dataset folder whose split is scored into the version's tags")
    rr.add_argument("--split", default="test")
    rr.add_argument("--annotation-set", default=None, help="version of the annotation set the run was trained on")
    rr.add_argument("--parent", default=None, help="parent version (default: the current champion)")
    rg = reg_cmd.add_parser("gate", help="challenger vs champion on a fixed holdout; promote when the gain passes")
    rg.add_argument("--name", default=None)
    rg.add_argument("--holdout", type=Path, required=True, help="dataset folder with manifest.jsonl")
    rg.add_argument("--split", default="test")
    rg.add_argument("--approval", action="store_true", help="a passing challenger waits for `registry approve`")
    ra = reg_cmd.add_parser("approve", help="promote a version the gate passed in approval mode")
    ra.add_argument("name")
    ra.add_argument("version")
    ra.add_argument("--by", default=None, help="who approves (default: the current user)")
    rb = reg_cmd.add_parser("rollback", help="move the champion back to the version it replaced")
    rb.add_argument("name")
    rs = reg_cmd.add_parser("show", help="versions, aliases and gate decisions")
    rs.add_argument("--name", default=None)
    reg.set_defaults(func=cmd_registry)

    demo = sub.add_parser(
        "demo", help="one turn of the loop on embedded defaults: Label Studio, a mill stream, MLflow, Prefect",
        description="Starts the local Label Studio (unless ATTNLOOP_LABEL_STUDIO_URL is set), streams mill frames, trains and "
        "registers a first model, runs the loop flow (score → push → annotator → harvest → retrain → gate) and prints the "
        "champion before and after. --offline: the earlier guided-vs-unguided comparison, without services.",
    )
    demo.add_argument("--workdir", type=Path, default=None, help="the demo's folder, replaced on each run (default: $ATTNLOOP_HOME/demo)")
    demo.add_argument("--annotator", choices=("simulated", "human"), default="simulated", help="human: you complete the tasks in Label Studio")
    demo.add_argument("--size", type=int, default=None, help="training images of the generated set (default 400, also --offline)")
    demo.add_argument("--frames", type=int, default=None, help="frames streamed into the store (default 240)")
    demo.add_argument("--top-k", type=int, default=None, help="frames pushed to Label Studio (default 40)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs of the first model (default 30)")
    demo.add_argument("--retrain-epochs", type=int, default=None, help="epochs of the retraining (default 30)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--offline", action="store_true", help="the guided-vs-unguided comparison on a shortcut set, without services")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args, Settings.from_env())
    except (ValueError, FileNotFoundError, LookupError) as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2
    except StoreUnavailable as err:  # the store's server is down: one line, a re-run is safe
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:
        from attnloop.registry import RegistryError  # imported late: the registry brings MLflow along

        if not isinstance(err, RegistryError):
            raise
        print(f"attnloop: error: {err}", file=sys.stderr)  # the registry failed: one line, nothing moved
        return 2


if __name__ == "__main__":
    sys.exit(main())
