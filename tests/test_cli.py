import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnloop.apps.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_data_make_writes_the_manifest_contract(tmp_path, capsys):
    assert main(["data", "make", "shortcut", "--out", str(tmp_path / "d"), "--seed", "1", "--size", "8"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()]
    assert {line["split"] for line in lines} == {"train", "val", "test", "stream"}
    for line in lines:
        assert set(line) == {"image", "split", "label", "boxes", "confounder_boxes"}
        assert (tmp_path / "d" / line["image"]).is_file()
        x0, y0, x1, y1 = line["boxes"][0]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert (tmp_path / "d" / "README.md").is_file()
    assert "shortcut: 20 images" in capsys.readouterr().out


def test_data_make_subgroup_variant(tmp_path):
    assert main(["data", "make", "mill", "--out", str(tmp_path / "m"), "--size", "12", "--shortcut-rate", "0.25"]) == 0
    assert "holds on 25% of train/val images" in (tmp_path / "m" / "README.md").read_text()


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name in ("a", "b"):
        main(["data", "make", "shortcut", "--out", str(tmp_path / name), "--size", "8"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_train_then_export_prints_parity(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--boxes", "manifest", "--counterexamples", "append"]) == 0
    assert {"model.pt", "card.json", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    out = capsys.readouterr().out
    assert "parity max |Δ|: logits" in out
    worst = max(float(part.split()[-1]) for part in out.split("parity max |Δ|: ")[1].splitlines()[0].split(", "))
    assert worst <= 1e-4


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "make", "imagenet", "--out", str(tmp_path)])


def test_console_script_runs():
    out = subprocess.run([str(Path(sys.executable).parent / "attnloop"), "models"], capture_output=True, text=True, check=True)
    assert "abn_resnet50" in out.stdout and "msabn_cifar" in out.stdout


def test_stdlib_platform_is_not_shadowed_from_the_repo_root():
    code = "import platform, uuid; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Linux"


def test_serving_side_modules_do_not_import_torch():
    code = "import sys, attnloop.runtime, attnloop.imaging, attnloop.card; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr


def test_registry_commands_on_the_embedded_store(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTNLOOP_GATE_MIN_ACCURACY", "0.0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--guidance", "none"]) == 0
    assert "tracked in MLflow at sqlite:///" in capsys.readouterr().out  # every training run is tracked
    assert main(["registry", "register", str(tmp_path / "run"), "--name", "cli-abn", "--holdout", str(tiny_data)]) == 0
    assert "registered cli-abn version 1 as challenger" in capsys.readouterr().out
    assert main(["registry", "gate", "--name", "cli-abn", "--holdout", str(tiny_data)]) == 0
    assert "**Decision: promote** (no champion yet)" in capsys.readouterr().out
    assert main(["registry", "show", "--name", "cli-abn"]) == 0
    assert "aliases champion" in capsys.readouterr().out
    assert main(["registry", "rollback", "cli-abn"]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert (tmp_path / "home" / "mlflow.db").is_file() and (tmp_path / "home" / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()


def test_stream_simulate_then_score_on_the_embedded_store(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ATTNLOOP_STORE", raising=False)
    assert main(["data", "make", "mill", "--out", str(tmp_path / "mill"), "--size", "12"]) == 0
    assert main(["train", "--data", str(tmp_path / "mill"), "--out", str(tmp_path / "run"), "--epochs", "1", "--guidance", "none"]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["stream", "simulate", "--family", "mill", "--count", "5"]) == 0
    assert "wrote 5 frames to file://" in capsys.readouterr().out
    assert main(["score", "--model", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "frames scored: 5" in out and "results under file://" in out
    assert main(["score", "--model", str(tmp_path / "m.onnx")]) == 0
    assert "frames scored: 0; already scored before: 5" in capsys.readouterr().out
    assert main(["score", "--model", "models:/nothing"]) == 2


def test_train_records_the_attention_form_it_was_asked_for(tiny_data, tmp_path):
    for form, gate, branch in (("faithful", "multiply", "local"), ("original", "residual", "last")):
        run = tmp_path / form
        assert main(["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--attention", form]) == 0
        attention = json.loads((run / "card.json").read_text())["extra"]["attention"]
        assert (attention["gate"], attention["branch"]) == (gate, branch), attention


def test_the_parser_loads_no_heavy_library():
    """``attnloop --help`` and every one-line error build the whole parser first: it must not load
    PyTorch, MLflow, Prefect or ONNX Runtime (PyTorch alone took 4–10 s under load)."""
    code = (
        "import sys; from attnloop.apps.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('torch', 'torchvision', 'mlflow', 'prefect', 'onnxruntime', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"building the parser imported {out.stdout.strip()}"


def test_help_answers_quickly():
    """A generous bound for a loaded machine; the figure itself is in docs/benchmarks/cli.md."""
    import time

    start = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).parent / "attnloop"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "stream" in out.stdout
    assert time.perf_counter() - start < 5.0


def test_the_command_lines_choices_are_the_libraries():
    from attnloop import guidance, options

    assert tuple(guidance.LOSSES) == options.GUIDANCE_LOSSES


def test_a_typo_in_a_store_path_is_an_error_not_an_empty_store(tmp_path, capsys):
    typo = tmp_path / "stroe"
    for command in (["score", "--store", str(typo)], ["monitor", "run", "--store", typo.as_uri()], ["ls", "harvest", "--store", str(typo)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no store at" in err and "typo" in err, err
    assert not typo.exists()


def test_a_missing_image_is_reported_by_train_and_named_by_the_gate(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_GATE_MIN_ACCURACY", "0.0")
    (tiny_data / "test" / "3.png").unlink()
    (tiny_data / "train" / "0.png").unlink()  # the first training image, which the model's card is read from
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-track"]) == 0
    captured = capsys.readouterr()
    assert "n=11, 1 left out" in captured.out and "warning: 2 images" in captured.err
    assert "test/3.png (missing)" in captured.err and "registry gate` refuses" in captured.err
    assert main(["registry", "register", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["registry", "gate", "--holdout", str(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be whole" in err and "test/3.png (missing)" in err and "remove their lines" in err


def test_each_command_says_what_comes_next(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))

    def last_line(argv: list[str], code: int = 0) -> str:
        assert main(argv) == code, argv
        captured = capsys.readouterr()
        return (captured.out if code == 0 else captured.err).strip().splitlines()[-1]

    assert last_line(["data", "make", "shortcut", "--out", str(tmp_path / "d"), "--size", "8"]).startswith("next: `attnloop train --data")
    assert "registry register" in last_line(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-track"])
    assert last_line(["export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]).startswith("next: `attnloop score --model")
    assert "attnloop score" in last_line(["stream", "simulate", "--family", "shortcut", "--count", "2"])
    no_champion = last_line(["score"], 2)
    assert "no version with the alias 'champion'" in no_champion and "attnloop registry register RUN" in no_champion
    assert "attnloop ls push" in last_line(["score", "--model", str(tmp_path / "m.onnx")])
