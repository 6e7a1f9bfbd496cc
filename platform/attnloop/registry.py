"""MLflow glue: training runs, registered versions with aliases, and the gate's bookkeeping.

Aliases, not stages: ``champion`` serves, ``challenger`` waits for the gate. A version carries
tags under ``attnloop.``: data hash, annotation-set version, parent version, holdout metrics,
and, once gated, the decision with every figure. Promotion records the champion it replaced
(``attnloop.previous_champion``), which is what ``rollback`` moves back to; a rollback marks the
version it took out (``attnloop.rolled_back_at``), and the gate never promotes a marked version
again: only a person's ``approve`` does.

Every change is ordered so that a failure or a killed process between two requests leaves a state
that is safe to serve and that a re-run finishes (see :func:`promote`). Messages carry the server's
address with its credentials redacted (:func:`attnloop.redact.redact`).

The same code runs on an embedded SQLite store (artifacts in a local folder) and against an
``mlflow server`` with a database and S3/MinIO artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from attnloop.gate import AWAIT, PROMOTE, REFUSE, Decision, Policy, decide, report
from attnloop.holdout import Holdout, load_holdout, score
from attnloop.redact import redact
from attnloop.runtime import OnnxModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TAG = "attnloop."
RUN_FILE = "mlflow.json"  # written into a training run folder: which MLflow run holds it


# MLflow's own defaults retry an unreachable server for minutes (7 retries, backoff factor 2, 120 s
# per request). attnloop applies these instead, unless the environment sets them: 4 tries over about
# 6 s when the server refuses or answers 5xx, under a minute when it does not answer at all.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


QUIET_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def connect(tracking_uri: str):
    """An MlflowClient on ``tracking_uri`` (also the registry), with the fluent API pointed there too.

    Applies :data:`HTTP_DEFAULTS` to MLflow's retry settings the environment leaves unset, so that an
    unreachable server fails within seconds, not minutes; and, unless logging is verbose (INFO or
    lower), keeps urllib3's one "Retrying…" warning per retry quiet: the :class:`RegistryError` that
    ends the retries says what happened, in one line, for every command that reaches the registry.
    A URI with credentials also turns off MLflow's run links on stdout, which would print them."""
    import mlflow
    from mlflow import MlflowClient

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)  # MLflow reads these on every request
    if redact(tracking_uri) != tracking_uri and not os.environ.get(QUIET_LINKS):
        os.environ[QUIET_LINKS] = "true"  # MLflow's "View run at" lines would print the URI's password
    pool = logging.getLogger("urllib3.connectionpool")
    if pool.getEffectiveLevel() > logging.INFO:
        pool.setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class RegistryError(RuntimeError):
    """The registry failed: unreachable, or an error other than "no such alias / model". Its message
    is one line: which server, how it failed and, once :func:`guarded` completed it, what was being
    done, what the failure left as it was and whether a re-run is safe."""

    def __init__(self, message: str, *, reached: bool, complete: bool = False) -> None:
        super().__init__(redact(message))  # MLflow's own texts repeat the URI, password included
        self.reached = reached  # the server answered (with an error of its own)
        self.complete = complete


def retry_budget() -> str:
    """How long MLflow tries one request under the current settings, in words."""
    env = {key: os.environ.get(key, value) for key, value in HTTP_DEFAULTS.items()}
    retries, factor = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), float(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    waits = sum(factor * 2 ** (k - 1) for k in range(2, retries + 1))  # urllib3 waits nothing before the first retry
    return f"{retries + 1} tries over about {waits:.0f} s, at most {env['MLFLOW_HTTP_REQUEST_TIMEOUT']} s each"


def _transport_failure(err: BaseException) -> str | None:
    """How the way to the server failed (refused, 5xx every time, no answer), or None when the server
    answered with an error of its own."""
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException):
            text = str(seen)
            status = re.search(r"too many (\d{3}) error responses", text)
            if status:
                return f"it answered {status[1]} every time"
            if isinstance(seen, requests.exceptions.Timeout) or "timed out" in text.lower():
                return "it did not answer in time"
            if "refused" in text.lower():
                return "the connection was refused"
            if "resolve" in text.lower() or "name or service not known" in text.lower():
                return "its host name did not resolve"
            return f"{type(seen).__name__}: {' '.join(text.split())[:200]}"
        seen = seen.__cause__ or seen.__context__
    return None


