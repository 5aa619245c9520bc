"""`python -m lbtrain.run` end to end, as a subprocess: what a user sees and what lands on disk."""

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import wandb_records

TINY = ("trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=1")


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "logs" / "runs").iterdir()
    return run_dir


def held_out_accuracy(run_dir: Path, tmp_path: Path) -> float:
    """The accuracy of a run's last checkpoint on its data module's validation set, counted
    here, outside Lightning (the model in eval mode, as Lightning validates)."""
    from lbtrain.config.command_line import compose_config
    from lbtrain.train.fit import build

    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    cfg = compose_config([*overrides, "logger=none"], tmp_path / "rebuilt")
    _, module, data = build(cfg, tmp_path / "rebuilt")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    data.setup("fit")
    module.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in data.val_dataloader():
            right += (module(x).argmax(1) == y).sum().item()
            total += len(y)
    return right / total


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_default_run_writes_metrics_checkpoint_and_offline_wandb(cli_in_process, tmp_path):
    result = cli_in_process(*TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    rows = metrics_rows(run_dir)
    columns = set(rows[0])
    assert {"step", "epoch", "train/loss_step", "train/loss_epoch", "train/acc"} <= columns
    assert {"val/loss", "val/acc", "lr-SGD", "weight_distance"} <= columns  # all by default
    val_acc = [float(r["val/acc"]) for r in rows if r["val/acc"]]
    assert len(val_acc) == 2
    # val/acc is the accuracy of the final weights on the held-out set, recomputed here
    assert held_out_accuracy(run_dir, tmp_path) == pytest.approx(val_acc[-1], abs=1e-6)
    train_steps = {int(r["step"]) for r in rows if r["train/loss_step"]}
    assert train_steps == set(range(1, 13))  # every update t = 1..12, log_every_n_steps=1
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 12 and summary["val/acc"] == val_acc[-1]
    assert summary["weight_distance"] > 0 and "diffusion_slope" in summary
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb"))
    assert "final val/acc" in result.stderr + result.stdout
    assert "batch 32 = 1 device x 32; lr 0.05 = 0.05" in result.stderr + result.stdout


def test_resume_continues_from_checkpoint(cli_in_process, tmp_path):
    first = cli_in_process(*TINY, "logger=csv")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 12
    resumed = cli_in_process(
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=6",
        "logger=csv",
        f"ckpt_path={ckpt}",
        "hydra.run.dir=logs/resumed",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "resumed" / "summary.json").read_text())
    assert summary["global_step"] == 18  # 2 epochs restored + 1 more epoch of 6 steps
    assert torch.load(ckpt, weights_only=False)["global_step"] == 12  # earlier run untouched


def test_a_finished_run_dir_is_never_overwritten(cli_in_process, tmp_path):
    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in (tmp_path / "logs" / "mine").rglob("*") if p.is_file()}
    again = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine", "seed=1")
    assert again.returncode == 2
    assert "error: hydra.run.dir=logs/mine already holds a run (summary.json)" in again.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "logs" / "mine").rglob("*") if p.is_file()}
    assert after == before  # refused before Hydra wrote anything


def test_a_refused_job_keeps_an_earlier_attempts_log_in_its_dir(cli_in_process, tmp_path):
    """A sweep rerun into the dir of an attempt that never finished (its jobs hold only Hydra's
    files and a log): refusing a job undoes this invocation's lines, not the earlier ones."""
    sweep = tmp_path / "logs" / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    earlier = "[2026-11-30 10:00:00,000][lbtrain][INFO] - an earlier attempt, killed\n"
    (sweep / "0" / "run.log").write_text(earlier)
    result = cli_in_process("-m", "optim.lr=-1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2 and "optim.lr=-1: must be >= 0" in result.stderr
    assert (sweep / "0" / "run.log").read_text() == earlier


def test_resuming_a_finished_run_changes_nothing_on_disk(cli_in_process, tmp_path):
    """Nothing left to train: no summary rewritten without its metrics, no .hydra/ or run.log
    of the resume left behind, in the run's dir or in a new one."""
    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "mine"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    again = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine", ckpt)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"lbtrain: {run} already finished at step 12; nothing to resume" in again.stdout
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # summary.json with val/acc, .hydra/, run.log: as they were
    elsewhere = cli_in_process(*TINY, "logger=csv", ckpt)  # into a new run dir
    assert elsewhere.returncode == 0 and "nothing to resume" in elsewhere.stdout
    assert not list((tmp_path / "logs" / "runs").glob("*"))  # the new dir is gone


def test_an_in_place_resume_keeps_the_runs_own_record(cli_in_process, tmp_path):
    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    hydra = tmp_path / "logs" / "mine" / ".hydra"
    record = {p.name: p.read_bytes() for p in hydra.iterdir()}
    more = cli_in_process(
        "trainer.max_epochs=3", "trainer.limit_train_batches=6", "logger=csv",
        "hydra.run.dir=logs/mine", f"ckpt_path={hydra.parent / 'checkpoints' / 'last.ckpt'}",
    )  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in hydra.iterdir() if p.is_file()} == record
    resumed = yaml.safe_load((hydra / "resume-1" / "overrides.yaml").read_text())
    assert "trainer.max_epochs=3" in resumed and any(o.startswith("ckpt_path=") for o in resumed)


