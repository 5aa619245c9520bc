"""A preempted job checkpoints at a step boundary and, run again, ends exactly as if it had
never stopped (CPU, deterministic settings)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import assert_same_run

# 3 epochs of 125 steps, the LR decayed at step 250: the signal lands mid-epoch, 90 steps
# after a weight_distance flush and inside the diffusion fit's range, so the checkpoint must
# carry the pending distances, the epoch's running metrics and the noise scale's averages
RUN = ("trainer.max_epochs=3", "optim.milestones=[2]", "trainer.deterministic=true",
       "logger=csv", "callbacks=all", "callbacks.sharpness=null",
       "callbacks.noise_scale.every_n_steps=20")  # fmt: skip
SIGNAL_STEP = 190
TESTS = Path(__file__).resolve().parent


def start(tmp_path, data_dir, run_dir: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "LBTRAIN_RUN_ID"}
    env["PYTHONPATH"] = f"{TESTS}{os.pathsep}{env.get('PYTHONPATH', '')}"  # tests/helpers.py
    args = [sys.executable, "-m", "lbtrain.run", *RUN, *extra, f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    return subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> Path:
    """The run both signals' jobs must end like, run once (one worker: the xdist group)."""
    where = tmp_path_factory.mktemp("reference")
    full = start(where, data_dir, "uninterrupted")
    err, _ = full.communicate(timeout=300)
    assert full.returncode == 0, err[-3000:]
    return where / "uninterrupted"


@pytest.mark.xdist_group("preemption")
@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM", "SIGINT"])
def test_signalled_job_resumes_where_it_stopped_and_ends_like_an_uninterrupted_one(
    tmp_path, data_dir, signame, uninterrupted
):
    signal_at = (
        "+callbacks.signal._target_=helpers.SignalAtStep",
        f"+callbacks.signal.step={SIGNAL_STEP}",
        f"+callbacks.signal.signal={signame}",
    )
    job = start(tmp_path, data_dir, "job", *signal_at)
    err, _ = job.communicate(timeout=300)
    assert job.returncode == (130 if signame == "SIGINT" else 124), err[-3000:]  # Ctrl-C: 130
    # one line says how to continue, and names no file that is not there
    how = [line for line in err.splitlines() if f"({signame}) at step {SIGNAL_STEP}" in line]
    assert len(how) == 1 and f"hydra.run.dir={tmp_path / 'job'}" in how[0], err[-3000:]
    requeue = tmp_path / "job" / "checkpoints" / "requeue.ckpt"
    assert torch.load(requeue, weights_only=False)["global_step"] == SIGNAL_STEP
    assert not (tmp_path / "job" / "summary.json").exists()  # not reported as finished

    resumed = start(tmp_path, data_dir, "job", *signal_at)  # the same command, run again
    err, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resuming the preempted run" in (tmp_path / "job" / "run.log").read_text()
    assert not requeue.exists()
    assert "Detected KeyboardInterrupt" not in err  # Lightning's own Ctrl-C handling: unused
    assert "ended before the epoch ended" not in err  # Lightning's warning: this resume is exact

    runs = (tmp_path / "job", uninterrupted)
    a, b = (json.loads((d / "summary.json").read_text()) for d in runs)
    assert a["global_step"] == 3 * 125
    assert a.pop("train_seconds") > 0 and b.pop("train_seconds") > 0  # wall time: not equal
    assert a == b  # every other entry: metrics, steps, samples, the diffusion fit
    wa, wb = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for d in runs
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    logs = [pd.read_csv(d / "csv" / "metrics.csv") for d in runs]
    columns = ("weight_distance", "noise_scale/b_simple", "lr-SGD", "train/loss_step",
               "val/acc", "train/acc")  # fmt: skip
    for column in columns:
        curves = [log.dropna(subset=[column]) for log in logs]
        # the resumed job appended to its log: each step once, the same curve
        assert list(curves[0]["step"]) == list(curves[1]["step"]), column
        assert list(curves[0][column]) == list(curves[1][column]), column


