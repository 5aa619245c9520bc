"""`python -m lbtrain.report PATH...`: Table 1 and the paper's figures from run directories.

    python -m lbtrain.report logs/multiruns/2026-11-25_10-00-00_ab12cd [--out DIR] [--target T]

PATH may be a run dir, a multirun dir, or any folder above them (a run found twice counts
once). Writes, into --out (default: PATH/report): table.md and table.csv (one row per
configuration, pooling only runs whose resolved configs differ in the seed alone; rows that
share a label name the keys that differ; final and best validation accuracy, mean +- std
over seeds, the gap to SB, optimizer steps, final weight distance, diffusion slope, and
where runs measured them the angular distance's slope, the final sharpness and noise
scale), weight_distance.png (Figure 2:
||w_t - w_0|| against log t), angular_distance.png (the same for the angle of the
BatchNorm-fed weights) and val_error.png (Figures 1 and 3: validation error against epoch).
Jobs that failed or did not finish are listed, never dropped silently.

With --target (e.g. val/acc=0.85), also critical_batch.md, .csv and .png: the steps and
examples each configuration took to reach it, the fit S = S_min (1 + B_crit / B) over each
batch size's best configuration, and the noise scale measured on the way
(`lbtrain/critical_batch.py`).
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lbtrain.critical_batch import (
    NOISE_COLUMNS,
    ScalingFit,
    Target,
    fit_critical_batch,
    noise_scale_until,
    steps_to_target,
)

TABLE1_ORDER = ["sb", "lb", "lb_lr", "lb_lr_gbn", "lb_lr_gbn_ra", "lars", "grow", "batch_aug"]
TABLE1_NAMES = {"sb": "SB", "lb": "LB", "lb_lr": "+LR", "lb_lr_gbn": "+GBN", "lb_lr_gbn_ra": "+RA",
                "lars": "LARS", "grow": "BS schedule", "batch_aug": "+GBN, BA x4"}  # fmt: skip


# Not part of what a run measures: where files go, what logs it, its seed (rows pool seeds)
# and the plan (derived from the rest; runs from before it existed lack it)
SUMMARY_KEYS = ("val/acc", "global_step")  # what every table row reads from a run's summary
NOT_IDENTITY = ("seed", "paths", "ckpt_path", "logger", "callbacks", "plan", "data.data_dir",
                "trainer.enable_progress_bar")  # fmt: skip


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value)
    return flat


@dataclass
class Run:
    path: Path
    config: dict
    choices: dict
    summary: dict | None  # None: the job failed or has not finished
    metrics: pd.DataFrame = field(repr=False)
    config_dirs: tuple[str, ...] = ()  # the user's config dirs the run was composed from

    @property
    def label(self) -> str:
        recipe = self.choices.get("recipe")
        if recipe and recipe != "None":
            return TABLE1_NAMES.get(recipe, recipe)
        c = self.config
        parts = [f"B={c['batch_size']}"]
        if c.get("lr_scaling", "none") != "none":
            parts.append(f"{c['lr_scaling']} lr")
        if c.get("ghost_batch_size"):
            parts.append(f"ghost {c['ghost_batch_size']}")
        if c.get("regime") == "adapted" or c.get("regime_multiplier", 1) != 1:
            parts.append("adapted regime" if c.get("regime") == "adapted" else "stretched")
        return ", ".join(parts)

    @cached_property
    def identity(self) -> tuple[tuple[str, str], ...]:
        """The resolved config without NOT_IDENTITY: runs pool into one row only when these
        are equal, i.e. when their configs differ in the seed alone."""
        flat = _flatten(self.config)
        skip = [(n, f"{n}.") for n in NOT_IDENTITY]
        return tuple(sorted((k, v) for k, v in flat.items() if not any(
            k == n or k.startswith(dotted) for n, dotted in skip)))  # fmt: skip

    def logged(self, *columns: str) -> pd.DataFrame:
        """The metrics rows that hold these columns, once per step: a run resumed from an
        older checkpoint logs some steps twice, and the last one counts."""
        if not set(columns) <= set(self.metrics.columns):
            return self.metrics.iloc[0:0]
        return self.metrics.dropna(subset=list(columns)).drop_duplicates("step", keep="last")

    @property
    def order(self) -> tuple:
        recipe = self.choices.get("recipe")
        rank = TABLE1_ORDER.index(recipe) if recipe in TABLE1_ORDER else len(TABLE1_ORDER)
        return (rank, self.config["batch_size"], self.label)


def row_names(runs: list[Run]) -> dict[tuple, str]:
    """A name per identity: the run's label, and where configs share a label, the keys
    whose values tell them apart, e.g. `SB [optim.lr=0.1]` and `SB [optim.lr=0.05]`."""
    by_label: dict[str, dict[tuple, Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, {}).setdefault(run.identity, run)
    names = {}
    for label, configs in by_label.items():
        dicts = {key: dict(key) for key in configs}
        keys = sorted({k for d in dicts.values() for k in d})
        differ = [k for k in keys if len({d.get(k) for d in dicts.values()}) > 1]
        for key, d in dicts.items():
            shown = ", ".join(f"{k}={json.loads(d[k]) if k in d else '-'}" for k in differ)
            names[key] = f"{label} [{shown}]" if differ else label
    return names


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run dir (one holding config.yaml and .hydra/) at or below the given paths."""
    found: dict[Path, None] = {}  # overlapping PATHs (a sweep and one of its jobs): once
    for root in paths:
        if not root.exists():
            raise SystemExit(f"lbtrain.report: error: {root} does not exist")
        candidates = [root] if (root / ".hydra").is_dir() else []
        candidates += sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
        for run_dir in candidates:
            if (run_dir / "config.yaml").exists():
                found.setdefault(run_dir.resolve())
    runs = [load_run(run_dir) for run_dir in found]
    if not runs:
        where = ", ".join(str(p) for p in paths)
        raise SystemExit(f"lbtrain.report: error: no lbtrain runs under {where}")
    return once_per_seed(runs)


