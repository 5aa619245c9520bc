"""The critical batch size from a batch-size sweep's runs: steps and examples to a target
per configuration, the best configuration of each batch size, the fit S = S_min (1 + B_crit /
B) pooled and per seed, the noise scale on the way, its table, notes and figure (the
arithmetic: lbtrain/report/critical_batch.py)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lbtrain.report.critical_batch import (
    NOISE_COLUMNS,
    ScalingFit,
    Target,
    fit_critical_batch,
    noise_scale_until,
    steps_to_target,
)
from lbtrain.report.figures import log_log, pyplot, save
from lbtrain.report.runs import ReportError, Run, row_names


def run_steps_to_target(run: Run, target: Target) -> float:
    """The step at which a run first met the target (NaN: never, or never logged it). A
    diverged run's values end before it diverged (`Run.logged`): one that met the target
    before then met it there; one that had not, never does."""
    logged = run.logged(target.metric)
    if logged.empty:
        return math.nan
    return steps_to_target(logged["step"].to_numpy(), logged[target.metric].to_numpy(), target)


SEED_STEPS = "steps by seed"  # {seed: steps to target}, for the per-seed fits; not written


def critical_batch_table(runs: list[Run], target: Target) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration: the steps S and examples E = B S its seeds took to reach
    the target, and the mean noise scale measured until then. For each batch size the
    configuration with the fewest steps (all seeds reaching the target) is its best, as
    Shallue et al. tune the LR per batch size; runs that never reach it are listed."""
    if not any(target.metric in r.metrics for r in runs):
        seen = sorted({c for r in runs for c in r.metrics.columns if "/" in c})
        raise ReportError(
            f"--target {target.metric}: no run logged it; "
            f"choose one of: {', '.join(seen) or '(no metrics found)'}"
        )
    groups: dict[tuple, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.order):
        groups.setdefault(run.identity, []).append(run)
    names = row_names(runs)
    rows, never = [], []
    for key, group in groups.items():
        batch = group[0].config["batch_size"]
        reached, noise, by_seed = [], [], {}
        for run in group:
            s = run_steps_to_target(run, target)
            by_seed[run.config.get("seed")] = s
            if math.isnan(s):
                at = run.diverged_at_step
                why = f": diverged at step {at}" if at is not None else ""
                never.append(f"{run.path} ({names[key]}, seed {run.config.get('seed')}){why}")
            else:
                reached.append(s)
            noise.append(noise_scale_until(run.logged(*NOISE_COLUMNS), s))
        steps = pd.Series(reached, dtype=float)
        mean = steps.mean() if len(reached) == len(group) else math.nan  # every seed got there
        rows.append({
            "run": names[key], "batch size": batch, "seeds reached": f"{len(reached)}/{len(group)}",
            "steps to target": mean, "examples to target": batch * mean,
            "steps std": steps.std(ddof=1),  # NaN for fewer than two
            "B_simple until target": pd.Series(noise, dtype=float).mean(),
            SEED_STEPS: by_seed,
        })  # fmt: skip
    df = pd.DataFrame(rows).sort_values(["batch size", "run"], ignore_index=True)
    best = df.dropna(subset=["steps to target"]).groupby("batch size")["steps to target"].idxmin()
    df["best for its batch"] = df.index.isin(best.to_numpy())
    return df, never


def grid_edges(df: pd.DataFrame, runs: list[Run]) -> list[str]:
    """Batch sizes whose best configuration has the smallest or largest optim.lr tried at
    that size: the LR grid may not bracket their fastest LR (S(B) is then an upper bound)."""
    names = row_names(runs)
    lr_of = {names[r.identity]: r.config["optim"]["lr"] for r in runs}
    notes = []
    for batch, rows in df.groupby("batch size"):
        tried = sorted({lr_of[name] for name in rows["run"]})
        best = rows[rows["best for its batch"]]
        if len(tried) > 2 and len(best) and lr_of[best["run"].iloc[0]] in (tried[0], tried[-1]):
            notes.append(f"B={batch}: optim.lr={lr_of[best['run'].iloc[0]]} (tried {tried})")
    return notes


