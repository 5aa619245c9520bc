"""`python -m lbtrain.report` (`__main__.py`): `write_report`, from its parts, one job each:
`runs` finds, loads and groups run dirs; `table1` makes the table; `figures` draws the
paper's figures; `critical` analyses a batch-size sweep. The notebook uses the names below."""

from pathlib import Path

import pandas as pd

from lbtrain.report.critical import write_critical_batch
from lbtrain.report.critical_batch import BRANCH_TOLERANCE, Target
from lbtrain.report.figures import (
    plot_angular_distance,
    plot_batch_sharpness,
    plot_sharpness,
    plot_val_error,
    plot_weight_distance,
)
from lbtrain.report.online import write_online_cbs
from lbtrain.report.runs import Run, find_runs, load_run, read_metrics, row_names
from lbtrain.report.table1 import markdown, table

__all__ = ["Run", "find_runs", "load_run", "plot_angular_distance", "plot_val_error",
           "plot_weight_distance", "read_metrics", "table", "write_report"]  # fmt: skip


def write_report(
    paths: list[Path],
    out: Path,
    target: Target | None = None,
    branch_tolerance: float = BRANCH_TOLERANCE,
) -> pd.DataFrame:
    runs = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    df = table(runs)
    df.to_csv(out / "table.csv", index=False)
    names = row_names(runs)
    unfinished = [r for r in runs if not r.summary]
    diverged = [r for r in runs if r.diverged_at_step is not None]
    lines = markdown(df) if not df.empty else ["(no finished runs)", ""]
    if diverged:
        lines += ["Diverged runs (training loss not finite; no accuracy, left out of the means):"]
        lines += ["", *(f"- {r.path} ({names[r.identity]}, seed {r.config.get('seed')}): diverged "
                        f"at step {r.diverged_at_step}" for r in diverged)]  # fmt: skip
    if unfinished:
        lines += [""] if lines[-1] else []  # after the diverged runs' list
        lines += ["Failed or unfinished jobs (no complete summary.json):", ""]
        lines += [f"- {r.path} ({names[r.identity]})" for r in unfinished]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    figures = [plot_weight_distance(runs, out), plot_angular_distance(runs, out)]
    figures.append(plot_val_error(runs, out))
    figures += [plot_sharpness(runs, out), plot_batch_sharpness(runs, out)]
    print("\n".join(lines))
    if target:
        print("\n".join(["", *write_critical_batch(runs, target, out)]))
        figures.append(out / "critical_batch.png")
    if branched := write_online_cbs(runs, out, branch_tolerance):
        print("\n".join(["", *branched]))
        figures.append(out / "cbs_online.png")
    written = ", ".join(p.name for p in figures if p)
    print(f"\nwrote {out}/table.md, table.csv, {written}")
    return df
