"""`python -m lbtrain.report SWEEP --wandb ENTITY/PROJECT`: the report in W&B.

Table 1 (table.csv) as a W&B Table and the figures (*.png) as images, logged by one run of the
sweep's group (job type `report`); online also a W&B Report that shows them (built by
lbtrain.dashboard: the [wandb] extra). Offline (WANDB_MODE=offline, or no API key) the run
stays in <report dir>/wandb/ for a later `wandb sync`. W&B is imported here alone: a report
without --wandb imports nothing of it.
"""

from pathlib import Path

import pandas as pd

from lbtrain.config.resolvers import wandb_mode

TABLE_KEY = "table1"


class Refused(Exception):
    """W&B's answer, in one line (no API key, no network, no such entity or project)."""


def publish(out: Path, sweep: Path, path: str) -> str:
    """Logs the report in `out` to W&B project `path` (ENTITY/PROJECT); returns what it did."""
    import wandb

    entity, project = path.split("/")
    mode = wandb_mode()
    if mode == "disabled":
        return "W&B: WANDB_MODE=disabled: nothing logged"
    figures = sorted(out.glob("*.png"))
    try:
        run = wandb.init(
            entity=entity, project=project, group=sweep.name, job_type="report",
            name=f"report {sweep.name}", dir=out, mode=mode, config={"sweep": str(sweep)},
            settings=wandb.Settings(silent=True),
        )  # fmt: skip
        run_dir = Path(run.dir).parent
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures}
        run.log({TABLE_KEY: wandb.Table(dataframe=pd.read_csv(out / "table.csv")), **images})
        run.finish()  # its last records reach the run's file later, from W&B's service
        if mode == "offline":
            if wandb.run is None:  # no run of yours open: wait until the file is whole
                wandb.teardown()
            return (f"W&B: offline: Table 1 and {len(images)} figures in {run_dir}; upload "
                    f"them with `wandb sync {run_dir}`")  # fmt: skip
        from lbtrain import dashboard

        if dashboard.wr is None:
            return f"W&B: Table 1 and figures in {run.url} (a Report needs {dashboard.EXTRA})"
        report = dashboard.table1_report(entity, project, run.id, sweep.name, TABLE_KEY, images)
        report.save()
    except (wandb.errors.Error, ValueError, OSError) as e:
        raise Refused((str(e).strip().splitlines() or [type(e).__name__])[0]) from e
    return f"W&B: Table 1 and figures in the report {report.url} (run {run.url})"