def once_per_seed(runs: list[Run]) -> list[Run]:
    """Runs that repeat a (config, seed) (a resumed copy, a sweep rerun into the same logs)
    count once: the finished one, then the longest. A row's seeds are then distinct seeds."""
    by_seed: dict[tuple, list[Run]] = {}
    for run in runs:
        by_seed.setdefault((run.identity, run.config.get("seed")), []).append(run)
    kept = []
    for repeats in by_seed.values():
        best = max(repeats, key=lambda r: (r.summary is not None, _length(r)))
        kept.append(best)
        if len(repeats) > 1:
            others = ", ".join(str(r.path) for r in repeats if r is not best)
            print(f"lbtrain.report: one config and seed in {len(repeats)} runs, counted once: "
                  f"kept {best.path}, left out {others}", file=sys.stderr)  # fmt: skip
    return kept


def _length(run: Run) -> int:
    if run.summary:
        return run.summary.get("global_step", 0)
    return int(run.metrics["step"].max()) if "step" in run.metrics else 0


def load_run(run_dir: Path) -> Run:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    choices, config_dirs = {}, ()
    if hydra_file.exists():
        runtime = yaml.safe_load(hydra_file.read_text())["hydra"]["runtime"]
        choices = runtime["choices"]
        config_dirs = tuple(
            str(Path(runtime.get("cwd", ".")) / source["path"])  # a relative dir: from its cwd
            for source in runtime.get("config_sources", [])
            if source["schema"] == "file"
        )
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    if summary is not None and (lacking := [k for k in SUMMARY_KEYS if k not in summary]):
        print(f"lbtrain.report: {run_dir}: summary.json lacks {', '.join(lacking)}; "
              "listed as unfinished", file=sys.stderr)  # fmt: skip
        summary = None
    metrics = read_metrics(run_dir)
    choices = {k: str(v) for k, v in choices.items()}
    return Run(run_dir, config, choices, summary, metrics, config_dirs)


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's logged series, from what its loggers wrote: the CSV log, else TensorBoard's
    event files (read with tensorboard's own reader), one row per step and a column per
    series. Empty, and said in one line, for a run that kept neither (W&B only, no logger)."""
    csv = run_dir / "csv" / "metrics.csv"
    if csv.exists():
        return pd.read_csv(csv)
    events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    if events:
        return _read_tensorboard(run_dir / "tensorboard")
    print(f"lbtrain.report: {run_dir}: no CSV or TensorBoard log, so no curves (its summary "
          "counts); curves need logger=csv or logger=tensorboard",
          file=sys.stderr)  # fmt: skip
    return pd.DataFrame()


def _read_tensorboard(log_dir: Path) -> pd.DataFrame:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise SystemExit(
            f"lbtrain.report: error: {log_dir.parent} logged to TensorBoard: reading it needs the "
            "tensorboard package (pip install tensorboard)"
        ) from None
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: every value
    events.Reload()
    series = {
        tag: pd.Series({e.step: e.value for e in events.Scalars(tag)}, dtype=float)
        for tag in events.Tags()["scalars"]
    }
    table = pd.DataFrame(series).sort_index()
    return table.rename_axis("step").reset_index()


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    s = pd.Series(values, dtype=float).dropna() * scale
    if s.empty:
        return "-"
    if len(s) == 1:
        return f"{s.iloc[0]:.{digits}f}"
    return f"{s.mean():.{digits}f} +- {s.std(ddof=1):.{digits}f}"


def best_val_acc(run: Run) -> float:
    if "val/acc" not in run.metrics:
        return math.nan
    return float(run.metrics["val/acc"].max())


# What a Table 1 column changes; the rest of the config says which SB a row compares with
RECIPE_KEYS = ("batch_size", "large_batch_size", "lr_scaling", "ghost_batch_size", "regime",
               "regime_multiplier")  # fmt: skip


def recipe_keys(run: Run) -> set[str]:
    """The keys a run's recipe sets (recipe/<name>.yaml, lbtrain's or in the user's config
    dirs), e.g. LARS's optimizer and LR: a row that differs from SB only in those compares
    with that SB."""
    return _recipe_keys(run.choices.get("recipe"), run.config_dirs)


@cache
def _recipe_keys(name: str | None, config_dirs: tuple[str, ...]) -> frozenset[str]:
    folders = [files("lbtrain.conf") / "recipe", *(Path(d) / "recipe" for d in config_dirs)]
    path = next((f / f"{name}.yaml" for f in folders if name and (f / f"{name}.yaml").is_file()),
                None)  # fmt: skip
    recipe = (yaml.safe_load(path.read_text()) or {}) if path else {}
    return frozenset(RECIPE_KEYS) | frozenset(_flatten(recipe))


def _without(key: tuple, keys: set[str]) -> tuple:
    return tuple((k, v) for k, v in key if k not in keys)


# Columns of measurements a run may have switched on: the summary key, the digits shown
MEASURED_COLUMNS = {
    "samples processed": ("samples_seen", 0),
    "train time (s)": ("train_seconds", 1),
    "angular slope": ("angular_diffusion_slope", 3),
    "final sharpness": ("sharpness/lambda_max", 2),
    "final B_simple": ("noise_scale/b_simple", 0),
}


def table(runs: list[Run]) -> pd.DataFrame:
    """One row per configuration, mean +- std over its seeds (finished runs only). Each row's
    gap is to the SB row of the same experiment (equal but for the recipe's keys), else to
    that experiment's smallest batch."""
    done = sorted((r for r in runs if r.summary), key=lambda r: r.order)
    groups: dict[tuple, list[Run]] = {}
    for run in done:
        groups.setdefault(run.identity, []).append(run)
    if not groups:
        return pd.DataFrame()
    names = row_names(runs)  # as the figures and the unfinished list name them

    def mean_acc(group: list[Run]) -> float:
        return pd.Series([r.summary["val/acc"] for r in group]).mean() * 100

    def reference(key: tuple) -> list[Run] | None:
        def keys(k: tuple) -> set[str]:
            return recipe_keys(groups[k][0]) | recipe_keys(groups[key][0])

        same = [k for k in groups if _without(k, keys(k)) == _without(key, keys(k))]
        sb = [k for k in same if groups[k][0].label == "SB"]
        if len(sb) > 1:
            return None  # no single SB to compare with
        smallest = min(same, key=lambda k: groups[k][0].config["batch_size"])
        return groups[sb[0] if sb else smallest]

    rows = []
    for key, group in groups.items():
        acc = [r.summary["val/acc"] for r in group]
        ref = reference(key)
        rows.append(
            {
                "run": names[key],
                "batch size": group[0].config["batch_size"],
                "seeds": len(group),
                "val acc % (final)": _mean_std(acc, 100),
                "val acc % (best)": _mean_std([best_val_acc(r) for r in group], 100),
                "gap to SB (points)": f"{mean_acc(group) - mean_acc(ref):+.2f}" if ref else "-",
                "optimizer steps": int(pd.Series([r.summary["global_step"] for r in group]).mean()),
                "weight distance": _mean_std([r.summary.get("weight_distance") for r in group]),
                "diffusion slope": _mean_std([r.summary.get("diffusion_slope") for r in group]),
                **{
                    column: _mean_std([r.summary.get(key) for r in group], digits=digits)
                    for column, (key, digits) in MEASURED_COLUMNS.items()
                },
            }
        )
    df = pd.DataFrame(rows)
    unmeasured = [c for c in MEASURED_COLUMNS if (df[c] == "-").all()]
    return df.drop(columns=unmeasured)  # measurements no run of this report switched on


def _plot(runs: list[Run], out: Path, column: str, curve, labels: dict[str, str]) -> Path | None:
    """One line per run of `curve(metrics rows with column) -> (x, y)`, one colour and one
    legend entry per recipe / configuration, log-x axis."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    names = row_names(runs)
    for run in sorted(runs, key=lambda r: r.order):
        if column not in run.metrics:
            continue
        rows = run.logged(column)
        x, y = curve(rows)
        name = names[run.identity]
        label = name if name not in colours else None
        (line,) = ax.plot(x, y, lw=1.2, alpha=0.85, label=label, color=colours.get(name))
        colours.setdefault(name, line.get_color())
    if not colours:  # no run logged this series: no figure rather than a blank one
        plt.close(fig)
        print(f"lbtrain.report: no run logged {column}; {labels['file']} not drawn",
              file=sys.stderr)  # fmt: skip
        return None
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 1, 2, 10: not 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain if ax.get_xlim()[1] / ax.get_xlim()[0] < 30 else
                                 matplotlib.ticker.NullFormatter())  # fmt: skip
    ax.set(xlabel=labels["x"], ylabel=labels["y"], title=labels["title"])
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: long run labels (a user's own experiments) never cover the curves
    ax.legend(title="run", fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    path = out / labels["file"]
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_weight_distance(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"$\|w_t - w_0\|_2$ (all trainable parameters)",
        "title": "Distance of the weights from initialization (Hoffer et al., Fig. 2)",
        "file": "weight_distance.png",
    }
    return _plot(runs, out, "weight_distance", lambda m: (m["step"], m["weight_distance"]), labels)


def plot_angular_distance(runs: list[Run], out: Path) -> Path | None:
    """Figure 2 without the norm effect: angle(w_t, w_0) over the BatchNorm-fed weights."""
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"angle$(w_t, w_0)$, radians (BatchNorm-fed weights)",
        "title": "Angular distance from initialization (Figure 2 without the norm)",
        "file": "angular_distance.png",
    }
    column = "angular_distance"
    return _plot(runs, out, column, lambda m: (m["step"], m[column]), labels)


def plot_val_error(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "x": "epoch (log scale)",
        "y": "validation error (%)",
        "title": "Validation error during training (Hoffer et al., Figs. 1 and 3)",
        "file": "val_error.png",
    }
    return _plot(runs, out, "val/acc", lambda m: (m["epoch"] + 1, 100 * (1 - m["val/acc"])), labels)


def run_steps_to_target(run: Run, target: Target) -> float:
    """The step at which a run first met the target (NaN: never, or never logged it)."""
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
        raise SystemExit(
            f"lbtrain.report: error: --target {target.metric}: no run logged it; "
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
                never.append(f"{run.path} ({names[key]}, seed {run.config.get('seed')})")
            else:
                reached.append(s)
            noise.append(noise_scale_until(run.logged(*NOISE_COLUMNS), s))
        steps = pd.Series(reached, dtype=float)
        rows.append({
            "run": names[key], "batch size": batch, "seeds reached": f"{len(reached)}/{len(group)}",
            "steps to target": steps.mean() if len(reached) == len(group) else math.nan,
            "examples to target": batch * steps.mean() if len(reached) == len(group) else math.nan,
            "steps std": steps.std(ddof=1) if len(reached) > 1 else math.nan,
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
    noise = float(best["B_simple until target"].mean()) if len(best) else math.nan
    try:
        fit = fit_critical_batch(best["batch size"], best["steps to target"])
    except (ValueError, RuntimeError) as e:  # too few sizes reached it; no convergence
        return None, noise, [f"No fit of S = S_min (1 + B_crit / B): {e}."]
    lines = [
        f"Fit S = S_min (1 + B_crit / B) over the best configuration of each of {len(best)} "
        f"batch sizes: S_min = {fit.s_min:.1f} steps, E_min = {fit.e_min:.0f} examples, "
        f"**B_crit = E_min / S_min = {fit.b_crit:.0f}**."
    ]
    if per_seed := seed_fits(best):
        values = ", ".join(f"{b:.0f} (seed {seed})" for seed, b in per_seed.items())
        lines.append(f"The same fit on each seed's own steps at those configurations: B_crit = "
                     f"{values}.")  # fmt: skip
    if not math.isnan(noise):
        lines.append(
            f"Gradient noise scale B_simple measured until the target, mean over those "
            f"configurations: "
            f"**{noise:.0f}**; B_crit / B_simple = {fit.b_crit / noise:.2f}."
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
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
        if fit:
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
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "critical_batch.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    shown["examples to target"] = [
        "-" if math.isnan(e) else f"{e:.0f}" for e in df["examples to target"]
    ]
    shown["B_simple until target"] = [
        "-" if math.isnan(v) else f"{v:.0f}" for v in df["B_simple until target"]
    ]
    shown["best for its batch"] = ["yes" if b else "" for b in df["best for its batch"]]
    lines = [f"Steps to target {target}:", "", shown.to_markdown(index=False), "", *summary]
    lines += ["", validation_interval_note(runs, target, df)]
    edges = grid_edges(df, runs)
    if edges:
        lines += ["", "Best LR at the edge of the grid tried (the fastest LR may lie beyond):", "",
                  *(f"- {e}" for e in edges)]  # fmt: skip
    if never:
        lines += ["", "Runs that never reached the target:", "", *(f"- {n}" for n in never)]
    (out / "critical_batch.md").write_text("\n".join(lines) + "\n")
    plot_critical_batch(df, fit, noise, target, out)
    return lines


def write_report(paths: list[Path], out: Path, target: Target | None = None) -> pd.DataFrame:
    runs = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    df = table(runs)
    df.to_csv(out / "table.csv", index=False)
    unfinished = [r for r in runs if not r.summary]
    lines = [
        df.to_markdown(index=False, disable_numparse=True)
        if not df.empty
        else "(no finished runs)",
        "",
    ]
    if unfinished:
        lines += ["Failed or unfinished jobs (no complete summary.json):", ""]
        names = row_names(runs)
        lines += [f"- {r.path} ({names[r.identity]})" for r in unfinished]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    figures = [plot_weight_distance(runs, out), plot_angular_distance(runs, out)]
    figures.append(plot_val_error(runs, out))
    print("\n".join(lines))
    if target:
        print("\n".join(["", *write_critical_batch(runs, target, out)]))
        figures.append(out / "critical_batch.png")
    written = ", ".join(p.name for p in figures if p)
    print(f"\nwrote {out}/table.md, table.csv, {written}")
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lbtrain.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs or multirun dirs")
    parser.add_argument("--out", type=Path, help="output dir (default: first PATH/report)")
    parser.add_argument(
        "--target",
        help="e.g. val/acc=0.9 or train/loss<=0.3: steps to it per batch size, the critical "
        "batch size (critical_batch.md, .csv, .png)",
    )
    args = parser.parse_args(argv)
    try:
        target = Target.parse(args.target) if args.target else None
    except ValueError as e:
        parser.error(str(e))
    write_report(args.paths, args.out or args.paths[0] / "report", target)


if __name__ == "__main__":
    sys.exit(main())
