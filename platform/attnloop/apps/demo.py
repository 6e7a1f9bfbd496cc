"""``attnloop demo``: one turn of the platform's loop on embedded defaults, with a mill camera.

A generated ``mill`` set whose line camera stamps a signature bar that tells the class in
training (the shortcut) and is random on the stream and in test. The demo starts the local Label
Studio (unless ``ATTNLOOP_LABEL_STUDIO_URL`` names one), streams mill frames into the local
store, trains a first model (it takes the shortcut) and registers it as the champion in the
SQLite MLflow store, then runs the ``loop`` flow on Prefect's ephemeral engine: score → push the
top-K frames to Label Studio → the simulated annotator (or a person) boxes the defects → harvest
→ retrain → gate → promote. It prints the champion before and after and where to look.

All state lives in one folder (``$ATTNLOOP_HOME/demo`` by default, replaced on each run), which
the flows see as their home (the demo puts its settings in force with :func:`attnloop.config.using`):
the store is ``<folder>/store``, MLflow ``<folder>/mlflow.db``. :func:`run_comparison` (``attnloop demo --offline``) is the earlier
demonstration without services: a shortcut set trained with and without box guidance.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from attnloop.config import LabelStudioSettings, Settings, using
from attnloop.recipe import RECIPE
from attnloop.redact import redact

MARKER = ".attnloop-demo"  # marks a folder the demo may replace
LABEL_STUDIO_PROCESS = "label-studio.process.json"  # pid and start time of the Label Studio the demo started
FAMILY = "mill"
SOURCE = "mill-line-1"
ANNOTATORS = ("simulated", "human")
LOCAL_PROJECT = "attnloop demo"
POLL_SECONDS = 5.0  # how often the demo asks Label Studio whether people are done
# Prefect's ephemeral server (no PREFECT_API_URL) on a new SQLite file: its telemetry writes a
# session row while the flows' first writes hold the lock, and prints a `database is locked`
# traceback (the retry would not help: the transaction read first); offline, it logs an ERROR
# instead. Off, as are automations' triggers, which the demo has none of and which hit the same
# lock while the demo waits for people. A new database's migrations outlast the 20 s start-up wait
# on a slow or busy machine.
EPHEMERAL_PREFECT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so that one turn promotes a better model on two CPU cores in a few minutes (seed 0)."""

    size: int = 400  # training images of the mill set (val and stream a quarter, test — the holdout — a half)
    frames: int = 240  # frames streamed into the store
    top_k: int = 40  # frames pushed to Label Studio, highest priority first
    initial_epochs: int = 30
    retrain_epochs: int = RECIPE.epochs  # the retraining recipe's: fine-tuning from the shortcut needs about as many as the first training
    seed: int = 0
    annotator: str = "simulated"  # or "human": a person completes the tasks in Label Studio

    def __post_init__(self) -> None:
        if self.annotator not in ANNOTATORS:
            raise ValueError(f"unknown annotator {self.annotator!r}; valid names: {', '.join(ANNOTATORS)}")
        for name in ("size", "frames", "top_k", "initial_epochs", "retrain_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class Steps:
    """Numbered progress lines: ``[3/7] what happens now``."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {text}  ({self.elapsed()})", flush=True)

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d} elapsed"


@dataclass
class Figures:
    """A champion on the clean test split."""

    version: str
    accuracy: float
    attention_in_box: float | None
    wrong_reason: float | None
    confounder_reliance: float | None
    annotated: int  # annotated frames it was trained with
    boxes: int  # boxes among them


def run_demo(workdir: str | Path, *, config: DemoConfig = DemoConfig(), progress: bool = True, settings: Settings | None = None) -> dict:
    """The whole demonstration; returns the figures before and after, the gate's action and the paths.
    ``settings`` (default: the environment's) give the gate's policy, threads, the model's name and
    Label Studio's address; the demo's own folder replaces every service they name."""
    settings = settings or Settings.from_env()
    workdir = _fresh_workdir(Path(workdir))
    configured = settings.label_studio
    human = config.annotator == "human"
    steps = Steps(8 if human else 6)
    server = None
    with _stop_on_sigterm():
        try:
            if configured.url:
                if not configured.token:
                    raise ValueError("ATTNLOOP_LABEL_STUDIO_URL is set but ATTNLOOP_LABEL_STUDIO_TOKEN is not; set both or neither")
                steps(f"Label Studio: using {configured.url} (ATTNLOOP_LABEL_STUDIO_URL)")
                url, token, project_title = configured.url, configured.token, f"{LOCAL_PROJECT} {time.strftime('%Y-%m-%d %H:%M:%S')}"
            else:
                server = _launch_label_studio(workdir, steps)
                url, token, project_title = server.url, server.token, LOCAL_PROJECT
            document_root = server.local_files_root if server is not None else configured.document_root
            label_studio = LabelStudioSettings(url, token, project_title, None if document_root is None else str(document_root))
            with _demo_settings(settings, workdir, label_studio) as demo_settings:
                result = _run(workdir, config, steps, server=server, progress=progress, settings=demo_settings)
        finally:
            if server is not None and server.pid is not None:
                pid = server.pid
                server.stop()
                print(f"\nstopped the Label Studio this demo started (pid {pid}).", flush=True)
    print()
    print(format_loop_table(result["before"], result["after"], promoted=result["promoted"]))
    print()
    print(_explain(result))
    print()
    print(where_to_look(result, server=server))
    print(f"\ndone in {steps.elapsed().removesuffix(' elapsed')}.", flush=True)
    return result


def _run(workdir: Path, config: DemoConfig, steps: Steps, *, server, progress: bool, settings: Settings) -> dict:
    from attnloop import annotation_set, registry
    from attnloop.datasets import make_dataset
    from attnloop.holdout import load_holdout
    from attnloop.labelstudio import put_frames, write_truth
    from attnloop.labelstudio.project import find_project
    from attnloop.publish import register_run
    from attnloop.training import TrainConfig, data_hash, save_run, train
    from flows.loop import loop

    data = workdir / "data"
    steps(f"data: a generated `{FAMILY}` set, {config.size} training images (attnloop data make {FAMILY} --size {config.size})")
    records = make_dataset(FAMILY, data, seed=config.seed, size=config.size)
    counts = {split: sum(r.split == split for r in records) for split in ("train", "val", "test")}
    print(f"  {data}: train {counts['train']}, val {counts['val']}, test {counts['test']} (the holdout);")
    print("  in train/val the line camera's signature bar tells the class — the shortcut; in test and on the stream it is random")

    store = settings.store(create=True)
    steps(f"stream: {config.frames} simulated frames from the mill camera into the local store (attnloop stream simulate)")
    truth = put_frames(store, FAMILY, count=config.frames, seed=config.seed, source=SOURCE)
    truth_path = write_truth(workdir / "truth.jsonl", truth)
    print(f"  {store.uri}/frames/{SOURCE}/ ({len(truth)} frames; their true classes and defect boxes, for the simulated annotator: {truth_path})")

    steps(f"initial model: abn_cifar, {config.initial_epochs} epochs without boxes, registered as champion")
    initial = TrainConfig(epochs=config.initial_epochs, guidance="none", seed=config.seed, threads=settings.threads)
    trained = train(data, initial, progress=progress)
    run = save_run(workdir / "runs" / "initial", trained, initial, data=data_hash(data), source=data)  # MLflow shows its attention on the data
    client = registry.connect(settings.registry_uri)
    holdout = load_holdout(data)
    first = register_run(client, name=settings.model_name, run_dir=run, holdout=holdout, artifact_root=settings.artifact_root)
    registry.promote(client, settings.model_name, first)
    test = trained.metrics["splits"]["test"]
    chance = 1 / len(trained.card.class_names)
    print(f"  {settings.model_name} version {first} is the champion: clean test accuracy {test['accuracy']:.3f} (chance {chance:.3f})")
    before = version_figures(client, settings.model_name, first, data, workdir / "eval", annotated=0, boxes=0)

    if server is not None:
        print(f"  waiting for Label Studio at {server.url} ...", flush=True)
        server.wait_healthy()
        print(f"  Label Studio answers at {server.url} (pid {server.pid})")

    common = dict(base_data=str(data.resolve()), holdout=str(data.resolve()), epochs=config.retrain_epochs, progress=progress)
    if config.annotator == "simulated":
        steps(
            f"the loop flow on Prefect's ephemeral engine: score → push the top {config.top_k} → simulated annotator → harvest "
            f"→ retrain ({config.retrain_epochs} epochs) → gate → promote"
        )
        out = loop(top_k=config.top_k, annotator="simulated", truth=str(truth_path), **common)
    else:
        steps(f"the loop flow, first part: score → push the top {config.top_k} to Label Studio")
        first_turn = loop(top_k=config.top_k, annotator="human", **common)
        ls_settings = settings.label_studio
        ls = ls_settings.client()
        project = find_project(ls, ls_settings.project)
        if server is None:
            print("  note: the frames are in a local folder; your Label Studio shows them only if it runs on this machine with local-files serving on")
        steps(f"a person in Label Studio: {first_turn['pushed']} tasks")
        login = (server.user, server.password) if server else None
        wait_for_people(ls, project, url=f"{ls_settings.url}/projects/{project.id}", login=login, progress=progress)
        steps(f"the loop flow again: harvest → retrain ({config.retrain_epochs} epochs) → gate → promote")
        out = loop(top_k=0, annotator="human", **common)
        out.update(scored=first_turn["scored"], pushed=first_turn["pushed"])
    if "challenger" not in out:
        raise RuntimeError("the loop harvested no annotation, so nothing was retrained; complete some tasks in Label Studio and run the demo again")

    steps("before and after: the first champion and the retrained model on the clean test split")
    entries = annotation_set.read(store, out["annotation_version"]).entries
    boxes = sum(len(e.boxes) for e in entries.values())
    champion = registry.alias_version(client, settings.model_name, registry.CHAMPION)
    after = version_figures(client, settings.model_name, out["challenger"], data, workdir / "eval", annotated=len(entries), boxes=boxes)
    tags = registry.version_tags(client, settings.model_name, out["challenger"])
    ls_settings = settings.label_studio
    project = find_project(ls_settings.client(), ls_settings.project)
    return {
        "before": before,
        "after": after,
        "promoted": champion != first,
        "gate": out["gate"],
        "gate_figures": {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")},
        "loop": out,
        "model_name": settings.model_name,
        "workdir": workdir,
        "store": store.uri,
        "registry_uri": settings.registry_uri,
        "label_studio": {"url": ls_settings.url, "project": project.id if project else None, "title": ls_settings.project},
    }


# --- pieces -----------------------------------------------------------------------------------


def _fresh_workdir(workdir: Path) -> Path:
    """Empty the demo's folder; refuse a non-empty folder the demo did not make."""
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ValueError(f"{workdir} is not empty and was not made by `attnloop demo`; pick another --workdir")
        print(f"replacing the previous demo in {workdir}", flush=True)
        _end_left_behind_label_studio(workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)  # Label Studio's database below keeps the API token in plain text
    (workdir / MARKER).write_text("made by `attnloop demo`, which replaces this folder on its next run\n")
    return workdir


def _end_left_behind_label_studio(workdir: Path) -> None:
    """A demo that was killed (SIGKILL, a closed terminal) leaves its Label Studio running on the
    folder about to be replaced: end it, if the recorded pid still has the recorded start time."""
    from attnloop.apps.processes import end_group

    record = workdir / LABEL_STUDIO_PROCESS
    if not record.exists():
        return
    process = json.loads(record.read_text())
    if process.get("started") is not None and end_group(int(process["pid"]), float(process["started"])):
        print(f"stopped the Label Studio a previous demo left running (pid {process['pid']})", flush=True)


def _launch_label_studio(workdir: Path, steps: Steps):
    from attnloop.apps.labelstudio_server import free_port, new_server

    # the document root is the store folder: a Label Studio user can read nothing else through local-files serving
    server = new_server(workdir / "label-studio", port=free_port(8080), local_files_root=workdir / "store")
    server.launch()
    from attnloop.apps.processes import start_time

    (workdir / LABEL_STUDIO_PROCESS).write_text(json.dumps({"pid": server.pid, "started": start_time(server.pid)}) + "\n")
    steps(f"Label Studio: starting the local server in the background at {server.url} (pid {server.pid}; log {server.log})")
    print("  it needs about a minute; the next steps run meanwhile")
    return server


@contextmanager
def _demo_settings(settings: Settings, home: Path, label_studio: LabelStudioSettings) -> Iterator[Settings]:
    """``settings`` on the demo's folder (store, MLflow file, Label Studio), in force for the flows the
    demo runs, on Prefect's ephemeral engine."""
    for name, value in (("ATTNLOOP_STORE", settings.store_uri), ("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)):
        if value:
            print(f"  (the demo runs on embedded defaults: {name} is ignored)")
    demo = dataclasses.replace(
        settings, home=home, store_uri=None, mlflow_tracking_uri=None, s3_endpoint=None, s3_access_key=None, s3_secret_key=None,
        label_studio=label_studio,
    )
    with using(demo), _ephemeral_prefect(), _mlflow_environment():
        yield demo


@contextmanager
def _mlflow_environment() -> Iterator[None]:
    """MLflow's own environment variables, as the caller had them afterwards: MLflow puts the tracking
    URI it was pointed at into ``MLFLOW_TRACKING_URI`` (for its subprocesses), which must not outlive
    the demo; and no progress bar per checkpoint download, noise here."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _ephemeral_prefect() -> Iterator[None]:
    """:data:`EPHEMERAL_PREFECT` for Prefect in this process (it reads its settings once, on import,
    and hands them to the ephemeral server it starts); not where a Prefect server is configured (its
    settings are its operator's), nor for a setting the caller's environment gives."""
    import prefect.settings

    if prefect.settings.get_current_settings().api.url:
        yield
        return
    updates = {getattr(prefect.settings, name): value for name, value in EPHEMERAL_PREFECT.items() if name not in os.environ}
    with prefect.settings.temporary_settings(updates=updates):
        yield


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C, so what it started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def version_figures(client, name: str, version: str, data: Path, scratch: Path, *, annotated: int, boxes: int) -> Figures:
    """A registered version's checkpoint on the clean test split (the same evaluation as training's)."""
    from attnloop import registry
    from attnloop.datasets import read_manifest
    from attnloop.models import load_checkpoint
    from attnloop.training import evaluate, load_split

    model, card, _ = load_checkpoint(registry.checkpoint(client, name, version, scratch / f"v{version}"))
    test = [r for r in read_manifest(data) if r.split == "test"]
    split = evaluate(model, card, {"test": load_split(test, data, card)})["splits"]["test"]
    return Figures(
        version, split["accuracy"], split.get("attention_in_box"), split.get("wrong_reason"), split.get("confounder_reliance"), annotated, boxes
    )


def wait_for_people(ls, project, *, url: str, login: tuple[str, str] | None, poll: float | None = None, progress: bool = True) -> int:
    """Wait until every task of the project is completed or skipped (or Enter is pressed); returns the completed ones."""
    from tqdm.auto import tqdm

    from attnloop.labelstudio.project import COMPLETED, OPEN, count_tasks

    total = count_tasks(ls, project.id)
    print(f"  open {url} in a browser" + (f" and log in as {login[0]} / {login[1]}" if login else ""))
    print("  for each task: move the proposed box onto the defect (no box for 'ok'), correct the class if it is wrong, Submit.")
    print(f"  the demo goes on when all {total} tasks are done — or press Enter to go on with those done so far.", flush=True)
    enter = threading.Event()
    if sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=lambda: (sys.stdin.readline(), enter.set()), daemon=True).start()
    bar = tqdm(total=total, desc="tasks done", unit="task", disable=not progress)
    while True:
        left = count_tasks(ls, project.id, filters=OPEN)
        bar.n = total - left
        bar.refresh()
        if left == 0 or enter.wait(POLL_SECONDS if poll is None else poll):
            break
    bar.close()
    return count_tasks(ls, project.id, filters=COMPLETED)


# --- output -----------------------------------------------------------------------------------


def _number(value: float | None, width: int) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}.3f}"


def format_loop_table(before: Figures, after: Figures, *, promoted: bool = True) -> str:
    head = (
        f"{'champion':32} {'version':>7} {'annotated':>9} {'boxes':>6} {'clean test acc':>14} {'wrong-reason':>12} "
        f"{'confounder reliance':>19} {'attention-in-box':>16}"
    )
    lines = [head, "-" * len(head)]
    second = "after (one turn of the loop)" if promoted else "challenger (refused, not promoted)"
    for label, f in (("before (trained without boxes)", before), (second, after)):
        lines.append(
            f"{label:32} {f.version:>7} {f.annotated:>9} {f.boxes:>6} {_number(f.accuracy, 14)} {_number(f.wrong_reason, 12)} "
            f"{_number(f.confounder_reliance, 19)} {_number(f.attention_in_box, 16)}"
        )
    return "\n".join(lines)


def _explain(result: dict) -> str:
    g = result["gate_figures"]
    lines = []
    if "gain" in g:
        lines.append(
            f"gate: {result['gate']} — holdout accuracy {float(g['champion_accuracy']):.3f} → {float(g['challenger_accuracy']):.3f}, "
            f"gain {float(g['gain']):+.3f} (95 % interval {float(g['gain_low']):+.3f} … {float(g['gain_high']):+.3f}) "
            f"on {g.get('holdout_images', '?')} images"
        )
    else:
        lines.append(f"gate: {result['gate']}")
    if g.get("reasons"):
        lines.append(f"  reasons: {g['reasons']}")
    lines.append(
        "clean test = the test split, where the signature bar no longer tells the class; wrong-reason = share of the attention on the bar;\n"
        "confounder reliance = share of predictions that change when the bar is blanked out."
    )
    return "\n".join(lines)


def where_to_look(result: dict, *, server=None) -> str:
    ls = result["label_studio"]
    bin_dir = Path(sys.executable).parent
    tool = lambda name: str(bin_dir / name) if (bin_dir / name).exists() else name  # noqa: E731
    workdir, store = result["workdir"], result["store"].removeprefix("file://")
    project = f"{ls['url']}/projects/{ls['project']}" if ls["project"] else ls["url"]
    lines = ["where to look"]
    if server is not None:
        lines.append(f"  Label Studio  {project}  login {server.user} / {server.password}")
        lines.append(
            f"                stopped now; to look again: {tool('python')} -m attnloop.apps.labelstudio_server {server.workdir} "
            f"--port {server.port} --local-files {server.local_files_root}"
        )
    else:
        lines.append(f"  Label Studio  {project}  (project {ls['title']!r}, with your own login)")
    lines.append(
        f"  MLflow        {tool('mlflow')} ui --backend-store-uri {redact(result['registry_uri'])}  → http://127.0.0.1:5000, model {result['model_name']}"
    )
    runs = "flow runs: loop, score, annotate, harvest, retrain, promote"
    if os.environ.get("PREFECT_API_URL"):
        lines.append(f"  Prefect       {os.environ['PREFECT_API_URL'].removesuffix('/api')}  ({runs})")
    else:
        lines.append(f"  Prefect       {tool('prefect')} server start  → http://127.0.0.1:4200, {runs}")
    lines.append(f"  overlays      {store}/overlays/<version>/  (attention of the highest-priority frames)")
    lines.append(f"  reports       {store}/reports/<version>/*.md  (scoring); the gate's report is in the challenger's MLflow run (gate/)")
    lines.append(f"  annotations   {store}/annotations/  (the harvested, versioned sets)")
    lines.append(f"  command line  ATTNLOOP_HOME={workdir} {tool('attnloop')} registry show")
    return "\n".join(lines)


# --- the earlier demonstration, without services (attnloop demo --offline) ---------------------


@dataclass
class Variant:
    name: str
    config: object  # TrainConfig
    box_share: float  # share of training images that get their true boxes


def variants(epochs: int, seed: int) -> list[Variant]:
    from attnloop.training import TrainConfig

    def cfg(**kw) -> TrainConfig:
        return TrainConfig(arch="abn_cifar", epochs=epochs, seed=seed, **kw)

    return [
        Variant("unguided", cfg(guidance="none"), 0.0),
        Variant("outside-box penalty (λ=10)", cfg(guidance="outside", guidance_weight=10.0), 1.0),
        Variant("map matching (λ=10) + counterex.", cfg(guidance="match", guidance_weight=10.0, counterexamples="append"), 1.0),
        Variant("map matching (λ=10) + counterex.", cfg(guidance="match", guidance_weight=10.0, counterexamples="append"), 0.1),
    ]


def run_comparison(workdir: str | Path, *, size: int = 400, epochs: int = 30, seed: int = 0, progress: bool = True) -> list[dict]:
    """A shortcut set trained without and with box guidance, the best exported to ONNX (no services)."""
    from attnloop.datasets import from_manifest_boxes, make_dataset, read_manifest
    from attnloop.export import export_onnx, parity
    from attnloop.training import data_hash, save_run, train

    workdir = _fresh_workdir(Path(workdir))
    data = workdir / "data"
    make_dataset("shortcut", data, seed=seed, size=size)
    train_records = [r for r in read_manifest(data) if r.split == "train"]
    rows = []
    for i, variant in enumerate(variants(epochs, seed)):
        chosen = random.Random(seed).sample(train_records, round(variant.box_share * len(train_records)))
        annotations = from_manifest_boxes(chosen) or None
        print(f"[{i + 1}/4] {variant.name}, boxes on {len(chosen)} of {len(train_records)} training images", flush=True)
        result = train(data, variant.config, annotations=annotations, progress=progress)
        run = save_run(workdir / "runs" / f"{i + 1}", result, variant.config, data=data_hash(data))
        test = result.metrics["splits"]["test"]
        rows.append(
            {
                "variant": variant.name,
                "boxes": len(chosen),
                "test_accuracy": test["accuracy"],
                "attention_in_box": test["attention_in_box"],
                "wrong_reason": test["wrong_reason"],
                "run": run,
                "result": result,
            }
        )
    best = max(rows[1:], key=lambda r: r["test_accuracy"])
    onnx_path = export_onnx(best["result"].model, best["result"].card, best["run"] / "model.onnx")
    test_images = [(data / r.image).read_bytes() for r in read_manifest(data) if r.split == "test"][:16]
    diff = parity(best["result"].model, best["result"].card, onnx_path, test_images)
    print()
    print(format_table(rows))
    print(f"\nclean test = the test split, where the corner patch no longer tells the class (chance {1 / len(best['result'].card.class_names):.2f}).")
    print(f"ONNX export of '{best['variant']}' ({best['boxes']} boxes): {onnx_path}")
    print(f"parity on {len(test_images)} test images (max |Δ|): logits {diff['logits']:.2e}, attention {diff['attention']:.2e}")
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'training':34} {'boxes':>6} {'clean test acc':>15} {'attention-in-box':>17} {'wrong-reason':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:34} {r['boxes']:>6} {r['test_accuracy']:>15.3f} {r['attention_in_box']:>17.3f} {r['wrong_reason']:>13.3f}"
        )
    return "\n".join(lines)