def _failed(err: BaseException, *, client) -> RegistryError:
    """An MLflow or HTTP error as an incomplete :class:`RegistryError` naming the server."""
    uri = redact(getattr(client, "tracking_uri", None) or "(unknown)")
    transport = _transport_failure(err)
    if transport is not None:
        return RegistryError(f"the MLflow registry at {uri} could not be reached ({transport}; {retry_budget()})", reached=False)
    text = " ".join(str(getattr(err, "message", err)).split())[:300]
    return RegistryError(f"the MLflow registry at {uri} answered an error: {text}", reached=True)


@contextmanager
def guarded(client, *, doing: str, unchanged: str = "nothing was changed") -> Iterator[None]:
    """Turn any registry failure in the block into one complete :class:`RegistryError` line: what was
    being ``doing``, which server failed and how, and ``unchanged`` (what the failure left as it was)."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError as err:
        if err.complete:
            raise
        raise _complete(err, doing=doing, unchanged=unchanged) from err
    except (MlflowException, requests.exceptions.RequestException) as err:
        raise _complete(_failed(err, client=client), doing=doing, unchanged=unchanged) from err


def _complete(err: RegistryError, *, doing: str, unchanged: str) -> RegistryError:
    again = "re-running is safe" if err.reached else "re-running is safe once it answers (MLFLOW_TRACKING_URI names it)"
    return RegistryError(f"{doing}: {err}; {unchanged}; {again}", reached=err.reached, complete=True)


def experiment_id(client, name: str, *, artifact_root: str | Path | None = None) -> str:
    """The experiment's id, created on first use; ``artifact_root`` keeps a local store's artifacts out of the CWD."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if artifact_root is not None:
        location = Path(artifact_root).resolve().as_uri() if "://" not in str(artifact_root) else str(artifact_root)
    return client.create_experiment(name, artifact_location=location)


def _metric_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", text)


def flat_metrics(metrics: dict) -> dict[str, float]:
    """``metrics.json`` → MLflow metrics: ``{split}_{name}`` and ``{split}_accuracy_{class}``."""
    out: dict[str, float] = {}
    for split, m in metrics.get("splits", {}).items():
        for key in ("accuracy", "attention_in_box", "wrong_reason", "object_reliance", "confounder_reliance"):
            if m.get(key) is not None:
                out[f"{split}_{key}"] = float(m[key])
        for cls, value in m.get("per_class", {}).items():
            if value is not None:
                out[_metric_name(f"{split}_accuracy_{cls}")] = float(value)
        out[f"{split}_quarantined"] = float(len(m.get("quarantined", [])))
    return out