def critical_batch_summary(df: pd.DataFrame) -> tuple[ScalingFit | None, float, list[str]]:
    """The fit over each batch size's best configuration, the mean measured noise scale of
    those configurations, and the lines that say so."""
    best = df[df["best for its batch"]]
    noise = float(best["B_simple until target"].mean())  # NaN where no size has a best
    try:
        fit = fit_critical_batch(best["batch size"], best["steps to target"])
    except (ValueError, RuntimeError) as e:  # too few sizes reached it; no convergence
        return None, noise, [f"No fit of S = S_min (1 + B_crit / B): {e}."]
    largest = best["batch size"].max()

    def shown(b_crit: float) -> str:  # inf: S_min = 0, the steps still fall as 1/B at the end
        return f"{b_crit:.0f}" if math.isfinite(b_crit) else f"more than {largest}"

    lines = [
        f"Fit S = S_min (1 + B_crit / B) over the best configuration of each of {len(best)} "
        f"batch sizes: S_min = {fit.s_min:.1f} steps, E_min = {fit.e_min:.0f} examples, "
        + (f"**B_crit = E_min / S_min = {fit.b_crit:.0f}**." if math.isfinite(fit.b_crit) else
           f"so **B_crit lies above the largest batch size tried ({largest})**: the steps still "
           "halve as the batch doubles there; try larger batches.")
    ]  # fmt: skip
    if per_seed := seed_fits(best):
        values = ", ".join(f"{shown(b)} (seed {seed})" for seed, b in per_seed.items())
        lines.append(f"The same fit on each seed's own steps at those configurations: B_crit = "
                     f"{values}.")  # fmt: skip
    if not math.isnan(noise):
        ratio = f"= {fit.b_crit / noise:.2f}" if math.isfinite(fit.b_crit) else (
            f"> {largest / noise:.2f}")  # fmt: skip
        lines.append(
            "Gradient noise scale B_simple measured until the target, mean over those "
            f"configurations: **{noise:.0f}**; B_crit / B_simple {ratio}."
        )
    return fit, noise, lines


def seed_fits(best: pd.DataFrame) -> dict:
    """B_crit fitted to each seed's own steps (the seeds every best configuration ran, all of
    which reached the target): how far the pooled fit moves with the seeds drawn."""
    seeds = set.intersection(*(set(s) for s in best[SEED_STEPS])) if len(best) else set()
    fits = {}
    for seed in sorted(seeds, key=str):
        steps = [by_seed[seed] for by_seed in best[SEED_STEPS]]
        if not any(math.isnan(s) for s in steps):
            fits[seed] = fit_critical_batch(best["batch size"], steps).b_crit
    return fits if len(fits) > 1 else {}


