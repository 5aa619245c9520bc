"""DDP under Hydra multirun, on CPU over gloo: one job per sweep point, every rank on it."""

import json
import re

import pytest

pytestmark = pytest.mark.xdist_group("ddp")  # two processes per job: keep DDP tests apart
DONE = re.compile(r"rank (\d) of (\d) done, config (\w+)")


LAUNCHES = {
    # the default loggers (CSV + W&B offline): the W&B group must resolve alike on each rank
    "ddp, basic launcher, default loggers": ("trainer=ddp", "logger=default"),
    "ddp_spawn, basic launcher": ("trainer=ddp_spawn",),
    "ddp, joblib launcher": ("trainer=ddp", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "submitit_local, 2 tasks": ("trainer=ddp", "hydra/launcher=local_tasks"),
}


@pytest.mark.parametrize("launch", LAUNCHES.values(), ids=LAUNCHES.keys())
def test_multirun_ddp_runs_exactly_one_job_per_sweep_point(cli, tmp_path, launch):
    result = cli(
        "-m", "batch_size=32,64", "trainer.accelerator=cpu", "trainer.devices=2",
        "logger=csv", *launch, "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()  # no stray sweep dirs
    extra = [".submitit"] if "hydra/launcher=local_tasks" in launch else []
    assert sorted(p.name for p in sweep.iterdir()) == [*extra, "0", "1", "multirun.yaml"]
    assert not (tmp_path / "logs" / "runs").exists()
    for job, batch in (("0", 32), ("1", 64)):
        job_dir = sweep / job
        assert f"batch_size: {batch}\n" in (job_dir / "config.yaml").read_text()
        logs = "".join(p.read_text() for p in sorted(job_dir.glob("*.log")))
        assert f"batch {batch} = 2 devices x {batch // 2}" in logs  # world size 2
        done = sorted(DONE.findall(logs))
        if "trainer=ddp_spawn" in launch:  # the spawned ranks run in-memory copies of it
            assert [(r, w) for r, w, _ in done] == [("0", "2")]
        else:  # rank 1, started by Lightning or by submitit, ran this job's config
            assert [(r, w) for r, w, _ in done] == [("0", "2"), ("1", "2")]
            assert done[0][2] == done[1][2]
        assert json.loads((job_dir / "summary.json").read_text())["global_step"] == 3
