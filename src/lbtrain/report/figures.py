"""The paper's figures from runs' logged series: weight distance and angular distance
against log t (Figure 2), validation error against epoch (Figures 1 and 3); and the edge of
stability: sharpness and batch sharpness against their optimizer's threshold (dashed)."""

import math
from pathlib import Path

import numpy as np

from lbtrain.report.runs import Run, row_names, warn

FEW_POINTS = 20  # a series with fewer is drawn with markers: a single measurement shows
STEPS = "optimizer step t (log scale)"  # the x axis of every figure but val_error
NEAR = 2.0  # a threshold up to this many times the data's height above its bottom is on the axis


def pyplot():
    """matplotlib's pyplot on its file-only backend (no display: clusters, CI, notebooks'
    kernels alike), imported when a figure is drawn, not with the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(
    runs: list[Run],
    out: Path,
    column: str,
    labels: dict[str, str],
    curve=None,
    dashed: str | None = None,
    optional: bool = False,
) -> Path | None:
    """One line per run of `curve(metrics rows with column) -> (x, y)` (default: the column
    against the step), one colour and one legend entry per recipe / configuration, log-x
    axis; where the rows have the column `dashed`, a dashed line of it in the run's colour
    (a threshold, `_thresholds`). Without runs that logged `column` no figure is drawn, and
    said so unless the measurement is `optional`."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    bounds = []  # (x, y, colour, row name) of each run's threshold
    diverged = []  # the curves of diverged runs
    names = row_names(runs)
    for run in sorted(runs, key=lambda r: r.order):
        if column not in run.metrics:
            continue
        rows = run.logged(column)
        x, y = _finite(*(curve or _by_step(column))(rows))
        name = names[run.identity]
        label = name if name not in colours else None
        marker = "o" if len(x) < FEW_POINTS else None
        (line,) = ax.plot(x, y, lw=1.2, alpha=0.85, label=label, color=colours.get(name),
                          marker=marker, ms=4)  # fmt: skip
        colours.setdefault(name, line.get_color())
        if run.diverged_at_step is not None:
            line.set_linestyle(":")
            diverged.append(line)
        if dashed in rows:
            bounds.append((*_finite(*_by_step(dashed)(rows)), line.get_color(), name))
    if not colours:  # no run logged this series: no figure rather than a blank one
        pyplot().close(fig)
        if not optional:
            warn(f"no run logged {column}; {labels['file']} not drawn")
        return None
    ax.set_xscale("log")
    _fit_to_the_rest(ax, diverged)
    _thresholds(ax, bounds)
    _log_ticks(ax)
    ax.set(xlabel=labels.get("x", STEPS), ylabel=labels["y"], title=labels["title"])
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: long run labels (a user's own experiments) never cover the curves
    ax.legend(title="run", fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return save(fig, out / labels["file"], bbox_inches="tight")


def save(fig, path: Path, **options) -> Path:
    """The figure at 120 dpi, then closed."""
    fig.savefig(path, dpi=120, **options)
    pyplot().close(fig)
    return path


def log_log(*axes) -> None:
    """The batch-size figures' axes: log-log, a grid at every tick, a small legend."""
    for ax in axes:
        ax.set(xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _by_step(column: str):
    return lambda rows: (rows["step"], rows[column])


def _finite(x, y) -> tuple:
    """The points of a curve that have a value: inf (an overflow as a run diverges) and NaN
    dropped, so they neither break the line nor stretch the axis."""
    keep = np.isfinite(np.asarray(x, dtype=float)) & np.isfinite(np.asarray(y, dtype=float))
    return x[keep], y[keep]


def _fit_to_the_rest(ax, diverged: list) -> None:
    """The axis fitted to the curves of the runs that did not diverge: a diverging run's
    weight distance reaches 1e19 before its loss is NaN, and would flatten every other curve
    at 0. Its curve, dotted, runs off the axis; the legend says so."""
    if not diverged:
        return
    rest = [line for line in ax.get_lines() if line not in diverged and len(line.get_xdata())]
    note = "dotted: a diverged run, until it diverged (may leave the axis)"
    ax.plot([], [], ls=":", c="0.4", label=note)
    if not rest:
        return  # every run diverged: the axis is fitted to them
    ax.set_xlim(ax.get_xlim())  # the x-axis spans every run
    for line in diverged:
        line.set_visible(False)
    ax.relim(visible_only=True)
    ax.autoscale_view(scalex=False)
    ax.set_ylim(ax.get_ylim())
    for line in diverged:
        line.set_visible(True)


def _thresholds(ax, bounds: list[tuple]) -> None:
    """Each run's threshold dashed in its colour, on a y-axis fitted to the data. A threshold
    within NEAR times the data's height widens the axis to take it in; one further up (2/lr =
    7600 over sharpness near 1) would flatten every curve at 0, so the axis ends at the data and
    a note at its top edge gives the threshold's value there. A log y-axis would show both, but
    squeezes the data's own rise into a sliver: the rise towards the edge is what one reads."""
    bottom, top = ax.get_ylim()  # autoscaled to the data alone
    reach, margin = bottom + NEAR * (top - bottom), 0.05 * (top - bottom)
    for x, y, colour, _ in bounds:
        ax.plot(x, y, lw=1, ls="--", color=colour, marker="_" if len(x) < FEW_POINTS else None,
                ms=12, scalex=False, scaley=False)  # fmt: skip
        if y.max() <= reach:
            bottom, top = min(bottom, y.min() - margin), max(top, y.max() + margin)
    above: dict[str, list[tuple[str, str]]] = {}  # the values above the axis: the runs there
    for _, y, colour, name in bounds:
        if (y > top).any():
            above.setdefault(_span(y[y > top]), []).append((name, colour))
    ax.set_ylim(bottom, top + 0.09 * len(above) * (top - bottom))  # the notes cover no data
    for k, (value, runs) in enumerate(above.items()):
        note = f"\u2191 dashed threshold above the axis: {value} ({', '.join(n for n, _ in runs)})"
        colour = runs[0][1] if len(runs) == 1 else "dimgray"
        ax.text(0.01, 0.98 - 0.07 * k, note, transform=ax.transAxes, va="top", fontsize=8,
                color=colour)  # fmt: skip


def _span(values) -> str:
    """7,600; 950 to 9,500 (a threshold that rises as the LR decays); 38.5."""
    low, high = (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in (values.min(), values.max()))
    return low if low == high else f"{low} to {high}"


def _compact(value: float) -> str:
    """A tick's label: 20, 500, 2k, 10k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_ticks(ax) -> None:
    """x ticks that never crowd: every 1..9 of a decade while the axis spans under one, 1-2-5
    up to three decades, decades beyond; labels compact (300, 2k, 50k), minor ticks bare."""
    import matplotlib.ticker as ticker

    low, high = ax.get_xlim()
    decades = math.log10(high / low)
    subs = range(1, 10) if decades < 1 else (1, 2, 5) if decades < 3 else (1,)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _compact(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def plot_weight_distance(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "y": r"$\|w_t - w_0\|_2$ (all trainable parameters)",
        "title": "Distance of the weights from initialization (Hoffer et al., Fig. 2)",
        "file": "weight_distance.png",
    }
    return _plot(runs, out, "weight_distance", labels)


def plot_angular_distance(runs: list[Run], out: Path) -> Path | None:
    """Figure 2 without the norm effect: angle(w_t, w_0) over the BatchNorm-fed weights."""
    labels = {
        "y": r"angle$(w_t, w_0)$, radians (BatchNorm-fed weights)",
        "title": "Angular distance from initialization (Figure 2 without the norm)",
        "file": "angular_distance.png",
    }
    return _plot(runs, out, "angular_distance", labels)


def plot_val_error(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "x": "epoch (log scale)",
        "y": "validation error (%)",
        "title": "Validation error during training (Hoffer et al., Figs. 1 and 3)",
        "file": "val_error.png",
    }
    return _plot(runs, out, "val/acc", labels, lambda m: (m["epoch"] + 1, 100 * (1 - m["val/acc"])))


def plot_sharpness(runs: list[Run], out: Path) -> Path | None:
    """lambda_max, or for Adam the preconditioned sharpness, with the threshold it is held
    to (Cohen et al.)."""
    labels = {
        "y": r"$\lambda_{max}(H)$; Adam: $\lambda_{max}(P^{-1}H)$",
        "title": "Sharpness and its edge of stability (dashed: 2/lr, 2(1+beta)/lr, 38/lr)",
        "file": "sharpness.png",
    }

    def curve(m):  # Adam's runs log the preconditioned sharpness, which the threshold bounds
        return m["step"], m.get("sharpness/preconditioned", m["sharpness/lambda_max"])

    return _plot(runs, out, "sharpness/lambda_max", labels, curve, "sharpness/threshold",
                 optional=True)  # fmt: skip


def plot_batch_sharpness(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "y": r"$g_B^T H_B g_B / |g_B|^2$ (the step's own batch)",
        "title": "Batch sharpness and its edge of stability (dashed)",
        "file": "batch_sharpness.png",
    }
    return _plot(runs, out, "batch_sharpness", labels, dashed="batch_sharpness/threshold",
                 optional=True)  # fmt: skip
