"""DDP under Hydra multirun, on CPU over gloo: one job per sweep point, every rank on it."""

import json
import re

import pytest

pytestmark = pytest.mark.xdist_group("ddp")  # two processes per job: keep DDP tests apart
DONE = re.compile(r"rank (\d) of (\d) done, config (\w+)")


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_multirun_ddp_runs_exactly_one_job_per_sweep_point(cli, tmp_path, strategy):
    result = cli(
        "-m", "batch_size=32,64", f"trainer={strategy}", "trainer.accelerator=cpu",
        "trainer.devices=2", "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()  # no stray sweep dirs
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert not (tmp_path / "logs" / "runs").exists()
    for job, batch in (("0", 32), ("1", 64)):
        job_dir = sweep / job
        assert f"batch_size: {batch}\n" in (job_dir / "config.yaml").read_text()
        rank0 = (job_dir / "run.log").read_text()
        assert f"batch {batch} = 2 devices x {batch // 2}" in rank0  # world size 2
        ((rank, world, config),) = DONE.findall(rank0)
        assert (rank, world) == ("0", "2")
        if strategy == "ddp":  # the re-launched rank 1 ran this job's config, in this job's dir
            ((rank, world, rank1_config),) = DONE.findall((job_dir / "rank1.log").read_text())
            assert (rank, world, rank1_config) == ("1", "2", config)
        assert json.loads((job_dir / "summary.json").read_text())["global_step"] == 3