def log_training(
    client,
    *,
    experiment: str,
    run_dir: str | Path,
    params: dict,
    history: Iterable[dict] = (),
    figures: dict[str, bytes] | None = None,
    artifact_root: str | Path | None = None,
    run_name: str | None = None,
) -> str:
    """One MLflow run for a training run folder: parameters, metrics per split and class, loss curves,
    the card, the PyTorch checkpoint and ``figures`` (name → PNG bytes). Returns the run id and
    records it in ``RUN/mlflow.json``."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = client.create_run(experiment_id(client, experiment, artifact_root=artifact_root), run_name=run_name or run_dir.name)
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, "" if value is None else str(value)[:6000])
    for key, value in flat_metrics(metrics).items():
        client.log_metric(run_id, key, value)
    for record in history:
        for key, value in record.items():
            if key != "epoch":
                client.log_metric(run_id, f"train_{key}", float(value), step=int(record["epoch"]))
    client.log_artifact(run_id, str(run_dir / "card.json"))
    client.log_artifact(run_id, str(run_dir / "metrics.json"))
    client.log_artifact(run_id, str(run_dir / "model.pt"), artifact_path="pytorch")
    for name, png in (figures or {}).items():
        client.log_image(run_id, _png_array(png), artifact_file=f"figures/{name}")
    client.set_terminated(run_id)
    (run_dir / RUN_FILE).write_text(json.dumps({"tracking_uri": client.tracking_uri, "run_id": run_id}))
    return run_id


def _png_array(png: bytes):
    from attnloop import imaging

    return imaging.decode(png)


def register(client, *, name: str, run_id: str, onnx_path: str | Path, tags: dict[str, object]) -> str:
    """Log the ONNX model (``mlflow.onnx`` flavor) into ``run_id``, register it as a new version of
    ``name``, tag it and give it the ``challenger`` alias. Returns the version."""
    import mlflow
    import mlflow.onnx
    import onnx

    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx_model=onnx.load(str(onnx_path)),
            name="model",
            registered_model_name=name,
            save_as_external_data=False,
            pip_requirements=["onnxruntime"],
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, version, TAG + key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s as %s", name, version, CHALLENGER)
    return version



def _absent(err) -> bool:
    """Does this MLflow error say "no such alias" or "no such registered model" (and nothing else)?"""
    code, text = getattr(err, "error_code", ""), str(getattr(err, "message", err))
    if code == "RESOURCE_DOES_NOT_EXIST" and re.search(r"registered model|alias", text, re.IGNORECASE):
        return True  # "Registered Model with name=… not found"
    return code == "INVALID_PARAMETER_VALUE" and re.search(r"\balias\b.*\bnot found\b", text, re.IGNORECASE) is not None


def alias_version(client, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias or the model does not exist.

    Any other failure (the server unreachable, a 503, a refused permission) raises
    :class:`RegistryError`: a failed lookup must never read as "there is no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if _absent(err):
            return None
        failed = _failed(err, client=client)
        raise RegistryError(f"looking up {name}@{alias}: {failed}", reached=failed.reached) from err


def version_tags(client, name: str, version: str) -> dict[str, str]:
    tags = client.get_model_version(name, version).tags
    return {k[len(TAG) :]: v for k, v in tags.items() if k.startswith(TAG)}


def download(client, name: str, version: str, dst: str | Path) -> Path:
    """The version's ONNX file, downloaded under ``dst``."""
    import mlflow.artifacts

    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri(name, version=version), dst_path=str(dst), tracking_uri=client.tracking_uri)
    )
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise FileNotFoundError(f"{model_uri(name, version=version)} holds no .onnx file")
    return found[0]


def load(client, name: str, *, alias: str = CHAMPION, dst: str | Path, device: str = "auto") -> tuple[OnnxModel, str]:
    """``models:/NAME@alias`` on ONNX Runtime, and the version it resolved to."""
    version = alias_version(client, name, alias)
    if version is None:
        raise LookupError(f"{name} has no version with the alias {alias!r}")
    return OnnxModel(download(client, name, version, dst), device=device), version


@dataclass(frozen=True)
class Source:
    """Where a model comes from: an ONNX file, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""

    name: str | None = None
    alias: str | None = None
    version: str | None = None
    path: Path | None = None

    @property
    def uri(self) -> str:
        """The source as text that :func:`parse_source` reads back."""
        if self.path is not None:
            return str(self.path)
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def model_uri(name: str, *, alias: str | None = None, version: str | int | None = None) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: the one place the registry's model references are spelled."""
    if (alias is None) == (version is None):
        raise ValueError("a model reference names an alias or a version, not both or neither")
    return Source(name, alias=alias, version=None if version is None else str(version)).uri


def champion_uri(name: str) -> str:
    """``models:/NAME@champion``: what scoring, annotating and serving follow unless told otherwise."""
    return model_uri(name, alias=CHAMPION)


_MODELS_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))$")


def parse_source(source: str) -> Source:
    match = _MODELS_URI.match(source)
    if match:
        return Source(match["name"], match["alias"], match["version"])
    if source.startswith("models:/"):
        raise ValueError(f"model source {source!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return Source(path=Path(source))


def file_version(path: str | Path, data: bytes | None = None) -> str:
    """A model file's version: its name and the start of its content's SHA-256, so that another model
    saved under the same name is another version (scoring scores it afresh; serving reports it)."""
    import hashlib

    path = Path(path)
    if data is None:
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256")
    else:
        digest = hashlib.sha256(data)
    return f"{path.name}@{digest.hexdigest()[:12]}"


def open_source(source: str, *, registry_uri: str, dst: str | Path, device: str = "auto", threads: int | None = None) -> tuple[OnnxModel, str]:
    """The model a source names, on ONNX Runtime, and its version (the registry's, or :func:`file_version`)."""
    parsed = parse_source(source)
    if parsed.path is not None:
        if not parsed.path.is_file():
            raise FileNotFoundError(f"model file {parsed.path} does not exist")
        data = parsed.path.read_bytes()  # read once: the version is the hash of the bytes loaded
        return OnnxModel(data, device=device, threads=threads, name=str(parsed.path)), file_version(parsed.path, data)
    client = connect(registry_uri)
    version = parsed.version or alias_version(client, parsed.name, parsed.alias)
    if version is None:
        raise LookupError(f"{parsed.name} has no version with the alias {parsed.alias!r}")
    return OnnxModel(download(client, parsed.name, version, dst), device=device, threads=threads), version


def checkpoint(client, name: str, version: str, dst: str | Path) -> Path:
    """The PyTorch checkpoint (``model.pt``) logged with a version's run, for fine-tuning it."""
    import mlflow.artifacts

    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        raise LookupError(f"{name} version {version} has no run, so no PyTorch checkpoint")
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="pytorch/model.pt", dst_path=str(dst), tracking_uri=client.tracking_uri)
    return Path(local)


