"""The critical batch size over training, from branch runs (lbtrain/train/branch.py): for each
base-run checkpoint, each branch batch's final val/loss per seed, the CBS of the seeds' mean
losses and of each seed's own, B_simple(t) of the base run beside it, the table and figure,
and the batch-size warmup that follows the CBS (`batch_schedule_points`)."""

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from lbtrain.report.critical_batch import branch_cbs, noise_scale_near
from lbtrain.report.figures import log_log, pyplot, save
from lbtrain.report.runs import Run, load_run, warn

LOSS = "val/loss"  # each branch's loss: validated once, after its last step


def branch_table(runs: list[Run], tolerance: float, bases: dict[str, Run | None]) -> pd.DataFrame:
    """One row per checkpoint of each base run: its step and samples, the CBS (seeds'
    mean losses), the per-seed CBS range, B_simple(t), and each batch's mean loss. `bases`
    gets each base run, read once (None: not there)."""
    by_point: dict[tuple[str, int], dict[int, dict[int, float]]] = {}
    for run in runs:
        branch = run.config.get("branch") or {}
        if branch.get("base_run") is None or not run.summary:
            continue
        losses = by_point.setdefault((branch["base_run"], branch["step"]), {})
        losses.setdefault(run.config["batch_size"], {})[run.config["seed"]] = run.summary[LOSS]
    rows = []
    for (base, step), losses in sorted(by_point.items()):
        if base not in bases:
            bases[base] = _base_run(Path(base))
        if (base_run := bases[base]) is None:
            continue
        base_batch = base_run.config["batch_size"]
        if base_batch not in losses:
            continue  # no m = 1 branch: nothing to compare with
        seeds = sorted(set.intersection(*(set(v) for v in losses.values())))
        if not seeds:
            continue  # no seed ran every batch of this checkpoint
        mean = {b: statistics.fmean(v[s] for s in seeds) for b, v in losses.items()}
        per_seed = [branch_cbs({b: v[s] for b, v in losses.items()}, base_batch, tolerance)
                    for s in seeds]  # fmt: skip
        rows.append({
            "base run": base, "step": step, "samples": step * base_batch,
            "CBS": branch_cbs(mean, base_batch, tolerance),
            "CBS per seed": "/".join(str(c) for c in per_seed), "seeds": len(seeds),
            "B_simple(t)": noise_scale_near(base_run.metrics, step),
            **{f"loss at {b}": mean[b] for b in sorted(mean)},
        })  # fmt: skip
    return pd.DataFrame(rows)


def _base_run(path: Path) -> Run | None:
    """The base run the branches name; None, and a line on stderr, if it is not there."""
    if not (path / "config.yaml").is_file():
        warn(f"no base run at {path} (moved or deleted?); its branches are left out of cbs_online")
        return None
    return load_run(path)


def warmup_points(table: pd.DataFrame, base_batch: int, num_train: int) -> list[list[int]]:
    """batch_schedule_points by Merrill et al.'s warmup rule: the batch doubles at the first
    epoch whose last checkpoint before it measured a CBS above twice the batch, once per
    epoch (the LR follows by the run's rule: x sqrt(2) under sqrt). The batch so stays at
    most half the measured CBS, and never shrinks."""
    points, batch = [], base_batch
    for epoch in range(math.ceil(table["samples"].max() / num_train) + 1):
        passed = table[table["samples"] <= epoch * num_train]
        if len(passed) and passed["CBS"].iloc[-1] > 2 * batch:
            batch *= 2
            points.append([epoch, batch])
    return points or [[0, base_batch]]


def plot_cbs(table: pd.DataFrame, out: Path) -> Path:
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    seeds = [[int(c) for c in s.split("/")] for s in table["CBS per seed"]]
    spread = np.array([[min(s), max(s)] for s in seeds])  # each checkpoint's per-seed range
    bars = [(table["CBS"] - spread[:, 0]).clip(0), (spread[:, 1] - table["CBS"]).clip(0)]
    label = "CBS by branching (seeds' mean loss; bars: per-seed range)"
    ax.errorbar(table["samples"], table["CBS"], yerr=bars, marker="o", capsize=3, label=label)
    ax.plot(table["samples"], table["B_simple(t)"], marker="s", ls="--",
            label="B_simple(t) of the base run (noise scale)")  # fmt: skip
    ax.set(xlabel="samples seen by the base run at the checkpoint", ylabel="batch size")
    ax.set(title="The critical batch size over training (branching)")
    log_log(ax)
    return save(fig, out / "cbs_online.png", bbox_inches="tight")


def write_online_cbs(runs: list[Run], out: Path, tolerance: float) -> list[str]:
    """cbs_online.md / .csv / .png and warmup_points.txt; the lines to print."""
    bases: dict[str, Run | None] = {}
    table = branch_table(runs, tolerance, bases)
    if table.empty:
        return []
    table.to_csv(out / "cbs_online.csv", index=False)
    base = bases[table["base run"].iloc[0]]
    # config.yaml's plan is written as training starts: the base run may still be training
    num_train = base.config["plan"]["steps_per_epoch"] * base.config["batch_size"]
    points = warmup_points(table, base.config["batch_size"], num_train)
    (out / "warmup_points.txt").write_text(str(points).replace(" ", "") + "\n")
    shown = table.drop(columns=["base run"]).to_markdown(index=False, floatfmt=".4g")
    lines = [
        f"The critical batch size by branching, tolerance {tolerance:g}: the largest branch "
        f"batch whose {LOSS} after the same samples is within {tolerance:.0%} of the m = 1 "
        "branch's (and every smaller one's too).", "", shown, "",
        f"batch_schedule_points={str(points).replace(' ', '')} (warmup_points.txt)",
    ]  # fmt: skip
    (out / "cbs_online.md").write_text("\n".join(lines) + "\n")
    plot_cbs(table, out)
    return lines
