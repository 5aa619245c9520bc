"""Run dirs as the report reads them: found under the given paths, loaded (config, the
choices Hydra made, summary, logged series from CSV or TensorBoard), named, and grouped
into configurations that differ in the seed alone, each (config, seed) counted once."""

import json
import sys
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib.resources import files
from pathlib import Path

import pandas as pd
import yaml

from lbtrain.config.validate import ADDED_KEYS  # a run lacking one reads as having its default

# What every table row reads from a run's summary (a diverged run's: global_step alone)
SUMMARY_KEYS = ("val/acc", "global_step")

# Not part of what a run measures: where files go, what logs it, its seed (rows pool seeds),
# the plan (derived from the rest; runs from before it existed lack it), what a run does
# once it diverged (a diverged run has no result either way), its threads and checkpointing
NOT_IDENTITY = ("seed", "paths", "ckpt_path", "logger", "callbacks", "plan", "data.data_dir",
                "trainer.enable_progress_bar", "report", "stop_on_divergence", "threads",
                "trainer.enable_checkpointing")  # fmt: skip


class ReportError(ValueError):
    """What the report cannot be made from, in one line (`python -m lbtrain.report` prints it
    and exits 1)."""


def warn(message: str) -> None:
    """One line on stderr: what the report left out or could not draw, and why."""
    print(f"lbtrain.report: {message}", file=sys.stderr)


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty one sets nothing (runs from before it existed)
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

    @cached_property
    def report(self) -> dict:
        """Its row's `label` and `order` (the `report` key its recipe sets; a run from before
        that key existed: its recipe file's)."""
        recipe = self.choices.get("recipe")
        recipe = recipe if recipe and recipe != "None" else None
        found = self.config.get("report") or recipe_config(recipe, self.config_dirs).get("report")
        return {"label": recipe, "order": None} | {
            k: v for k, v in (found or {}).items() if v is not None
        }

    @property
    def label(self) -> str:
        if self.report["label"]:
            return self.report["label"]
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
        flat = {k: json.dumps(v) for k, v in ADDED_KEYS.items()} | _flatten(self.config)
        return tuple(sorted((k, v) for k, v in flat.items() if not any(
            f"{k}.".startswith(f"{n}.") for n in NOT_IDENTITY)))  # fmt: skip

    @property
    def diverged_at_step(self) -> int | None:
        """The first update whose training loss was not finite (summary.json's key, written
        as the run stopped); None: it did not diverge, or did not finish."""
        return (self.summary or {}).get("diverged_at_step")

    def logged(self, *columns: str) -> pd.DataFrame:
        """The metrics rows that hold these columns, once per step: a run resumed from an
        older checkpoint logs some steps twice, and the last one counts. A diverged run's
        rows end before the update that diverged: what it logged after is not a measurement."""
        if not set(columns) <= set(self.metrics.columns):
            return self.metrics.iloc[0:0]
        rows = self.metrics.dropna(subset=list(columns)).drop_duplicates("step", keep="last")
        if self.diverged_at_step is not None:
            rows = rows[rows["step"] < self.diverged_at_step]
        return rows

    @property
    def order(self) -> tuple:
        rank = self.report["order"]
        return (rank is None, rank or 0, self.config["batch_size"], self.label)


@cache
def recipe_config(name: str | None, config_dirs: tuple[str, ...]) -> dict:
    """recipe/<name>.yaml as written (lbtrain's, or in the user's config dirs); {}: none."""
    folders = [files("lbtrain.conf") / "recipe", *(Path(d) / "recipe" for d in config_dirs)]
    path = next((f / f"{name}.yaml" for f in folders if name and (f / f"{name}.yaml").is_file()),
                None)  # fmt: skip
    return (yaml.safe_load(path.read_text()) or {}) if path else {}


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
            raise ReportError(f"{root} does not exist")
        candidates = [root] if (root / ".hydra").is_dir() else []
        candidates += sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
        for run_dir in candidates:
            if (run_dir / "config.yaml").exists():
                found.setdefault(run_dir.resolve())
    runs = [load_run(run_dir) for run_dir in found]
    if not runs:
        raise ReportError(f"no lbtrain runs under {', '.join(str(p) for p in paths)}")
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
            warn(
                f"one config and seed in {len(repeats)} runs, counted once: kept {best.path}, "
                f"left out {others}"
            )
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
        choices = {k: str(v) for k, v in runtime["choices"].items()}
        config_dirs = tuple(
            str(Path(runtime.get("cwd", ".")) / source["path"])  # a relative dir: from its cwd
            for source in runtime.get("config_sources", [])
            if source["schema"] == "file"
        )
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    needed = SUMMARY_KEYS if "diverged_at_step" not in (summary or {}) else ("global_step",)
    if summary is not None and (lacking := [k for k in needed if k not in summary]):
        warn(f"{run_dir}: summary.json lacks {', '.join(lacking)}; listed as unfinished")
        summary = None
    return Run(run_dir, config, choices, summary, read_metrics(run_dir), config_dirs)


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's logged series, from what its loggers wrote: the CSV log, else TensorBoard's
    event files (read with tensorboard's own reader), one row per step and a column per
    series. Empty, and said in one line, for a run that kept neither (W&B only, no logger)."""
    csv = run_dir / "csv" / "metrics.csv"
    if csv.exists():
        return pd.read_csv(csv)
    if any((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        return _read_tensorboard(run_dir / "tensorboard")
    warn(
        f"{run_dir}: no CSV or TensorBoard log, so no curves (its summary counts); curves "
        "need logger=csv or logger=tensorboard"
    )
    return pd.DataFrame()


def _read_tensorboard(log_dir: Path) -> pd.DataFrame:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise ReportError(
            f"{log_dir.parent} logged to TensorBoard: reading it needs the "
            "tensorboard package (pip install tensorboard)"
        ) from None
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: every value
    events.Reload()
    series = {
        tag: pd.Series({e.step: e.value for e in events.Scalars(tag)}, dtype=float)
        for tag in events.Tags()["scalars"]
    }
    return pd.DataFrame(series).sort_index().rename_axis("step").reset_index()