def _scalar_tags(decision: Decision) -> dict[str, str]:
    out = {"gate": decision.action, "gate.reasons": "; ".join(decision.reasons)[:4900]}
    for key, value in decision.figures.items():
        if isinstance(value, (int, float)):
            out[f"gate.{key}"] = f"{value:.6g}" if isinstance(value, float) else str(value)
    return out


def standing_rollback(tags: dict[str, str]) -> str | None:
    """When a person rolled this version back (its ``rolled_back_at``), unless a person approved it
    again since; else None. The gate refuses a version with a standing rollback."""
    rolled = tags.get("rolled_back_at")
    return rolled if rolled and tags.get("rollback_approved") != rolled else None


def _rolled_back_reason(name: str, version: str, tags: dict[str, str], *, champion: str | None) -> str:
    who = f" by {tags['rolled_back_by']}" if tags.get("rolled_back_by") else ""
    text = (
        f"version {version} was rolled back{who} at {tags['rolled_back_at']}; the gate does not promote a rolled-back "
        f"version again: a person does, with `attnloop registry approve {name} {version}`"
    )
    if champion == version:
        text += f"; it is still the champion because that rollback did not finish: `attnloop registry rollback {name}` finishes it"
    return text


def gate(
    client,
    *,
    name: str,
    holdout: Holdout,
    policy: Policy = Policy(),
    holdout_path: str | Path | None = None,
    split: str = "test",
) -> tuple[Decision, str, str]:
    """Score the challenger and the champion on the holdout with ONNX Runtime, decide, record the
    decision on the challenger, and move ``champion`` if it passed (and no approval is required).
    Returns the decision, the challenger version and the markdown report. ``holdout_path`` and
    ``split``, where the holdout was loaded from, are recorded too, so that ``approve`` can build the
    new champion's drift reference on the same images.

    A champion lookup that fails for any reason but "no such alias" refuses the challenger with that
    reason; a challenger lookup or a record that fails raises :class:`RegistryError`. Neither moves
    an alias. A challenger a person rolled back is refused without scoring (:func:`standing_rollback`).
    A challenger that already is the champion is a promotion cut short after its alias move (the
    registry failed or the process died): the gate finishes it and answers ``promote``, scoring nothing."""
    with guarded(client, doing=f"gating {name}", unchanged="no alias was moved and no decision recorded"):
        challenger = alias_version(client, name, CHALLENGER)
        recorded = version_tags(client, name, challenger) if challenger is not None else {}
    if challenger is None:
        raise LookupError(f"{name} has no challenger to gate; register one first")
    lookup_error = None
    try:
        champion = alias_version(client, name, CHAMPION)
    except RegistryError as err:  # never read as "no champion": that would promote without a comparison
        champion, lookup_error = None, f"the registry failed while looking up the champion, so there is nothing to compare with ({err})"
    rolled_back = standing_rollback(recorded)
    if champion == challenger and rolled_back is None:
        return _finish_promotion(client, name=name, version=challenger, recorded=recorded)
    with tempfile.TemporaryDirectory() as tmp:
        error, theirs, ours = lookup_error, None, None
        if error is None and rolled_back is None:
            try:
                ours = score(OnnxModel(download(client, name, challenger, Path(tmp) / "challenger"), device="cpu"), holdout)
            except Exception as err:  # any failure to evaluate refuses the challenger, with the reason
                error = redact(f"challenger version {challenger}: {type(err).__name__}: {err}")
        if error is None and rolled_back is None and champion is not None:
            try:
                theirs = score(OnnxModel(download(client, name, champion, Path(tmp) / "champion"), device="cpu"), holdout)
            except Exception as err:
                error = redact(f"champion version {champion}: {type(err).__name__}: {err}")
    if rolled_back is not None:
        reason = _rolled_back_reason(name, challenger, recorded, champion=champion)
        decision = Decision(REFUSE, [reason], {"rolled_back_at": rolled_back})
    else:
        decision = decide(ours, theirs, class_names=holdout.class_names, policy=policy, error=error)
    decision.figures["holdout"] = holdout.digest
    known = "unknown" if lookup_error else champion
    text = report(decision, name=name, challenger_version=challenger, champion_version=known)
    tags = {**_scalar_tags(decision), "gate.holdout": holdout.digest, "gate.champion_version": known or "", "gate.at": _now()}
    if holdout_path is not None:
        tags.update({"gate.holdout_path": str(Path(holdout_path).resolve()), "gate.holdout_split": split})
    with guarded(client, doing=f"recording the gate's decision ({decision.action}) on {name} version {challenger}",
                 unchanged="no alias was moved"):
        for key, value in tags.items():
            client.set_model_version_tag(name, challenger, TAG + key, value)
        run_id = client.get_model_version(name, challenger).run_id
        if run_id:
            client.log_text(run_id, text, f"gate/report-{tags['gate.at'].replace(':', '')}.md")
    if decision.action == PROMOTE:
        promote(client, name, challenger)
    log.info("gate on %s version %s: %s", name, challenger, decision.action)
    return decision, challenger, text


