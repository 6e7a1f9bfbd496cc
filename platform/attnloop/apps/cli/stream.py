"""``attnloop stream add | simulate`` and ``attnloop score``: frames into the store, and scoring them once per model version."""

from __future__ import annotations

import argparse
import sys

from attnloop.config import Settings


def _day(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


def cmd_stream_add(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.stream import add, check_source

    store = settings.store(args.to, create=True) if check_source(args.source) else None
    result = add(store, args.paths, source=args.source, day=args.day)
    for file, reason in result.skipped[:20]:
        print(f"left out {file}: {reason}", file=sys.stderr)
    if len(result.skipped) > 20:
        print(f"… and {len(result.skipped) - 20} more files left out", file=sys.stderr)
    where = result.written[0].rsplit("/", 1)[0] if result.written else f"frames/{args.source}"
    print(
        f"added {len(result.written)} frames to {store.uri}/{where}/ ({len(result.present)} already there, "
        f"{len(result.skipped)} left out)"
    )
    if result.written:
        print(f"next: `attnloop score{' --store ' + args.to if args.to else ''}` scores them with the registry's champion "
              "(or --model FILE.onnx)")
    return 0 if result.written or result.present else 2


def cmd_stream_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.stream import Shift, simulate

    store = settings.store(args.to, create=True)
    shift = None
    if args.exposure != 1.0 or args.blur or args.classes:
        weights = None
        if args.classes:
            try:
                weights = {name: float(weight) for name, _, weight in (part.partition("=") for part in args.classes.split(","))}
            except ValueError:
                raise ValueError(f"--classes is class=weight,…, e.g. hole=3,dirt=1; got {args.classes!r}") from None
        shift = Shift(exposure=args.exposure, blur=args.blur, classes=weights)
    keys = simulate(store, args.family, count=args.count, rate=args.rate, seed=args.seed, source=args.source, shift=shift)
    print(f"wrote {len(keys)} frames to {store.uri}/{keys[0].rsplit('/', 1)[0]}/")
    print(f"next: `attnloop score{' --store ' + args.to if args.to else ''}` scores them with the registry's champion (or --model FILE.onnx)")
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.scoring import report_markdown, score_store

    store = settings.store(args.store)
    import tempfile

    from attnloop import lease
    from attnloop.registry import champion_uri, open_source

    source = args.model or champion_uri(settings.model_name)
    try:
        model, version = open_source(source, registry_uri=settings.registry_uri, dst=tempfile.mkdtemp(prefix="attnloop-model-"), threads=settings.threads)
    except LookupError as err:  # no champion yet: say how to get one
        raise LookupError(
            f"{err}; register a trained run and gate it (`attnloop registry register RUN --holdout DATA`, then "
            "`attnloop registry gate --holdout DATA`), or score with a file: --model model.onnx"
        ) from None
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
    print("next: `attnloop ls push` sends the frames to correct first to Label Studio; `attnloop monitor serve` shows the lines")
    return 0


def add_commands(sub) -> None:
    """Register ``attnloop stream simulate`` and ``attnloop score`` on the main parser's subcommands."""
    stream = sub.add_parser("stream", help="image streams in the object store").add_subparsers(dest="stream_command", required=True)
    add = stream.add_parser(
        "add", help="put your own image files (or the images under folders) into the store as a source's frames",
        description="Writes each image to frames/<source>/<yyyy-mm-dd>/<name>-<content hash>.<ext>, where `attnloop score` "
        "finds it. The same file added again is not written twice; a file of the same name with other content is kept too.",
    )
    add.add_argument("paths", nargs="+", help="image files and folders (read recursively)")
    add.add_argument("--source", required=True, help="the camera, line or microscope (letters, digits, '_', '-', '.'), e.g. line-1")
    add.add_argument("--day", type=_day, default=None, help="the frames' day, YYYY-MM-DD (default: today, UTC)")
    add.add_argument("--to", default=None, help="store URI (s3://bucket/prefix or file:///path; default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)")
    add.set_defaults(func=cmd_stream_add)

    sim = stream.add_parser("simulate", help="write a dataset family's stream split as frames")
    sim.add_argument("--family", required=True)
    sim.add_argument("--to", default=None, help="store URI (s3://bucket/prefix or file:///path; default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)")
    sim.add_argument("--count", type=int, required=True)
    sim.add_argument("--rate", type=float, default=None, help="frames per second (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--source", default=None, help="source name in the frame keys (default: the family)")
    sim.add_argument("--exposure", type=float, default=1.0, help="multiply the pixel values (a drift drill: a lamp or gain change)")
    sim.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma in pixels (a drift drill: a camera out of focus)")
    sim.add_argument("--classes", default=None, help="class=weight,… : the line's class mix (a drift drill: a new defect mix)")
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
