"""Test-only pieces that runs started as subprocesses load by name (tests/ on PYTHONPATH)."""

import os
import signal
import time
from pathlib import Path

import lightning as L


class SignalAtStep(L.Callback):
    """Sends this process `signal` once optimizer step `step` is done: a preemption at a
    known point of the run, with the real signal path."""

    def __init__(self, step: int, signal: str = "SIGUSR1") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def wandb_records(run_file) -> tuple[dict, list[dict]]:
    """The config and the history rows of an offline W&B run, from its `.wandb` file, read
    with lbtrain.dashboard's reader (wandb >= 0.19 ships no Python reader)."""
    import json

    from lbtrain.dashboard import wandb_records as records

    data = Path(run_file).read_bytes()
    assert data[:4] == b":W&B", run_file
    config, history = {}, []

    def key(item) -> str:
        return item.key or ".".join(item.nested_key)

    for record in records(Path(run_file)):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({key(i): json.loads(i.value_json) for i in record.history.item})
    return config, history


class Pace(L.Callback):
    """Paces a drill: each optimizer step takes at least `seconds` (a sleep, so no CPU), and
    the step reached is written to <run dir>/pace, where a test waits for it before it
    signals the job. With `first_run_only`, a run resumed from a checkpoint is not slowed."""

    def __init__(self, seconds: float, first_run_only: bool = False) -> None:
        self.seconds, self.first_run_only = seconds, first_run_only
        self.active = True

    def on_train_start(self, trainer, pl_module) -> None:
        self.active = not (self.first_run_only and trainer.ckpt_path)

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.active:
            time.sleep(self.seconds)
            (Path(trainer.default_root_dir) / "pace").write_text(str(trainer.global_step))


def assert_same_run(a: Path, b: Path) -> None:
    """Two run dirs hold the same run: summary.json (wall time aside), the final weights bit
    for bit, and every curve of the CSV log, step by step."""
    import json

    import pandas as pd
    import torch

    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa.pop("train_seconds") > 0 and sb.pop("train_seconds") > 0  # wall time: not equal
    assert sa == sb  # metrics, steps, samples, fits
    wa, wb = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for d in (a, b)
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = (pd.read_csv(d / "csv" / "metrics.csv") for d in (a, b))
    assert sorted(la.columns) == sorted(lb.columns)
    # each curve: its (step, value) rows in order. A resumed run appended to its log, and the
    # rows of different series may interleave otherwise there (buffered series flush later)
    for column in la.columns.drop("step"):
        ca, cb = (log.dropna(subset=[column]) for log in (la, lb))
        assert list(ca["step"]) == list(cb["step"]), column
        assert list(ca[column]) == list(cb[column]), column


class HoldAtStep(L.Callback):
    """Holds the run still at optimizer step `step`: writes <run dir>/held, then sleeps, so a
    test can act on a live run that writes nothing meanwhile."""

    def __init__(self, step: int, seconds: float = 120) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            (Path(trainer.default_root_dir) / "held").write_text(str(os.getpid()))
            time.sleep(self.seconds)
