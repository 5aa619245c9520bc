"""`python -m lbtrain.report PATH...`: Table 1 and the paper's figures from run directories.

    python -m lbtrain.report logs/multiruns/2026-11-25_10-00-00_ab12cd [--out DIR] [--target T]
    python -m lbtrain.report logs/multiruns/2026-11-25_10-00-00_ab12cd --wandb me/lbtrain

PATH may be a run dir, a multirun dir, or any folder above them (a run found twice counts
once). Writes, into --out (default: PATH/report): table.md and table.csv (one row per
configuration, pooling only runs whose resolved configs differ in the seed alone; rows that
share a label name the keys that differ; final and best validation accuracy, mean +- std
over seeds, the gap to SB, optimizer steps, final weight distance, diffusion slope, and
where runs measured them the angular distance's slope, the final sharpness and noise
scale; table.md in two parts, Table 1 and the measurements, within 100 columns under short
headers with a legend), weight_distance.png (Figure 2:
||w_t - w_0|| against log t), angular_distance.png (the same for the angle of the
BatchNorm-fed weights) and val_error.png (Figures 1 and 3: validation error against epoch).
Jobs that failed or did not finish are listed, never dropped silently. A run that diverged
(summary.json's diverged_at_step) has no result: its row's means are its other seeds', its
cells say where it diverged (a `diverged` count, NaN accuracy in table.csv where all did), it
is listed, its curves end there, and it reaches a --target only if it did before.

With --target (e.g. val/acc=0.85), also critical_batch.md, .csv and .png: the steps and
examples each configuration took to reach it, the fit S = S_min (1 + B_crit / B) over each
batch size's best configuration, and the noise scale measured on the way
(`lbtrain/report/critical_batch.py`).

Where PATH holds branch runs (lbtrain/train/branch.py, `make critical-batch-online`), also
cbs_online.md, .csv and .png: the critical batch size at each base-run checkpoint, from the
branches' final val/loss within --branch-tolerance (default 0.05) of the m = 1 branch's, with
B_simple(t) of the base run, and warmup_points.txt, the batch_schedule_points that follow it.

With --wandb ENTITY/PROJECT, also Table 1 as a W&B Table and the figures as images, in a run of
the sweep's W&B group and a W&B Report; offline, in <out>/wandb/ for `wandb sync` (to_wandb.py).
"""

import argparse
import sys
from pathlib import Path

from lbtrain.report import write_report
from lbtrain.report.critical_batch import BRANCH_TOLERANCE, Target
from lbtrain.report.runs import ReportError


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
    parser.add_argument(
        "--branch-tolerance", type=float, default=BRANCH_TOLERANCE,
        help="branch runs: a batch is within the CBS while its loss is at most (1 + this) "
        "x the m = 1 branch's (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="also log Table 1 and the figures to W&B"
    )
    args = parser.parse_args(argv)
    if args.wandb and (args.wandb.count("/") != 1 or not all(args.wandb.split("/"))):
        parser.error(f"--wandb {args.wandb}: give ENTITY/PROJECT, e.g. me/lbtrain")
    if not args.branch_tolerance >= 0:
        parser.error(f"--branch-tolerance {args.branch_tolerance}: must be >= 0")
    try:
        target = Target.parse(args.target) if args.target else None
    except ValueError as e:
        parser.error(str(e))
    out = args.out or args.paths[0] / "report"
    try:
        write_report(args.paths, out, target, args.branch_tolerance)
    except ReportError as e:  # the library raises; the command says it in one line
        sys.exit(f"lbtrain.report: error: {e}")
    if args.wandb:
        from lbtrain.report.to_wandb import Refused, publish

        try:
            print(publish(out, args.paths[0].resolve(), args.wandb))
        except Refused as e:
            sys.exit(f"lbtrain.report: W&B: {e} (the report itself is in {out})")


if __name__ == "__main__":
    sys.exit(main())
