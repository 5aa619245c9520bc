"""Table 1: one row per configuration, mean +- std over its seeds, each row's gap to the SB
row of its experiment, and the measurements the runs switched on."""

import math

import pandas as pd

from lbtrain.report.runs import Run, _flatten, recipe_config, row_names


def _number(value: float, digits: int) -> str:
    """`digits` decimals where they show at least two significant digits (96.63, 0.160);
    below that three significant ones, so 0.00043 does not read as 0.000."""
    if value == 0 or abs(value) >= 10 ** (1 - digits):
        return f"{value:.{digits}f}"
    return f"{value:.3g}"


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    s = pd.Series(values, dtype=float).dropna() * scale
    if s.empty:
        return "-"
    if len(s) == 1:
        return _number(s.iloc[0], digits)
    return f"{_number(s.mean(), digits)} +- {_number(s.std(ddof=1), digits)}"


def best_val_acc(run: Run) -> float:
    return run.metrics.get("val/acc", pd.Series(dtype=float)).max()


# What a Table 1 column changes; the rest of the config says which SB a row compares with
RECIPE_KEYS = ("batch_size", "large_batch_size", "lr_scaling", "ghost_batch_size", "regime",
               "regime_multiplier")  # fmt: skip


def recipe_keys(run: Run) -> set[str]:
    """The keys a run's recipe sets (recipe/<name>.yaml, lbtrain's or in the user's config
    dirs), e.g. LARS's optimizer and LR: a row that differs from SB only in those compares
    with that SB."""
    return {*RECIPE_KEYS, *_flatten(recipe_config(run.choices.get("recipe"), run.config_dirs))}


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


DIVERGED, DIVERGED_AT = "diverged", "diverged at step"  # columns where some run diverged
ACCURACY = ("val acc % (final)", "val acc % (best)")


def table(runs: list[Run]) -> pd.DataFrame:
    """One row per configuration, mean +- std over its seeds (finished runs only). Each row's
    gap is to the SB row of the same experiment (equal but for the recipe's keys), else to
    that experiment's smallest batch. A diverged run has no result: its row's numbers are
    its other seeds', DIVERGED counts it and DIVERGED_AT gives its step; a row whose seeds
    all diverged has NaN accuracy and the steps its runs made."""
    done = sorted((r for r in runs if r.summary), key=lambda r: r.order)
    groups: dict[tuple, list[Run]] = {}
    for run in done:
        groups.setdefault(run.identity, []).append(run)
    if not groups:
        return pd.DataFrame()
    names = row_names(runs)  # as the figures and the unfinished list name them

    def counted(group: list[Run]) -> list[Run]:
        return [r for r in group if r.diverged_at_step is None]

    def mean_acc(group: list[Run]) -> float:
        return pd.Series([r.summary["val/acc"] for r in counted(group)], dtype=float).mean() * 100

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
        kept = counted(group)
        steps = [r.summary["global_step"] for r in kept or group]  # all diverged: theirs
        diverged = [str(r.diverged_at_step) for r in group if r.diverged_at_step is not None]
        ref = reference(key)
        gap = mean_acc(group) - mean_acc(ref) if ref else math.nan
        row = {
            "run": names[key],
            "batch size": group[0].config["batch_size"],
            "seeds": len(group),
            DIVERGED: len(diverged),
            DIVERGED_AT: ", ".join(diverged),
            "val acc % (final)": _mean_std([r.summary["val/acc"] for r in kept], 100),
            "val acc % (best)": _mean_std([best_val_acc(r) for r in kept], 100),
            "gap to SB (points)": "-" if math.isnan(gap) else f"{gap:+.2f}",
            "optimizer steps": int(pd.Series(steps).mean()),
            "weight distance": _mean_std([r.summary.get("weight_distance") for r in kept]),
            "diffusion slope": _mean_std([r.summary.get("diffusion_slope") for r in kept]),
            **{
                column: _mean_std([r.summary.get(key) for r in kept], digits=digits)
                for column, (key, digits) in MEASURED_COLUMNS.items()
            },
        }
        if not kept:  # no accuracy: NaN in table.csv, "diverged at step N" in table.md
            row.update(dict.fromkeys(ACCURACY, math.nan))
        rows.append(row)
    df = pd.DataFrame(rows)
    unmeasured = [c for c in MEASURED_COLUMNS if (df[c] == "-").all()]
    if not df[DIVERGED].any():
        unmeasured += [DIVERGED, DIVERGED_AT]
    return df.drop(columns=unmeasured)  # measurements no run of this report switched on


WIDTH = 100  # table.md reads in a 100-column terminal
TABLE1_COLUMNS = ("batch size", "seeds", DIVERGED, "val acc % (final)", "val acc % (best)",
                  "gap to SB (points)", "optimizer steps")  # fmt: skip
