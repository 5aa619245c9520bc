"""`make bench-gpu`: on a machine without CUDA it skips in one line; its code path runs on
CPU as a smoke test (the numbers in the README come from a GPU). The CPU benchmarks of
`make bench` run end to end, briefly."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def bench_gpu_main(monkeypatch, *args: str) -> int:
    """bench_gpu.py's main() with these arguments, in this process (its imports are this
    test process's: seconds saved against a fresh interpreter)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    bench_gpu = importlib.import_module("bench_gpu")
    monkeypatch.setattr(sys, "argv", [str(BENCH), *args])
    try:
        return bench_gpu.main()
    except SystemExit as e:
        return e.code


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to skip")
def test_gpu_benchmark_skips_in_one_line_without_cuda(monkeypatch, capsys):
    assert bench_gpu_main(monkeypatch) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "bench_gpu: skipped: no CUDA device on this machine (run it where there is one)"
    ]


def test_gpu_benchmark_runs_end_to_end_on_cpu(tmp_path):
    args = [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--no-compile"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| eager fp32 | 8 | - |" in out and "| bf16 + channels_last | 32 | 8 |" in out
    assert "Trainer.fit vs plain loop (ResNet-44, batch 8, eager fp32)" in out
    assert "| 1024, 16, 32, 32, 32 |" in out  # the Ghost BN table


def test_gpu_benchmark_rejects_an_unknown_device(monkeypatch, capsys):
    assert bench_gpu_main(monkeypatch, "--device", "tpu") == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("bench_loop.py", ["--repeats", "1", "--epochs", "1"], "| default run, `logger=csv` |"),
        ("bench_startup.py", ["--quick"], "| lbtrain.run --help |"),
    ],
)
def test_cpu_benchmarks_run(tmp_path, script, args, expected):
    """`make bench` keeps working: each CPU benchmark runs end to end, briefly."""
    path = BENCH.with_name(script)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout


def test_suite_time_counts_the_interpreters_each_test_starts():
    """benchmarks/suite_time.py on two tests (one worker): the one that runs `lbtrain.run`
    in a fresh interpreter is listed with it; the one that runs in the test process is not."""
    starts = "tests/test_startup.py::test_config_errors_and_help_import_no_torch"
    stays = "tests/test_steps.py"
    script = BENCH.with_name("suite_time.py")
    result = subprocess.run([sys.executable, str(script), starts, stays, "-n", "0"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| tests/")]
    assert [(row[0], row[1]) for row in rows] == [(f"| {starts}", "1")]
    assert "1 tests start 1 interpreters (0 import Lightning)" in result.stdout
