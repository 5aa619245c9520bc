"""What DDP needs under Hydra: one job per sweep point, every rank on the job's config.

Lightning's `ddp` strategy starts local ranks 1..N-1 by re-running the command line. Under
`-m` that command line is the whole sweep, so every extra rank would start its own copy of
the sweep (with the Optuna sweeper, on different hyper-parameters), and under the joblib or
submitit launchers there is no usable command line at all. `install()` makes Lightning start
each extra rank as a single run of *this job*: `python -m lbtrain.run <the job's own
overrides> hydra.run.dir=<the job's dir>`, whatever launched the job.

Under the submitit launchers the processes already exist (one per task, made by submitit
locally or by SLURM): `SubmititEnvironment` tells Lightning their ranks, so the same
config runs as `submitit_local` with 2 CPU tasks or as `submitit_slurm` on 2 x 8 GPUs.
"""

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import ClusterEnvironment


def job_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    """The command and working dir for local rank `local_rank` of the current Hydra job."""
    hydra = HydraConfig.get()
    command = [
        sys.executable, "-m", "lbtrain.run", *hydra.overrides.task,
        *(o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath=")),
        f"hydra.run.dir='{hydra.runtime.output_dir}'",
        f"hydra.job.name=rank{local_rank}",  # its log file: <job dir>/rank<k>.log
        "hydra.output_subdir=null",  # rank 0 alone writes .hydra/
    ]  # fmt: skip
    return command, hydra.runtime.cwd


def install() -> None:
    """Route Lightning's re-launch of extra DDP ranks through `job_subprocess_cmd`."""
    from lbtrain.lightning_internals import replace_rank_command

    replace_rank_command(job_subprocess_cmd)


@contextmanager
def job_scope() -> Iterator[None]:
    """One multirun job's distributed state is its own. Its extra ranks inherit the sweep's
    name (a single run's config would resolve no W&B group). At the end the process group is torn
    down and the MASTER_PORT / WORLD_SIZE / ... that Lightning exported are unset, so the
    next job of the sweep starts its own group instead of joining the finished one."""
    from lbtrain.config.resolvers import sweep_name

    env = dict(os.environ)
    # the extra ranks this job starts resolve its W&B group from this (resolvers.sweep_name)
    os.environ["LBTRAIN_SWEEP_NAME"] = sweep_name() or ""
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(env)


def set_threads(threads: int | str) -> str:
    """Torch's CPU threads: `threads` (conf/train.yaml) where it is a number; for `auto`,
    OMP_NUM_THREADS where the user set it, else the CPUs SLURM gave this task
    (SLURM_CPUS_PER_TASK: jobs sharing a node do not oversubscribe it), else half the cores
    this process may use, at least one. Torch's own default, every core, stalls at each op's
    barrier when one other process takes a core (benchmarks/bench_threads.py). Returns the
    run log's line."""
    given, cpus = os.environ.get("OMP_NUM_THREADS"), os.environ.get("SLURM_CPUS_PER_TASK")
    cores = len(os.sched_getaffinity(0))
    if threads != "auto":
        count, source = int(threads), f"threads={threads}"
    elif given:
        count, source = int(given), f"OMP_NUM_THREADS={given}"
    elif cpus:
        count, source = int(cpus), f"SLURM_CPUS_PER_TASK={cpus}"
    else:
        count, source = max(1, cores // 2), f"threads=auto: half of {cores} cores"
    os.environ["OMP_NUM_THREADS"] = str(count)  # Lightning's DDP ranks and workers inherit it
    torch.set_num_threads(count)
    return f"torch threads: {count} ({source}; set threads=N to change)"


class SubmititEnvironment(ClusterEnvironment):
    """Ranks and rendezvous from submitit's job environment (local or SLURM executor)."""

    def __init__(self) -> None:
        import submitit

        self.job = submitit.JobEnvironment()

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR") or self.job.hostnames[0]

    @property
    def main_port(self) -> int:
        # the same on every task of the job, and different between jobs on one host
        digest = hashlib.sha1(self.job.job_id.encode()).digest()
        return int(os.environ.get("MASTER_PORT") or 15000 + int.from_bytes(digest[:4]) % 20000)

    @staticmethod
    def detect() -> bool:
        return "SUBMITIT_EXECUTOR" in os.environ

    def world_size(self) -> int:
        return self.job.num_tasks

    def set_world_size(self, size: int) -> None:
        pass  # fixed by submitit / SLURM

    def global_rank(self) -> int:
        return self.job.global_rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self.job.local_rank

    def node_rank(self) -> int:
        return self.job.node


def cluster_plugins() -> list[ClusterEnvironment]:
    """The cluster environment of a submitit job, if this is one (else Lightning detects)."""
    return [SubmititEnvironment()] if SubmititEnvironment.detect() else []