def test_an_in_place_resume_with_csv_and_wandb_loggers_continues(cli_in_process, tmp_path):
    """The default loggers (CSV and W&B offline): the resume drops the CSV rows past its
    checkpoint and leaves W&B's run alone (W&B's logger has no log dir)."""
    first = cli_in_process(*TINY, "logger=default", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "mine"
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    more = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=default",
                          "hydra.run.dir=logs/mine", ckpt)  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 18


def test_a_run_from_before_the_keys_added_since_resumes_in_place(cli_in_process, tmp_path):
    """A run written before a key existed (its config.yaml lacks it) resumes in place: a key it
    lacks reads as its default (config.ADDED_KEYS), which is no change of what it was."""
    from lbtrain.config.validate import ADDED_KEYS

    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "mine"
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in ADDED_KEYS:  # as a run from 9631794's time had none of the later ones
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node.pop(last)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    more = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=csv",
                          "hydra.run.dir=logs/mine", ckpt)  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]


def test_a_summary_is_never_rewritten_with_fewer_keys(cli_in_process, tmp_path):
    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "mine"
    summary = json.loads((run / "summary.json").read_text())
    assert "weight_distance" in summary
    more = cli_in_process(  # one epoch more, without the weight-distance measurement
        "trainer.max_epochs=3", "trainer.limit_train_batches=6", "logger=csv",
        "callbacks.weight_distance=null", "hydra.run.dir=logs/mine",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    )  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text()) == summary  # kept
    resumed = json.loads((run / "summary.1.json").read_text())
    assert resumed["global_step"] == 18 and "weight_distance" not in resumed
    assert "summary.json kept: this session's summary lacks" in (run / "run.log").read_text()


def test_the_console_shows_the_run_not_the_config_or_known_notices(cli, tmp_path):
    result = cli(*TINY, "logger=default", env={"WANDB_SILENT": "false"})  # CSV and W&B
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "litlogger" not in console and "`srun` command is available" not in console
    assert "wandb" in console and "anonymous setting" not in console  # W&B speaks, but not that
    assert "batch_size: 32" not in console  # the resolved config: run.log and config.yaml
    assert console.count("GPU available") == 1  # each line once (Lightning's own handler: off)
    assert "weights_only" not in console  # Lightning's line at each save, unless it is said
    assert "recipe=None" not in console and "group ," not in console  # a single run's W&B line
    run_log = (only_run_dir(tmp_path) / "run.log").read_text()
    assert re.search(r"config \w{12}:\n", run_log) and "batch_size: 32" in run_log
    shown = cli(*TINY, "logger=csv", env={"LBTRAIN_SHOW_NOTICES": "1"})
    assert "litlogger" in shown.stdout + shown.stderr  # how to see them again


def test_multirun_over_two_batch_sizes_gives_two_job_dirs(cli_in_process, tmp_path):
    result = cli_in_process("-m", "batch_size=32,64", *TINY, "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    for job, batch in zip(jobs, (32, 64), strict=True):
        assert f"batch_size: {batch}" in (job / "config.yaml").read_text()
        assert json.loads((job / "summary.json").read_text())["global_step"] == 12
        assert metrics_rows(job)
    shown = f"logs/multiruns/{sweep_dir.name}"  # where to look, as the user would type it
    assert f"(12 optimizer steps); results in {shown}/1" in result.stderr + result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith(f"lbtrain: sweep results in {shown} ")
    again = cli_in_process(
        "-m", "batch_size=32,64", *TINY, "logger=csv", f"hydra.sweep.dir={sweep_dir}"
    )
    assert again.returncode == 2
    assert (
        f"hydra.sweep.dir={sweep_dir} already holds finished jobs (0/summary.json)" in again.stderr
    )


def test_two_runs_in_the_same_second_never_share_a_directory(cli, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda _: cli(
                    "trainer.max_epochs=1",
                    "trainer.limit_train_batches=2",
                    "logger=csv",
                    "callbacks=none",
                ),
                range(2),
            )
        )
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    dirs = list((tmp_path / "logs" / "runs").iterdir())
    assert len(dirs) == 2 and all((d / "summary.json").exists() for d in dirs)


