"""`python -m lbtrain.dashboard ENTITY/PROJECT`: the paper's figures as a saved W&B workspace view.

    python -m lbtrain.dashboard me/lbtrain --group 2026-11-25_10-00-00_ab12cd   # one sweep
    python -m lbtrain.dashboard me/lbtrain --from-dir logs/multiruns/2026-... --dry-run

Sections (SECTIONS): Generalization (accuracy and loss, train against validation, and the
validation error, by epoch), Diffusion (weight and angular distance against log t: Figure 2),
Batch arithmetic (the LR of each update; the plan in the runs table), Noise scale (B_simple,
tr(Sigma) and |G|^2), Edge of stability (sharpness and batch sharpness beside each run's
threshold, and their ratios to it). Every series is drawn against lbtrain's step
(loggers.STEP_KEY) or the epoch; runs are grouped by recipe (--by batch_size: by batch size),
their mean with a min-max band.

What the runs logged decides what is drawn: a panel keeps the keys some run logged, and a
section left without a panel is left out. The keys come from W&B (each run's history keys) or,
with --from-dir, from the offline runs under a dir (their .wandb files): one builder for both.
--dry-run prints the view as wandb-workspaces would send it (its View model, as JSON) and
saves nothing; saving needs an API key (`wandb login`) and the network.

Needs the [wandb] extra (wandb-workspaces); only this module imports it.
"""

import argparse
import fnmatch
import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import wandb

from lbtrain.lightning_internals import workspace_model
from lbtrain.train.loggers import BEST_VAL_ACC, STEP_KEY, VAL_ACC

try:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
except ImportError:  # the [wandb] extra is missing: main() says so in one line
    wr = ws = None

EXTRA = "pip install -e '.[wandb]' (wandb-workspaces)"
WANDB_ERRORS = (wandb.errors.Error, ValueError, OSError)  # no key, no network, no such project


@dataclass(frozen=True)
class Panel:
    title: str
    y: tuple[str, ...] = ()  # logged keys, or patterns (lr-*: lr-SGD, lr-AdamW, ...)
    x: str = STEP_KEY
    log_x: bool = False
    log_y: bool = False
    expression: str | None = None  # a line the W&B app computes from logged keys, ${key}


NS, SH, BSH = "noise_scale/", "sharpness/", "batch_sharpness"
SECTIONS = {
    "Generalization": (
        Panel("val/acc", (VAL_ACC,), x="epoch"),
        Panel("validation error (1 - val/acc)", x="epoch", expression="1 - ${val/acc}"),
        Panel("accuracy: train against validation", ("train/acc", VAL_ACC), x="epoch"),
        Panel("loss: train against validation", ("train/loss_epoch", "val/loss"), x="epoch"),
    ),
    "Diffusion": (  # Figure 2: ||w_t - w_0|| grows like log t
        Panel("weight distance ||w_t - w_0||", ("weight_distance",), log_x=True),
        Panel("angular distance", ("angular_distance",), log_x=True),
    ),
    "Batch arithmetic": (Panel("the LR of each update", ("lr-*",)),),
    "Noise scale and critical batch": (
        Panel("B_simple = tr(Sigma) / |G|^2", (NS + "b_simple",), log_y=True),
        Panel("tr(Sigma) and |G|^2", (NS + "trace_sigma", NS + "grad_sq"), log_y=True),
        Panel("SGD temperature lr N / (B (1 - momentum))", (NS + "temperature",)),
    ),
    "Edge of stability": (
        Panel("sharpness and its threshold", (SH + "lambda_max", SH + "threshold")),
        Panel("batch sharpness and its threshold", (BSH, BSH + "/threshold")),
        Panel("stability ratios", (SH + "stability_ratio", BSH + "/stability_ratio")),
    ),
}
# the runs table: the knobs, the plan each run made of them, its result
CONFIG_COLUMNS = ("recipe", "batch_size", "lr_scaling", "ghost_batch_size", "seed",
                  "plan.per_device_batch", "plan.ghost_batch_size", "plan.lr",
                  "plan.total_steps")  # fmt: skip
SUMMARY_COLUMNS = (VAL_ACC, BEST_VAL_ACC)


@dataclass(frozen=True)
class LoggedRun:
    group: str | None
    keys: frozenset[str]  # its history keys


def expression_keys(expression: str | None) -> list[str]:
    return re.findall(r"\$\{([^}]+)\}", expression or "")


def line_plot(panel: Panel, logged: set[str], by: str):
    """The panel with the keys that some run logged; None if it would be empty."""
    y = [key for pattern in panel.y for key in sorted(fnmatch.filter(logged, pattern))]
    needed = expression_keys(panel.expression)
    if not (y or needed) or panel.x not in logged or not set(needed) <= logged:
        return None
    return wr.LinePlot(
        title=panel.title, x=panel.x, y=y, log_x=panel.log_x or None, log_y=panel.log_y or None,
        custom_expressions=[panel.expression] if panel.expression else None,
        groupby=wr.Config(by), groupby_aggfunc="mean", groupby_rangefunc="minmax",
    )  # fmt: skip


def config_column(key: str) -> str:
    """The runs table's name of a config key: `config:plan.value.lr` for plan.lr."""
    top, *rest = key.split(".")
    return ".".join([f"config:{top}", "value", *rest])


