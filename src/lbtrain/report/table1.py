"""Table 1: one row per configuration, mean +- std over its seeds, each row's gap to the SB
row of its experiment, and the measurements the runs switched on."""

import math
from functools import cache

import pandas as pd

from lbtrain.report.runs import Run, _flatten, recipe_config, row_names


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
    return frozenset(RECIPE_KEYS) | frozenset(_flatten(recipe_config(name, config_dirs)))


def _without(key: tuple, keys: set[str]) -> tuple:
    return tuple((k, v) for k, v in key if k not in keys)


# Columns of measurements a run may have switched on: the summary key, the digits shown
MEASURED_COLUMNS = {
    "samples processed": ("samples_seen", 0),
    "train time (s)": ("train_seconds", 1),
    "angular slope": ("angular_diffusion_slope", 3),
    "final sharpness": ("sharpness/lambda_max", 2),
    "final sharpness / threshold": ("sharpness/stability_ratio", 3),
    "batch sharpness / threshold": ("batch_sharpness/stability_ratio_mean_last_half", 3),
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
