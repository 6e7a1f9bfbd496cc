"""Thread defaults that degrade gracefully beside other work (attnloop.threads; figures:
docs/benchmarks/threads.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnloop import threads

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "ATTNLOOP_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_usable_cpus_follow_the_affinity_mask_not_the_machine():
    cpu = sorted(os.sched_getaffinity(0))[0]
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}}); from attnloop.threads import usable_cpus; print(usable_cpus())"
    assert _python(code) == "1"


@pytest.mark.parametrize(("v2", "expected"), [("150000 100000", 2), ("max 100000", None), ("50000 100000", 1)])
def test_a_cgroup_quota_caps_the_count(tmp_path, v2, expected):
    (tmp_path / "cpu.max").write_text(v2 + "\n")
    assert threads._cgroup_quota(tmp_path) == expected


def test_idle_openmp_threads_sleep_unless_the_environment_says_otherwise():
    code = "import os, attnloop, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"
    assert _python(code).split()[0] == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE").split()[0] == "ACTIVE"


def test_the_setting_wins_then_the_environment_then_the_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve(3) == 3
    assert threads.resolve(None) == threads.usable_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve(None) == 1
    with pytest.raises(ValueError, match="positive integer"):
        threads.resolve(0)


def test_training_and_onnx_runtime_take_the_setting(tiny_data, tmp_path):
    import onnxruntime as ort
    import torch

    from attnloop.export import export_onnx
    from attnloop.runtime import OnnxModel
    from attnloop.training import TrainConfig, train

    result = train(tiny_data, TrainConfig(epochs=1, guidance="none", threads=1), progress=False)
    assert torch.get_num_threads() == 1
    path = export_onnx(result.model, result.card, tmp_path / "m.onnx")
    options = ort.SessionOptions()
    threads.onnx_options(options, 1)
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert OnnxModel(path, device="cpu", threads=1).session.get_session_options().intra_op_num_threads == 1