def _finish_promotion(client, *, name: str, version: str, recorded: dict[str, str]) -> tuple[Decision, str, str]:
    """The gate's answer when the challenger already is the champion: finish that promotion."""
    promote(client, name, version)  # the alias is in place: records promoted_at if missing, removes the challenger alias
    earlier = recorded.get("gate", "not recorded") + (f" at {recorded['gate.at']}" if recorded.get("gate.at") else "")
    decision = Decision(PROMOTE, [], {"finished_promotion": 1})
    text = (
        f"# Promotion gate — {name} version {version}\n\n**Decision: promote** (version {version} already is the champion)\n\n"
        f"- an earlier promotion (gate: {earlier}) moved the champion alias and stopped before it finished; "
        "this run finished it (promoted_at recorded, the challenger alias removed) and scored nothing again\n"
    )
    log.info("gate on %s version %s: finished an earlier promotion", name, version)
    return decision, version, text


def _now(*, precise: bool = False) -> str:
    if precise:  # two marks of the same version must differ even within one second
        from datetime import datetime, timezone

        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def promote(client, name: str, version: str) -> None:
    """Make ``version`` the champion, remembering the one it replaces. Safe to repeat, and a repeat
    finishes a promotion cut short. The order keeps every interruption point safe:

    1. ``previous_champion`` is recorded before the alias moves, so a champion always knows where
       ``rollback`` goes (a version whose move then failed merely carries an unused record);
    2. ``champion`` moves: from here on the version serves;
    3. ``promoted_at`` is recorded, so it is only ever present on a version that became champion;
    4. the ``challenger`` alias leaves the version. Until then the gate reads "the challenger is the
       champion" as this promotion unfinished and finishes it; and once a person rolls the version
       back, its mark keeps the gate from promoting it again, wherever the aliases were left.
    """
    doing = f"promoting {name} version {version}"
    with guarded(client, doing=doing, unchanged="the champion alias was not moved"):
        previous = alias_version(client, name, CHAMPION)
        if previous != version:
            client.set_model_version_tag(name, version, TAG + "previous_champion", previous or "")
            client.set_registered_model_alias(name, CHAMPION, version)
    with guarded(client, doing=f"{doing} (finishing: recording promoted_at, removing its challenger alias)",
                 unchanged=f"version {version} is the champion now; re-running (or the next `attnloop registry gate`) finishes its promotion"):
        if previous != version or "promoted_at" not in version_tags(client, name, version):
            client.set_model_version_tag(name, version, TAG + "promoted_at", _now())
        if alias_version(client, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)


