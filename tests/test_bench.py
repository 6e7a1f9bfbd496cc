import json

import pytest

from attnloop.apps.bench import ALL, parse_budgets, summarize
from attnloop.apps.cli import main
from attnloop.datasets import make_dataset


@pytest.mark.slow
def test_quick_strategy_benchmark_schema_and_gain(tmp_path):
    data = tmp_path / "data"
    make_dataset("shortcut", data, seed=0, size=120)
    out = tmp_path / "bench"
    assert main(["bench", "strategies", "--data", str(data), "--out", str(out), "--profile", "quick", "--strategies", "random,hybrid"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {tuple(sorted(r)) for r in rows} == {
        (
            "accuracy", "attention_in_box", "budget", "confounder_reliance", "corrections", "marks", "pool", "propagated",
            "propagation_precision", "propagation_recall", "retrain_seconds", "seed", "strategy", "wrong_reason",
        )
    }
    assert {r["strategy"] for r in rows} == {"random", "hybrid"} and {r["budget"] for r in rows} == {0, 10, ALL}
    zero = [r["accuracy"] for r in rows if r["budget"] == 0]
    everything = [r["accuracy"] for r in rows if r["budget"] == ALL]
    assert min(everything) > max(zero) + 0.05  # the largest budget beats budget 0
    report = (out / "report.md").read_text()
    assert "| random |" in report and "90 % gain" in report
    assert (out / "curves.png").stat().st_size > 1000


def test_summary_finds_the_budget_that_reaches_90_percent_of_the_gain():
    rows = [
        {"strategy": s, "budget": b, "seed": 0, "accuracy": a, "attention_in_box": None, "wrong_reason": None}
        for s, curve in {"good": [0.3, 0.7, 0.8, 0.8], "bad": [0.3, 0.35, 0.5, 0.8]}.items()
        for b, a in zip([0, 10, 20, ALL], curve)
    ]
    summary = summarize(rows)
    assert summary["baseline"] == 0.3 and summary["ceiling"] == 0.8
    assert summary["strategies"]["good"]["budget_for_90pct_gain"] == 20
    assert summary["strategies"]["bad"]["budget_for_90pct_gain"] is None
    assert summary["strategies"]["good"]["auc"] > summary["strategies"]["bad"]["auc"]


def test_budgets_parse_or_say_why():
    assert parse_budgets("0, 10,all") == (0, 10, ALL)
    with pytest.raises(ValueError, match="'-5'"):
        parse_budgets("0,-5")


def test_retraining_without_replay_uses_only_the_boxed_images(tiny_data, monkeypatch):
    import attnloop.apps.bench as bench

    calls = []
    real_train = bench.train

    def recording_train(root, config, **kwargs):
        calls.append((config, kwargs.get("records"), kwargs.get("annotations")))
        return real_train(root, config, **kwargs)

    monkeypatch.setattr(bench, "train", recording_train)
    rows = bench.run(tiny_data, strategies=("random",), budgets=(4,), seeds=1, initial_epochs=1, retrain_epochs=1, retrain="scratch", replay=False, progress=False)
    assert len(rows) == 1 and rows[0]["budget"] == 4
    initial, retrain = calls
    assert initial[0].guidance == "none" and initial[0].init_from is None
    config, records, annotations = retrain
    assert config.init_from is None  # from scratch
    assert sorted(r.image for r in records if r.split == "train") == sorted(annotations) and len(annotations) == 4


def test_iterative_mode_spends_the_budget_in_rounds(tiny_data, monkeypatch):
    import attnloop.apps.bench as bench

    annotated = []
    real_train = bench.train

    def recording_train(root, config, **kwargs):
        if kwargs.get("annotations"):
            annotated.append(set(kwargs["annotations"]))
        return real_train(root, config, **kwargs)

    monkeypatch.setattr(bench, "train", recording_train)
    rows = bench.run(tiny_data, strategies=("entropy",), budgets=(5,), seeds=1, initial_epochs=1, retrain_epochs=1, rounds=2, progress=False)
    assert len(rows) == 1
    first, second = annotated  # two retrainings: 3 boxed images, then those 3 and 2 more
    assert len(first) == 3 and len(second) == 5 and first < second
    with pytest.raises(ValueError, match="rounds"):
        bench.run(tiny_data, strategies=("random",), budgets=(2,), seeds=1, initial_epochs=1, retrain_epochs=1, rounds=0)


def test_benchmark_is_logged_to_mlflow_when_a_tracking_uri_is_set(tiny_data, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts under ./mlruns
    out = tmp_path / "bench"
    args = ["bench", "strategies", "--data", str(tiny_data), "--out", str(out), "--strategies", "random",
            "--budgets", "0,2,4", "--seeds", "1", "--initial-epochs", "1", "--retrain-epochs", "1"]
    assert main(args) == 0
    assert "logged to MLflow" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("attnloop-bench-strategies")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["strategies"] == "random" and run.data.params["budgets"] == "0,2,4"
    assert "auc.random" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.json", "report.md", "curves.png"}


def test_strategies_that_pick_the_same_images_share_one_retraining(tiny_data, monkeypatch):
    import attnloop.apps.bench as bench

    retrainings = []
    real_train = bench.train

    def recording_train(root, config, **kwargs):
        if kwargs.get("annotations"):
            retrainings.append(frozenset(kwargs["annotations"]))
        return real_train(root, config, **kwargs)

    monkeypatch.setattr(bench, "train", recording_train)
    rows = bench.run(tiny_data, strategies=("random", "random"), budgets=(3,), seeds=1, initial_epochs=1, retrain_epochs=1, progress=False)
    assert len(rows) == 2 and rows[0]["accuracy"] == rows[1]["accuracy"]
    assert len(retrainings) == 1


def test_parts_run_apart_merge_into_the_run_made_at_once(tiny_data, tmp_path):
    """Seeds split over processes (or machines) give the same report as one run over all seeds."""
    import attnloop.apps.bench as bench

    options = dict(strategies=("random", "margin"), budgets=(0, 4), initial_epochs=1, retrain_epochs=1, progress=False)
    together = bench.run(tiny_data, seeds=2, **options)
    for seed in (0, 1):
        bench.write(tmp_path / f"part{seed}", bench.run(tiny_data, seeds=1, first_seed=seed, **options), command=f"part {seed}")
    merged = bench.merge([tmp_path / "part0", tmp_path / "part1"], tmp_path / "merged")
    assert merged == summarize(together)
    def timeless(rows):  # wall time differs from run to run; every figure must not
        return [{k: v for k, v in r.items() if k != "retrain_seconds"} for r in rows]

    assert timeless(json.loads((tmp_path / "merged" / "results.json").read_text())) == timeless(together)
    assert "part 0" in (tmp_path / "merged" / "report.md").read_text()
    with pytest.raises(ValueError, match="overlap"):
        bench.merge([tmp_path / "part0", tmp_path / "part0"], tmp_path / "twice")
    with pytest.raises(FileNotFoundError, match="no results.json"):
        bench.merge([tmp_path / "part0", tmp_path / "nothing"], tmp_path / "missing")


def test_retraining_from_scratch_gets_the_initial_models_epochs(tiny_data, tmp_path, monkeypatch):
    """A model trained anew with the fine-tuning's few epochs would be a handicapped baseline."""
    import attnloop.apps.bench as bench

    seen = []
    monkeypatch.setattr(bench, "run", lambda root, **kw: seen.append(kw) or [])
    monkeypatch.setattr(bench, "write", lambda out, rows, command: {"strategies": {}})
    for retrain in ("finetune", "scratch"):
        main(["bench", "strategies", "--data", str(tiny_data), "--out", str(tmp_path), "--profile", "full", "--retrain", retrain])
    main(["bench", "strategies", "--data", str(tiny_data), "--out", str(tmp_path), "--retrain", "scratch", "--retrain-epochs", "3"])
    full = bench.PROFILES["full"]
    assert [(kw["retrain"], kw["retrain_epochs"]) for kw in seen] == [("finetune", full.retrain_epochs), ("scratch", full.initial_epochs), ("scratch", 3)]


def test_budgets_as_shares_of_the_pool():
    from attnloop.apps.bench import corrections

    assert parse_budgets("0,0.5%,2%,all") == (0, "0.5%", "2%", ALL)
    assert [corrections(b, 1000) for b in (0, "0.5%", "2%", ALL, 7)] == [0, 5, 20, 1000, 7]
    assert corrections("0.5%", 40) == 1  # a share buys at least one correction
    for bad in ("120%", "0%", "x%"):
        with pytest.raises(ValueError, match="shares of the pool"):
            parse_budgets(bad)


def test_a_held_out_pool_with_marks_propagated_and_confirmed(tmp_path, monkeypatch):
    """The initial model never sees the pool; every retraining sees its labels; the annotator's marks
    spread over the training images (labels known), and in confirm mode only the matches on a true shortcut region stay."""
    import attnloop.apps.bench as bench
    from attnloop.propagation import iou

    data = tmp_path / "mill"
    make_dataset("mill", data, seed=0, size=40)
    truth = {r.image: r for r in bench.read_manifest(data) if r.split == "train"}
    calls = []
    real_train = bench.train

    def recording_train(root, config, **kwargs):
        calls.append((config, [r.image for r in kwargs["records"] if r.split == "train"], dict(kwargs.get("annotations") or {})))
        return real_train(root, config, **kwargs)

    monkeypatch.setattr(bench, "train", recording_train)
    monkeypatch.setattr(bench.Scored, "seen_shortcuts", lambda self, image: True)  # a person who always sees the shortcut
    rows = bench.run(
        data, strategies=("random",), budgets=(0, "10%"), seeds=1, initial_epochs=1, retrain_epochs=1, pool="heldout",
        marks=True, propagation="confirm", progress=False,
    )
    (initial, initial_train, _), (zero, zero_train, no_notes), (_, _, notes) = calls
    pool = set(truth) - set(initial_train)
    assert len(pool) == 20 and set(zero_train) == set(truth)  # held out from the first model, labels seen by every retraining
    assert no_notes == {} and rows[0]["corrections"] == 0
    assert rows[1]["corrections"] == 2 and rows[1]["marks"] == 2 and rows[1]["pool"] == 20
    annotated = {k for k, n in notes.items() if n.boxes or n.label}
    propagated = {k: n for k, n in notes.items() if k not in annotated}
    assert len(annotated) == 2 and annotated <= pool and set(propagated) <= set(truth) - annotated  # spread over every training image
    assert rows[1]["propagated"] == len(propagated) > 0 and rows[1]["propagation_precision"] is not None
    assert all(iou(n.shortcut_boxes[0], truth[k].confounder_boxes[0]) >= 0.5 for k, n in propagated.items())
    assert rows[1]["retrain_seconds"] > 0
    with pytest.raises(ValueError, match="needs marks"):
        bench.run(data, strategies=("random",), budgets=(1,), seeds=1, initial_epochs=1, retrain_epochs=1, propagation="auto", progress=False)