# table.md's header of a column and what the legend under its table says of it; table.csv keeps
# the full names. A column not named here keeps its full name in table.md too.
HEADERS = {
    "batch size": ("B", "global batch size"),
    DIVERGED: ("diverged", "seeds whose training loss went non-finite, left out of the means"),
    "val acc % (final)": ("final acc %", "validation accuracy at the end"),
    "val acc % (best)": ("best acc %", "at its best epoch"),
    "gap to SB (points)": ("vs SB", "final acc minus its SB row's, in points"),
    "optimizer steps": ("steps", "optimizer steps"),
    "weight distance": ("w dist", "final ||w_t - w_0||"),
    "diffusion slope": ("diff slope", "slope of w dist against log t (Figure 2)"),
    "samples processed": ("samples", "training examples drawn"),
    "train time (s)": ("time (s)", "training wall time"),
    "angular slope": ("ang slope", "the same for angle(w_t, w_0), BatchNorm-fed weights"),
    "final sharpness": ("sharpness", "final lambda_max (Adam: of P^-1 H)"),
    "final sharpness / threshold": ("sharp/edge", "final sharpness / its edge of stability"),
    "batch sharpness / threshold": ("batch/edge", "batch sharpness / its edge, last half's mean"),
    "final B_simple": ("B_simple", "final gradient noise scale"),
}


def markdown(df: pd.DataFrame) -> list[str]:
    """table.md's lines: Table 1, then the measurements, mean +- std over seeds, each in as
    many tables (each with the run column) as keep every line within WIDTH."""
    df = _diverged_shown(df)
    paper = [c for c in df.columns if c in TABLE1_COLUMNS]
    measured = [c for c in df.columns if c not in ("run", *TABLE1_COLUMNS)]
    return [
        "## Table 1: validation accuracy (%) and steps, mean +- std over seeds", "",
        *_tables(df, paper),
        "## Measurements at the end of training, mean +- std over seeds", "",
        *_tables(df, measured),
    ]  # fmt: skip


def _diverged_shown(df: pd.DataFrame) -> pd.DataFrame:
    """table.md's cells for divergence: "1 of 3" diverged, and where every seed diverged,
    "diverged at step 21" (or "diverged (steps 21, 40)") for the final accuracy and
    "diverged" for the best, which keeps Table 1 within WIDTH."""
    if DIVERGED not in df:
        return df
    shown = df.drop(columns=DIVERGED_AT).astype({column: object for column in ACCURACY})
    count = zip(df[DIVERGED], df["seeds"], strict=True)
    shown[DIVERGED] = [f"{d} of {n}" if d else "-" for d, n in count]
    every = df[DIVERGED] == df["seeds"]
    notes = [f"diverged (steps {at})" if "," in at else f"diverged at step {at}"
             for at in df.loc[every, DIVERGED_AT]]  # fmt: skip
    final, best = ACCURACY
    shown.loc[every, final] = notes
    shown.loc[every, best] = "diverged"
    return shown


def _tables(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns in order, a new table (with its own legend) where the next would be too wide."""
    chunks: list[list[str]] = [[]]
    for column in columns:
        if chunks[-1] and len(_render(df, [*chunks[-1], column])[0]) > WIDTH:
            chunks.append([])
        chunks[-1].append(column)
    lines = []
    for chunk in chunks:
        meanings = [f"{HEADERS[c][0]}: {HEADERS[c][1]}" for c in chunk if c in HEADERS]
        lines += [*_render(df, chunk), "", *_legend(meanings), ""]
    return lines


def _render(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """A markdown table as wide as its cells: run names left-aligned, numbers right-aligned."""
    header = ["run", *(HEADERS.get(c, (c,))[0] for c in columns)]
    rows = [header, *([str(v) for v in row] for row in df[["run", *columns]].values)]
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))
        return "| " + " | ".join([cells[0].ljust(widths[0]), *rest]) + " |"

    rule = "|:" + "-" * (widths[0] + 1) + "|" + "".join("-" * (w + 1) + ":|" for w in widths[1:])
    return [line(header), rule, *map(line, rows[1:])]


def _legend(meanings: list[str]) -> list[str]:
    """`header: meaning` entries joined by "; ", each line within WIDTH, no entry broken."""
    lines: list[str] = []
    for meaning in meanings:
        if lines and len(lines[-1]) + len(meaning) + 2 < WIDTH:  # < : room for a closing ";"
            lines[-1] += f"; {meaning}"
        else:
            lines[-1:] = [f"{lines[-1]};", meaning] if lines else [meaning]
    return lines