def test_the_signal_reaches_the_launchers_handler_after_the_checkpoint(tmp_path, data_dir):
    """Under submitit the launcher's own handler requeues the job: it must still get the
    signal, after the checkpoint is on disk."""
    import lightning as L

    from lbtrain.config.command_line import compose_config
    from lbtrain.errors import Preempted
    from lbtrain.train.fit import build

    seen = []

    def launcher_handler(signum, frame):  # stands in for submitit's checkpoint-and-requeue
        seen.append((signum, (tmp_path / "checkpoints" / "requeue.ckpt").exists()))

    class SignalAtStep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, launcher_handler)
    try:
        cfg = compose_config(["logger=csv", f"paths.data_dir={data_dir}"], str(tmp_path))
        trainer, module, dm = build(cfg, tmp_path)
        trainer.callbacks.append(SignalAtStep())
        with pytest.raises(Preempted):
            trainer.fit(module, datamodule=dm)
        assert signal.getsignal(signal.SIGUSR1) is launcher_handler  # lbtrain's handler removed
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [(signal.SIGUSR1, True)]
    ckpt = torch.load(tmp_path / "checkpoints" / "requeue.ckpt", weights_only=False)
    assert ckpt["global_step"] == 5


def test_with_gradient_accumulation_the_job_stops_between_optimizer_steps(tmp_path, data_dir):
    """A checkpoint inside an accumulation window would lose the window's gradients."""
    import lightning as L

    from lbtrain.config.command_line import compose_config
    from lbtrain.errors import Preempted
    from lbtrain.train.fit import build

    class SignalAfterMicroBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 4:  # the first half of the window of batches 4 and 5
                os.kill(os.getpid(), signal.SIGUSR1)

    overrides = ["logger=csv", "trainer.accumulate_grad_batches=2", f"paths.data_dir={data_dir}"]
    trainer, module, dm = build(compose_config(overrides, str(tmp_path)), tmp_path)
    trainer.callbacks.append(SignalAfterMicroBatch())
    with pytest.raises(Preempted):
        trainer.fit(module, datamodule=dm)
    ckpt = torch.load(tmp_path / "checkpoints" / "requeue.ckpt", weights_only=False)
    progress = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (ckpt["global_step"], progress["completed"]) == (3, 6)  # windows 0-1, 2-3, 4-5


@pytest.mark.xdist_group("preemption")
@pytest.mark.parametrize("every", [None, 50])
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_exactly(
    tmp_path, data_dir, uninterrupted, every
):
    """kill -9 at step 230, mid epoch 2, with the CSV log flushed every 10 steps (rows past
    the checkpoint on disk): the run loses at most one checkpoint interval (an epoch; or
    `every` steps), and the resume from last.ckpt ends like a run that never stopped
    (weights, every CSV curve, summary.json but wall time)."""
    interval = [f"callbacks.last_checkpoint.every_n_steps={every}"] if every else []
    kill = ("+callbacks.kill._target_=helpers.SignalAtStep", "+callbacks.kill.step=230",
            "+callbacks.kill.signal=SIGKILL")  # fmt: skip
    interval.append("logger.csv.flush_logs_every_n_steps=10")
    job = start(tmp_path, data_dir, "job", *interval, *kill)
    err, _ = job.communicate(timeout=300)
    assert job.returncode == -signal.SIGKILL, err[-3000:]
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == (200 if every else 125)

    resumed = start(tmp_path, data_dir, "job", *interval, f"ckpt_path={last}")
    err, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert_same_run(tmp_path / "job", uninterrupted)


@pytest.mark.xdist_group("preemption")
def test_a_second_ctrl_c_exits_at_once(tmp_path, data_dir):
    """Two SIGINTs in a row at step 20: the run stops without waiting for a step boundary or
    writing a checkpoint, with a shell's Ctrl-C status."""
    twice = ("+callbacks.c1._target_=helpers.SignalAtStep", "+callbacks.c1.step=20",
             "+callbacks.c1.signal=SIGINT", "+callbacks.c2._target_=helpers.SignalAtStep",
             "+callbacks.c2.step=20", "+callbacks.c2.signal=SIGINT")  # fmt: skip
    job = start(tmp_path, data_dir, "job", *twice)
    err, _ = job.communicate(timeout=300)
    assert job.returncode == 130, err[-3000:]
    assert "second Ctrl-C" in err
    assert not (tmp_path / "job" / "checkpoints" / "requeue.ckpt").exists()
