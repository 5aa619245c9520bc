"""`python -m lbtrain.report PATH...`: Table 1 and the paper's figures from run directories.

    python -m lbtrain.report logs/multiruns/2026-11-25_10-00-00_ab12cd [--out DIR]

PATH may be a run dir, a multirun dir, or any folder above them (a run found twice counts
once). Writes, into --out (default: PATH/report): table.md and table.csv (one row per
configuration, pooling only runs whose resolved configs differ in the seed alone; rows that
share a label name the keys that differ; final and best validation accuracy, mean +- std
over seeds, the gap to SB, optimizer steps, final weight distance, diffusion slope, and
the angular distance's slope where runs measured it), weight_distance.png (Figure 2:
||w_t - w_0|| against log t), angular_distance.png (the same for the angle of the
BatchNorm-fed weights) and val_error.png (Figures 1 and 3: validation error against epoch).
Jobs that failed or did not finish are listed, never dropped silently.
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

TABLE1_ORDER = ["sb", "lb", "lb_lr", "lb_lr_gbn", "lb_lr_gbn_ra"]
TABLE1_NAMES = {"sb": "SB", "lb": "LB", "lb_lr": "+LR", "lb_lr_gbn": "+GBN", "lb_lr_gbn_ra": "+RA"}


# Not part of what a run measures: where files go, what logs it, its seed (rows pool seeds)
# and the plan (derived from the rest; runs from before it existed lack it)
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
    return runs


def load_run(run_dir: Path) -> Run:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    choices = {}
    if hydra_file.exists():
        choices = yaml.safe_load(hydra_file.read_text())["hydra"]["runtime"]["choices"]
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    metrics_file = run_dir / "csv" / "metrics.csv"
    metrics = pd.read_csv(metrics_file) if metrics_file.exists() else pd.DataFrame()
    return Run(run_dir, config, {k: str(v) for k, v in choices.items()}, summary, metrics)


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


def _without_recipe(key: tuple) -> tuple:
    return tuple((k, v) for k, v in key if k not in RECIPE_KEYS)


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
        same = [k for k in groups if _without_recipe(k) == _without_recipe(key)]
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
                "angular slope": _mean_std(
                    [r.summary.get("angular_diffusion_slope") for r in group], digits=3
                ),
            }
        )
    df = pd.DataFrame(rows)
    return df if (df["angular slope"] != "-").any() else df.drop(columns="angular slope")


def _plot(runs: list[Run], out: Path, column: str, curve, labels: dict[str, str]) -> Path:
    """One line per run of `curve(metrics rows with column) -> (x, y)`, one colour and one
    legend entry per recipe / configuration, log-x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    names = row_names(runs)
    for run in sorted(runs, key=lambda r: r.order):
        if column not in run.metrics:
            continue
        # a run resumed from an older checkpoint logs some steps twice: the last one counts
        rows = run.metrics.dropna(subset=[column]).drop_duplicates("step", keep="last")
        x, y = curve(rows)
        name = names[run.identity]
        label = name if name not in colours else None
        (line,) = ax.plot(x, y, lw=1.2, alpha=0.85, label=label, color=colours.get(name))
        colours.setdefault(name, line.get_color())
    ax.set_xscale("log")
    ax.set(xlabel=labels["x"], ylabel=labels["y"], title=labels["title"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="run", fontsize=8)
    fig.tight_layout()
    path = out / labels["file"]
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_weight_distance(runs: list[Run], out: Path) -> Path:
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"$\|w_t - w_0\|_2$ (all trainable parameters)",
        "title": "Distance of the weights from initialization (Hoffer et al., Fig. 2)",
        "file": "weight_distance.png",
    }
    return _plot(runs, out, "weight_distance", lambda m: (m["step"], m["weight_distance"]), labels)


def plot_angular_distance(runs: list[Run], out: Path) -> Path | None:
    """Figure 2 without the norm effect: angle(w_t, w_0) over the BatchNorm-fed weights."""
    if not any("angular_distance" in r.metrics for r in runs):
        return None  # runs from before the measurement existed
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"angle$(w_t, w_0)$, radians (BatchNorm-fed weights)",
        "title": "Angular distance from initialization (Figure 2 without the norm)",
        "file": "angular_distance.png",
    }
    column = "angular_distance"
    return _plot(runs, out, column, lambda m: (m["step"], m[column]), labels)


def plot_val_error(runs: list[Run], out: Path) -> Path:
    labels = {
        "x": "epoch (log scale)",
        "y": "validation error (%)",
        "title": "Validation error during training (Hoffer et al., Figs. 1 and 3)",
        "file": "val_error.png",
    }
    return _plot(runs, out, "val/acc", lambda m: (m["epoch"] + 1, 100 * (1 - m["val/acc"])), labels)


def write_report(paths: list[Path], out: Path) -> pd.DataFrame:
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
        lines += ["Failed or unfinished jobs (no summary.json):", ""]
        names = row_names(runs)
        lines += [f"- {r.path} ({names[r.identity]})" for r in unfinished]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    figures = [plot_weight_distance(runs, out), plot_angular_distance(runs, out)]
    figures.append(plot_val_error(runs, out))
    print("\n".join(lines))
    written = ", ".join(p.name for p in figures if p)
    print(f"\nwrote {out}/table.md, table.csv, {written}")
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lbtrain.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs or multirun dirs")
    parser.add_argument("--out", type=Path, help="output dir (default: first PATH/report)")
    args = parser.parse_args(argv)
    write_report(args.paths, args.out or args.paths[0] / "report")


if __name__ == "__main__":
    sys.exit(main())
