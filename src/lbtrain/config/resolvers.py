"""OmegaConf resolvers the configs use; registered on any import of lbtrain."""

import hashlib
import netrc
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf


def run_id() -> str:
    """`<date>_<time>_<random>`: names a run's or a sweep's directory.

    The random part keeps two runs started in the same second apart. The id is fixed for the
    process on first use and handed down through the environment, so the processes a
    launcher starts for one sweep (joblib workers, submitit jobs, which re-resolve
    `hydra.sweep.dir` themselves) all land in the same sweep directory.
    """
    if "LBTRAIN_RUN_ID" not in os.environ:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        os.environ["LBTRAIN_RUN_ID"] = f"{stamp}_{secrets.token_hex(3)}"
    return os.environ["LBTRAIN_RUN_ID"]


def wandb_mode() -> str:
    """`WANDB_MODE` if set; else online when an API key is configured; else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return "online" if netrc.netrc().authenticators(host) else "offline"
    except (FileNotFoundError, netrc.NetrcParseError):
        return "offline"


def wandb_id(run_dir: str) -> str:
    """Derived from the run directory: a requeued job resumes the same W&B run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def job_name() -> str:
    """The job's overrides, e.g. `batch_size=4096,recipe=lb_lr` (`default` without any)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.override_dirname or "default"


def sweep_name() -> str | None:
    """The sweep's directory name, shared by all its jobs; None for a single run.

    An extra DDP rank runs its job as a single run (distributed.py); the job's rank 0 hands
    it the sweep's name in LBTRAIN_SWEEP_NAME, so every rank resolves the same config."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return Path(hydra.sweep.dir).name
    return os.environ.get("LBTRAIN_SWEEP_NAME") or None


def register() -> None:
    # use_cache: every reference to ${lbtrain.run_id:} in one config sees the same value
    OmegaConf.register_new_resolver("lbtrain.run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("lbtrain.wandb_mode", wandb_mode, replace=True)
    OmegaConf.register_new_resolver("lbtrain.isatty", lambda: sys.stdout.isatty(), replace=True)
    OmegaConf.register_new_resolver("lbtrain.wandb_id", wandb_id, replace=True)
    OmegaConf.register_new_resolver("lbtrain.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("lbtrain.sweep_name", sweep_name, replace=True)

    # the optimizer steps that take `samples` samples at `batch` (a branch's length); -1 for
    # what is no number of samples: config.validate refuses it in one line (branch.samples)
    def steps_for(samples, batch):
        numbers = all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                      for v in (samples, batch))  # fmt: skip
        return -(-samples // batch) if numbers else -1

    OmegaConf.register_new_resolver("lbtrain.steps_for", steps_for, replace=True)
