"""What DDP needs under Hydra: one job per sweep point, every rank on the job's config.

Lightning's `ddp` strategy starts local ranks 1..N-1 by re-running the command line. Under
`-m` that command line is the whole sweep, so every extra rank would start its own copy of
the sweep (with the Optuna sweeper, on different hyper-parameters), and under the joblib or
submitit launchers there is no usable command line at all. `install()` makes Lightning start
each extra rank as a single run of *this job*: `python -m lbtrain.run <the job's own
overrides> hydra.run.dir=<the job's dir>`, whatever launched the job.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig


def job_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    """The command and working dir for local rank `local_rank` of the current Hydra job."""
    hydra = HydraConfig.get()
    command = [
        sys.executable, "-m", "lbtrain.run", *hydra.overrides.task,
        f"hydra.run.dir='{hydra.runtime.output_dir}'",
        f"hydra.job.name=rank{local_rank}",  # its log file: <job dir>/rank<k>.log
        "hydra.output_subdir=null",  # rank 0 alone writes .hydra/
    ]  # fmt: skip
    return command, hydra.runtime.cwd


def install() -> None:
    """Route Lightning's re-launch of extra DDP ranks through `job_subprocess_cmd`."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_subprocess_cmd


@contextmanager
def job_scope() -> Iterator[None]:
    """One multirun job's distributed state ends with the job: the process group is torn
    down and the MASTER_PORT / WORLD_SIZE / ... that Lightning exported are unset, so the
    next job of the sweep starts its own group instead of joining the finished one."""
    env = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(env)