def build(path: str, runs: list[LoggedRun], group: str | None = None, by: str = "recipe"):
    """The workspace view of `runs` (those of `group`, else all) in ENTITY/PROJECT `path`."""
    entity, project = path.split("/")
    logged = set().union(*(run.keys for run in runs))
    sections = []
    for title, panels in SECTIONS.items():
        if drawn := [p for panel in panels if (p := line_plot(panel, logged, by))]:
            x = ws.SectionPanelSettings(x_axis=panels[0].x)  # one x-axis a section
            sections.append(ws.Section(name=title, panels=drawn, is_open=True, panel_settings=x))
    columns = [*map(config_column, CONFIG_COLUMNS), *(f"summary:{k}" for k in SUMMARY_COLUMNS)]
    return ws.Workspace(
        entity=entity, project=project, name=f"lbtrain: {group or 'all runs'}", sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP_KEY),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == group] if group else "",
            groupby=[ws.Config(by)], pinned_columns=columns,
        ),
    )  # fmt: skip


def table1_report(entity: str, project: str, run_id: str, sweep: str, table: str, images):
    """The W&B Report of `python -m lbtrain.report --wandb`: its run's Table 1 and figures."""
    runset = wr.Runset(entity=entity, project=project, name=sweep,
                       filters=[ws.Metric("ID") == run_id])  # fmt: skip
    panels = [wr.WeavePanelSummaryTable(table_name=table, layout=wr.Layout(w=24, h=12)),
              wr.MediaBrowser(title="figures", media_keys=list(images), num_columns=2)]  # fmt: skip
    return wr.Report(
        entity=entity, project=project, title=f"Table 1: {sweep}",
        description=f"python -m lbtrain.report {sweep} --wandb {entity}/{project}",
        blocks=[wr.PanelGrid(runsets=[runset], panels=panels)],
    )  # fmt: skip


def wandb_records(path: Path):
    """The records of an offline run's .wandb file: a LevelDB-style log (7-byte file header,
    32 KiB blocks, each record in chunks behind a 7-byte crc/length/type header)."""
    from wandb.proto import wandb_internal_pb2

    data, chunk, pos, block = path.read_bytes(), b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # no room for a header: the rest of the block is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""
        elif kind == 0:
            break


def offline_runs(root: Path) -> list[LoggedRun]:
    """Every offline W&B run under `root` (a sweep dir, a run dir, logs/)."""
    runs = []
    for path in sorted(root.rglob("offline-run-*/run-*.wandb")):
        group, keys = None, set()
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                group = record.run.run_group or None
            elif kind == "history":
                keys |= {i.key or ".".join(i.nested_key) for i in record.history.item}
        runs.append(LoggedRun(group, frozenset(keys)))
    return runs


def online_runs(path: str, group: str | None) -> list[LoggedRun]:
    found = wandb.Api(timeout=30).runs(path, filters={"group": group} if group else {}, lazy=False)
    runs = []
    for run in found:
        keys = run.history_keys
        keys = json.loads(keys) if isinstance(keys, str) else keys
        runs.append(LoggedRun(run.group, frozenset(keys.get("keys", {}))))
    return runs


def online_groups(path: str) -> list[str]:
    return sorted({run.group for run in wandb.Api(timeout=30).runs(path) if run.group})


def refuse(e: Exception) -> NoReturn:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
    sys.exit(f"lbtrain.dashboard: W&B: {first}; nothing saved (--dry-run --from-dir SWEEP_DIR "
             "prints the view from local offline runs, with no API key or network)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lbtrain.dashboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", metavar="ENTITY/PROJECT", help="where the view is saved")
    parser.add_argument("--group", help="one sweep: its W&B group (the sweep dir's name)")
    parser.add_argument("--by", choices=("recipe", "batch_size"), default="recipe",
                        help="group the curves by this config key (default: recipe)")  # fmt: skip
    parser.add_argument("--from-dir", type=Path, help="take the logged keys from the offline "
                        "W&B runs under this dir (a sweep dir) instead of from W&B")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the view; save nothing")
    args = parser.parse_args(argv)
    if args.path.count("/") != 1 or not all(args.path.split("/")):
        parser.error(f"{args.path}: give ENTITY/PROJECT, e.g. me/lbtrain")
    if args.from_dir and not args.from_dir.is_dir():
        parser.error(f"--from-dir {args.from_dir}: no such directory")
    if ws is None:
        sys.exit(f"lbtrain.dashboard: needs the [wandb] extra: {EXTRA}")
    where = args.from_dir or args.path
    try:
        runs = offline_runs(args.from_dir) if args.from_dir else online_runs(args.path, args.group)
        chosen = [run for run in runs if not args.group or run.group == args.group]
        if args.group and not chosen:
            groups = online_groups(args.path) if not args.from_dir else {r.group for r in runs}
            sys.exit(f"lbtrain.dashboard: no run of group {args.group} in {where}; its groups: "
                     f"{', '.join(sorted(g for g in groups if g)) or 'none'}")  # fmt: skip
    except WANDB_ERRORS as e:
        refuse(e)
    if not chosen:
        sys.exit(f"lbtrain.dashboard: no W&B runs in {where}")
    workspace = build(args.path, chosen, args.group, args.by)
    if args.dry_run:  # what save() would send: the library's own model of the view
        model = workspace_model(workspace)
        print(model.model_dump_json(by_alias=True, exclude_none=True, indent=1))
        return
    try:
        workspace.save()
    except WANDB_ERRORS as e:
        refuse(e)
    print(f"lbtrain.dashboard: saved {workspace.url}")


if __name__ == "__main__":
    main()
