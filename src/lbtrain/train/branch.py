"""Branches (Merrill et al. 2025, "Critical Batch Size Revisited"): short runs that start
from a base run's checkpoint at step t, at a batch m times the base run's, to measure the
critical batch size at t (lbtrain/report/critical_batch.py, `branch_cbs`).

A branch takes from the checkpoint the weights (BatchNorm's running statistics included) and
the optimizer's state (momentum buffers, Adam's moments); its LR, batch and length are its
own config's (the LR rule of the branch experiment applies to its batch). Its data order and
random streams are its own seed's: the branches of one checkpoint at one seed are draws that
differ only in the batch, and the seeds give the spread. The checkpoint's position inside
its epoch does not carry over: a branch starts an epoch of its own order.
"""

from pathlib import Path

from omegaconf import OmegaConf

from lbtrain.launch.run_dir import checkpoints
from lbtrain.lightning_internals import uncompiled, uncompiled_key

FOLDER = "branch_points"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoints(run_dir) / FOLDER / f"step={step}.ckpt"


def saved_steps(run_dir: Path) -> list[int]:
    folder = checkpoints(run_dir) / FOLDER
    names = folder.glob("step=*.ckpt") if folder.is_dir() else []
    return sorted(int(p.stem.removeprefix("step=")) for p in names)


def check_branch(cfg) -> Path | None:
    """The checkpoint a branch starts from; None: the run is no branch. Refuses in one line a
    base run that is not there, a step it did not save, and a batch below the base run's."""
    b = cfg.branch
    if b.base_run is None:
        return None
    base = Path(b.base_run)
    if not (base / "config.yaml").is_file():
        raise ValueError(f"branch.base_run={base}: no lbtrain run there (no config.yaml)")
    path = checkpoint_path(base, b.step)
    if not path.is_file():
        steps = saved_steps(base)
        raise ValueError(
            f"branch.step={b.step}: the base run saved no checkpoint at that step; it saved "
            f"{steps or 'none'} (callbacks.branch_points.steps)"
        )
    base_config = OmegaConf.load(base / "config.yaml")
    for key in ("optim.optimizer", "optim.exclude_norm_and_bias"):
        theirs, ours = OmegaConf.select(base_config, key), OmegaConf.select(cfg, key)
        if theirs != ours:  # its optimizer state would not fit this run's optimizer
            raise ValueError(f"{key}={ours}: the base run {base} trained with {key}={theirs}; "
                              "a branch continues its optimizer")  # fmt: skip
    base_batch = base_config.batch_size
    if cfg.batch_size < base_batch:
        raise ValueError(
            f"batch_size={cfg.batch_size}: a branch's batch is m x the base run's "
            f"{base_batch}, m >= 1 (here m = {cfg.batch_size / base_batch:g})"
        )
    return path


def start_from(module, path: Path) -> None:
    """The module's weights from the checkpoint now; its optimizer state when the optimizer is
    built (Classifier.configure_optimizers)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = {uncompiled_key(k.removeprefix("model.")): v  # a compiled base run's too
             for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}  # fmt: skip
    model = uncompiled(module.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"branch.base_run: its checkpoint {path} holds another model "
                          f"({str(e).splitlines()[1].strip()[:160]})") from None  # fmt: skip
    module.optimizer_state = checkpoint["optimizer_states"][0]


def load_moments(optimizer, state: dict) -> None:
    """The checkpoint's per-parameter state (momentum buffers, Adam's moments and step) into
    `optimizer`, whose hyperparameters (lr, betas, weight decay) stay the branch's own."""
    own = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, hyper in zip(optimizer.param_groups, own, strict=True):
        for key in set(group) - set(hyper) - {"params"}:
            del group[key]  # e.g. the base run's initial_lr: the branch's scheduler sets its own
        group.update(hyper)