def plot_critical_batch(
    df: pd.DataFrame, fit: ScalingFit | None, noise: float, target: Target, out: Path
) -> Path:
    """Shallue et al. / McCandlish et al.: steps to target against batch size (log-log)
    with perfect scaling and the fit; steps against examples."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.5))
    done = df.dropna(subset=["steps to target"])
    best = done[done["best for its batch"]].sort_values("batch size")
    others = done[~done["best for its batch"]]
    if len(others):
        left.scatter(others["batch size"], others["steps to target"], s=12, c="0.7",
                     label="other configurations")  # fmt: skip
    left.plot(best["batch size"], best["steps to target"], "o", c="C0", label="best per batch")
    missing = sorted(set(df["batch size"]) - set(done["batch size"]))
    if missing:  # no configuration of these batch sizes reached the target: marked, not dropped
        top = done["steps to target"].max() * 1.5 if len(done) else 1.0
        left.plot(missing, [top] * len(missing), "x", c="C3", ms=8,
                  label="never reached the target")  # fmt: skip
    if len(best) > 1:
        b = np.geomspace(best["batch size"].min(), best["batch size"].max(), 100)
        b0, s0 = best["batch size"].iloc[0], best["steps to target"].iloc[0]
        left.plot(b, s0 * b0 / b, "--", c="0.4", lw=1, label="perfect scaling (S ~ 1/B)")
        if fit and math.isfinite(fit.b_crit):  # else S_min = 0: perfect scaling's line
            left.plot(b, fit.steps(b), c="C1", label=f"fit, B_crit = {fit.b_crit:.0f}")
            left.axvline(fit.b_crit, c="C1", ls=":", lw=1)
            e = np.geomspace(best["examples to target"].min() / 1.5,
                             best["examples to target"].max() * 1.5, 200)  # fmt: skip
            # (S / S_min - 1)(E / E_min - 1) = 1, for E > E_min
            e = e[e > fit.e_min * 1.0001]
            right.plot(e, fit.s_min * (1 + 1 / (e / fit.e_min - 1)), c="C1", label="fit")
    if not math.isnan(noise):
        left.axvline(noise, c="C2", ls="-.", lw=1, label=f"measured B_simple = {noise:.0f}")
    right.plot(best["examples to target"], best["steps to target"], "o", c="C0",
               label="best per batch")  # fmt: skip
    for _, row in best.iterrows():
        right.annotate(f"{row['batch size']}", (row["examples to target"], row["steps to target"]),
                       fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    left.set(xlabel="batch size B", ylabel=f"steps to {target}",
             title="Steps to target (interpolated between validations)")  # fmt: skip
    right.set(xlabel=f"examples to {target}", ylabel="steps", title="Steps against examples")
    if best.empty:  # no batch size reached the target: no examples to put steps against
        right.text(0.5, 0.5, f"no batch size reached\n{target}", ha="center",
                   transform=right.transAxes)  # fmt: skip
        right.set(xticks=[], yticks=[])
    log_log(left, *([] if best.empty else [right]))
    fig.tight_layout()
    return save(fig, out / "critical_batch.png")


def validation_interval_note(runs: list[Run], target: Target, df: pd.DataFrame) -> str:
    """Steps to target are read between the steps the target metric was logged at: say how
    far apart, and flag an interval coarse against the fewest steps to target."""
    gaps = [np.diff(r.logged(target.metric)["step"].to_numpy()) for r in runs]
    widest = max((int(g.max()) for g in gaps if len(g)), default=0)
    note = (f"Steps to target are interpolated linearly between the steps {target.metric} was "
            f"logged at: up to {widest} steps apart in these runs.")  # fmt: skip
    fewest = df["steps to target"].min()
    if widest and not math.isnan(fewest) and widest > 0.1 * fewest:
        note += (f" That is coarse against the fewest steps to target ({fewest:.0f}): validate "
                 "more often (trainer.val_check_interval) for finer numbers.")  # fmt: skip
    return note


def write_critical_batch(runs: list[Run], target: Target, out: Path) -> list[str]:
    df, never = critical_batch_table(runs, target)
    fit, noise, summary = critical_batch_summary(df)
    df = df.drop(columns=SEED_STEPS)
    df.to_csv(out / "critical_batch.csv", index=False)
    shown = df.drop(columns="steps std").copy()
    shown["steps to target"] = [
        "never" if math.isnan(s) else f"{s:.0f}" + (f" +- {d:.0f}" if not math.isnan(d) else "")
        for s, d in zip(df["steps to target"], df["steps std"], strict=True)
    ]
    for column in ("examples to target", "B_simple until target"):
        shown[column] = ["-" if math.isnan(v) else f"{v:.0f}" for v in df[column]]
    shown["best for its batch"] = ["yes" if b else "" for b in df["best for its batch"]]
    lines = [f"Steps to target {target}:", "", shown.to_markdown(index=False), "", *summary]
    lines += ["", validation_interval_note(runs, target, df)]
    if edges := grid_edges(df, runs):
        lines += ["", "Best LR at the edge of the grid tried (the fastest LR may lie beyond):", "",
                  *(f"- {e}" for e in edges)]  # fmt: skip
    if never:
        lines += ["", "Runs that never reached the target:", "", *(f"- {n}" for n in never)]
    (out / "critical_batch.md").write_text("\n".join(lines) + "\n")
    plot_critical_batch(df, fit, noise, target, out)
    return lines