def test_sweep_jobs_share_a_wandb_group_and_are_named_by_their_overrides(cli_in_process, tmp_path):
    result = cli_in_process("-m", "batch_size=32,64", "recipe=sb", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "multiruns").iterdir()
    runs = [
        re.search(r"W&B run (\w+) \(offline\): name (\S+), group (\S+), tags (.*)", text).groups()
        for text in ((sweep_dir / j / "run.log").read_text() for j in ("0", "1"))
    ]
    assert [r[1].split(",")[:2] for r in runs] == [
        ["batch_size=32", "recipe=sb"],
        ["batch_size=64", "recipe=sb"],
    ]
    assert runs[0][2] == runs[1][2] == sweep_dir.name
    assert runs[0][3] == "['batch_size=32', 'recipe=sb']"
    assert runs[0][0] != runs[1][0]
    for job, (run_id, *_) in zip(("0", "1"), runs, strict=True):
        assert list((sweep_dir / job / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_compiled_model_with_ghost_batch_norm_trains(cli_in_process, tmp_path):
    result = cli_in_process(
        "compile=true", "ghost_batch_size=8", "logger=csv", "trainer.max_epochs=1",
        "model=mlp", "model.hidden=[16]",  # a small graph: inductor compiles it in half the time
        "trainer.limit_train_batches=5", "trainer.limit_val_batches=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["global_step"] == 5 and summary["weight_distance"] > 0


def test_a_run_records_what_actually_ran_not_only_the_base_regime(cli_in_process, tmp_path):
    """+RA at batch 256 stretches the 1-epoch base regime 8x: config.yaml, summary.json and
    the W&B config say so (epochs, steps, milestones in steps, scaled LR, batches)."""
    result = cli_in_process("recipe=lb_lr_gbn_ra", "large_batch_size=256", "trainer.max_epochs=1",
                 "optim.milestones=[0.5]", "optim.warmup=0.25")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = {
        "batch_size": 256, "per_device_batch": 256, "micro_batch": 256, "ghost_batch_size": 32,
        "lr": pytest.approx(0.05 * 8**0.5), "regime_stretch": 8.0, "epochs": 8,
        "steps_per_epoch": 16, "total_steps": 128, "milestones_steps": [64], "warmup_steps": 32,
    }  # fmt: skip
    assert config["trainer"]["max_epochs"] == 1  # the base regime, as given
    for plan in (config["plan"], summary["plan"]):
        assert {k: plan[k] for k in expected} == expected
    assert summary["global_step"] == 128 and summary["epochs"] == 8
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    wandb_config, _ = wandb_records(wandb_file)
    assert {k: wandb_config["plan"][k] for k in expected} == expected


def test_a_run_without_loggers_still_trains_and_summarises(cli_in_process, tmp_path):
    """logger=none with the default callbacks (LR monitor included): no logs, a summary."""
    result = cli_in_process("logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=3")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and not (run_dir / "csv").exists()


def dir_state(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_a_second_run_into_a_live_dir_is_refused_and_touches_nothing(cli, tmp_path, data_dir):
    """Run A holds still at step 3 (it writes nothing meanwhile); B, started into A's dir
    with another seed, is refused in one line and leaves every file of A's as it was. Once
    A is killed (kill -9), its lock is gone with it: C may use the dir."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("LBTRAIN_RUN_ID", None)
    run = [
        "hydra.run.dir=shared",
        "logger=csv",
        "trainer.max_epochs=1",
        f"paths.data_dir={data_dir}",
    ]
    hold = ["+callbacks.hold._target_=helpers.HoldAtStep", "+callbacks.hold.step=3"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    a = subprocess.Popen([sys.executable, "-m", "lbtrain.run", *run, *hold, "seed=7"],
                         cwd=tmp_path, env=env, **quiet)  # fmt: skip
    shared = tmp_path / "shared"
    try:
        for _ in range(1800):  # a sync point: A is live and holds still
            if (shared / "held").exists() or a.poll() is not None:
                break
            time.sleep(0.1)
        assert a.poll() is None and (shared / "held").exists()
        before = dir_state(shared)
        b = cli(*run[:-1], "seed=8")
        assert b.returncode == 2, b.stderr
        assert b.stderr.strip() == (
            f"lbtrain: error: hydra.run.dir=shared: another run is live in this dir (pid "
            f"{a.pid}); wait for it to end, stop it (Ctrl-C pauses it), or pick a new dir"
        )
        assert dir_state(shared) == before  # not a byte of A's written, cut or added
    finally:
        a.kill()
        a.wait()
    c = cli(*run[:-1], "trainer.limit_train_batches=2")
    assert c.returncode == 0, c.stderr[-2000:]  # the dir held no results: C trains in it


def test_a_resume_that_would_change_what_the_run_was_is_refused(cli_in_process, tmp_path):
    """A finished batch-32 run resumed in place with batch_size=64 and more epochs: refused
    in one line naming the key, and the run's record stays as it was. More epochs alone are
    a resume, and config.yaml then says what ran: the longer budget, the same batch."""
    first = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/mine", "batch_size=32")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "mine"
    before = dir_state(run)
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    again = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=csv", "batch_size=64",
                           "hydra.run.dir=logs/mine", ckpt)  # fmt: skip
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("lbtrain: error: batch_size=64 (the run: 32): a resume in logs/mine")
    assert "leave out hydra.run.dir" in line
    assert dir_state(run) == before
    longer = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=csv", "batch_size=32",
                            "hydra.run.dir=logs/mine", ckpt)  # fmt: skip
    assert longer.returncode == 0, longer.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["batch_size"], config["trainer"]["max_epochs"]) == (32, 3)
    assert json.loads((run / "summary.json").read_text())["global_step"] == 18


def test_a_diverged_run_stops_and_says_so(cli_in_process, tmp_path):
    """lr=1000: the loss is NaN within the first epoch. The run stops at the next check
    (every log_every_n_steps) instead of training its 375 steps, says at which step it
    diverged, and records it; with stop_on_divergence=false it trains on and records it."""
    run = ("optim.lr=1000", "trainer.max_epochs=3", "logger=csv")
    stopped = cli_in_process(*run, "hydra.run.dir=logs/stopped")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "stopped" / "summary.json").read_text())
    step = summary["diverged_at_step"]
    assert 0 < step <= summary["global_step"] <= step + 25 < 375
    said = stopped.stdout + stopped.stderr
    assert f"lbtrain: diverged at step {step}: train loss nan; stopping" in said
    assert "final val/acc" not in said
    on = cli_in_process(*run, "stop_on_divergence=false", "hydra.run.dir=logs/on")
    assert on.returncode == 0, on.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "on" / "summary.json").read_text())
    assert (summary["diverged_at_step"], summary["global_step"]) == (step, 375)


def test_a_run_dir_is_never_resumed_from_another_runs_checkpoint(cli_in_process, tmp_path):
    """A finished 3-epoch run B, resumed in place from run A's 2-epoch checkpoint (the same
    config): refused before anything is written, as it would cut B's log at A's step and
    write A's continuation over B's summary. A dir holding a run but no checkpoint (killed in
    its first epoch) is not offered a checkpoint that does not exist."""
    a = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/a")
    b = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=csv", "hydra.run.dir=logs/b")
    assert a.returncode == b.returncode == 0, (a.stderr + b.stderr)[-3000:]
    run_b = tmp_path / "logs" / "b"
    before = dir_state(run_b)
    ckpt = tmp_path / "logs" / "a" / "checkpoints" / "last.ckpt"
    again = cli_in_process(*TINY[1:], "trainer.max_epochs=3", "logger=csv",
                           "hydra.run.dir=logs/b", f"ckpt_path={ckpt}")  # fmt: skip
    assert again.returncode == 2
    assert "leave out hydra.run.dir (a new dir)" in again.stderr, again.stderr[-2000:]
    assert dir_state(run_b) == before
    (run_b / "checkpoints" / "last.ckpt").unlink()
    (run_b / "summary.json").unlink()
    bare = cli_in_process(*TINY, "logger=csv", "hydra.run.dir=logs/b")
    assert bare.returncode == 2 and "it holds no checkpoint to resume from" in bare.stderr
    assert "last.ckpt" not in bare.stderr


def test_a_diverged_run_with_every_measurement_stops_and_says_so(cli_in_process, tmp_path):
    """callbacks=all at lr=1e6: the sharpness of NaN weights is NaN (ARPACK, given NaN
    products, raised and the run ended in a traceback), and the run stops as diverged."""
    run = cli_in_process("optim.lr=1e6", "trainer.max_epochs=2", "logger=csv", "callbacks=all",
                         "hydra.run.dir=logs/all")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "all" / "summary.json").read_text())
    assert 0 < summary["diverged_at_step"] <= summary["global_step"] < 250
    assert math.isnan(summary["sharpness/lambda_max"])