def approve(client, name: str, version: str, *, by: str) -> None:
    """A person's approval: of a version the gate passed in approval mode, or of one a person rolled
    back (the gate no longer promotes it). The approval of a rollback is recorded first; the version
    reads ``approved`` only once it is the champion, so an approval cut short can be run again."""
    with guarded(client, doing=f"approving {name} version {version}", unchanged="the champion alias was not moved"):
        tags = version_tags(client, name, version)
    state, rolled_back = tags.get("gate"), tags.get("rolled_back_at")
    if state != AWAIT and not rolled_back:
        raise ValueError(
            f"{name} version {version} is not awaiting approval (gate: {state or 'not run'}); only a version the gate "
            "passed in approval mode, or one a person rolled back, can be approved"
        )
    if rolled_back:
        with guarded(client, doing=f"approving {name} version {version}, rolled back at {rolled_back}",
                     unchanged="the champion alias was not moved"):
            client.set_model_version_tag(name, version, TAG + "rollback_approved", rolled_back)
    promote(client, name, version)
    with guarded(client, doing=f"recording the approval of {name} version {version}",
                 unchanged=f"version {version} is the champion now; its gate tag still reads {state}"):
        client.set_model_version_tag(name, version, TAG + "approved_by", by)
        client.set_model_version_tag(name, version, TAG + "approved_at", _now())
        client.set_model_version_tag(name, version, TAG + "gate", "approved")


def rollback(client, name: str, *, by: str | None = None) -> tuple[str, str]:
    """Move ``champion`` back to the version it replaced; returns (from, to). The version taken out
    is marked first (``rolled_back_at``, ``rolled_back_by``): from then on the gate refuses it, even
    if the move below fails or the process dies before it, and only :func:`approve` promotes it again."""
    with guarded(client, doing=f"rolling back {name}", unchanged="the champion alias was not moved"):
        current = alias_version(client, name, CHAMPION)
        if current is None:
            raise LookupError(f"{name} has no champion to roll back")
        previous = version_tags(client, name, current).get("previous_champion")
        if not previous:
            raise LookupError(f"{name} version {current} replaced no earlier champion; there is nothing to roll back to")
        client.set_model_version_tag(name, current, TAG + "rolled_back_at", _now(precise=True))
        if by:
            client.set_model_version_tag(name, current, TAG + "rolled_back_by", by)
    with guarded(client, doing=f"rolling back {name} from version {current} to version {previous}",
                 unchanged=f"version {current} is marked rolled back (the gate will not promote it again) but is still the champion"):
        client.set_registered_model_alias(name, CHAMPION, previous)
    return current, previous


def gated_holdout(client, name: str, version: str) -> tuple[Holdout, Path, str]:
    """The holdout the gate last decided ``version`` on, loaded again from the folder it recorded
    (``gate.holdout_path``), with that folder and split; refused when its images changed since."""
    with guarded(client, doing=f"reading where the gate's holdout of {name} version {version} is", unchanged="nothing was changed"):
        tags = version_tags(client, name, version)
    path, split, digest = tags.get("gate.holdout_path"), tags.get("gate.holdout_split") or "test", tags.get("gate.holdout")
    if not path:
        raise LookupError(f"{name} version {version} records no holdout folder (it was gated without one); give it with --holdout DIR")
    holdout = load_holdout(path, split=split)
    if digest and holdout.digest != digest:
        raise ValueError(
            f"the holdout {path} ({split} split) changed since the gate scored it (digest {holdout.digest}, recorded {digest}); "
            "give the holdout to use with --holdout DIR"
        )
    return holdout, Path(path), split


def write_reference(client, store, *, name: str, version: str, holdout: Holdout, device: str = "auto", threads: int | None = None) -> dict:
    """``version``'s drift reference: ``holdout`` scored once by its ONNX model into ``references/<version>/``
    of ``store`` (:func:`attnloop.monitoring.reference.build`). Every promotion writes one for the new
    champion, whether the promote flow, ``registry gate`` or ``registry approve`` made it."""
    from attnloop.monitoring import reference

    with tempfile.TemporaryDirectory(prefix="attnloop-reference-") as tmp:
        rerun = f"attnloop monitor reference --holdout DIR --model {model_uri(name, version=version)} writes it"
        with guarded(client, doing=f"writing the drift reference of {name} version {version}",
                     unchanged=f"version {version} is the champion; no drift reference was written ({rerun})"):
            path = download(client, name, version, tmp)
        return reference.build(store, OnnxModel(path, device=device, threads=threads), version, holdout)
