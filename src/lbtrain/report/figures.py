"""The paper's figures from runs' logged series: weight distance and angular distance
against log t (Figure 2), validation error against epoch (Figures 1 and 3); and the edge of
stability: sharpness and batch sharpness against their optimizer's threshold (dashed)."""

import sys
from pathlib import Path

from lbtrain.report.runs import Run, row_names


def _plot(
    runs: list[Run],
    out: Path,
    column: str,
    curve,
    labels: dict[str, str],
    dashed=None,
    optional: bool = False,
) -> Path | None:
    """One line per run of `curve(metrics rows with column) -> (x, y)`, one colour and one
    legend entry per recipe / configuration, log-x axis; `dashed(rows) -> (x, y)`, where
    the rows have it, a dashed line of the run's colour (a threshold). Without runs that
    logged `column` no figure is drawn, and said so unless the measurement is `optional`."""
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
        if dashed and (bound := dashed(rows)) is not None:
            ax.plot(*bound, lw=1, ls="--", color=line.get_color())
    if not colours:  # no run logged this series: no figure rather than a blank one
        plt.close(fig)
        if not optional:
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


def _threshold(prefix: str):
    def bound(rows):
        column = f"{prefix}/threshold"
        return (rows["step"], rows[column]) if column in rows else None

    return bound


def plot_sharpness(runs: list[Run], out: Path) -> Path | None:
    """lambda_max, or for Adam the preconditioned sharpness, with the threshold it is held
    to (Cohen et al.)."""
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"$\lambda_{max}(H)$; Adam: $\lambda_{max}(P^{-1}H)$",
        "title": "Sharpness and its edge of stability (dashed: 2/lr, 2(1+beta)/lr, 38/lr)",
        "file": "sharpness.png",
    }

    def curve(m):
        bounded = "sharpness/preconditioned"
        return m["step"], m[bounded] if bounded in m else m["sharpness/lambda_max"]

    return _plot(runs, out, "sharpness/lambda_max", curve, labels, _threshold("sharpness"),
                 optional=True)  # fmt: skip


def plot_batch_sharpness(runs: list[Run], out: Path) -> Path | None:
    labels = {
        "x": "optimizer step t (log scale)",
        "y": r"$g_B^T H_B g_B / |g_B|^2$ (the step's own batch)",
        "title": "Batch sharpness and its edge of stability (dashed)",
        "file": "batch_sharpness.png",
    }
    column = "batch_sharpness"
    curve = lambda m: (m["step"], m[column])  # noqa: E731
    return _plot(runs, out, column, curve, labels, _threshold(column), optional=True)
