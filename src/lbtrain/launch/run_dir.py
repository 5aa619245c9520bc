"""A run dir as this invocation found it, so that an invocation with nothing to do leaves it
as it was (a resume of a run that has finished, a refused run), and an in-place resume keeps
the run's own record of how it was started.

Hydra creates the run dir and writes `.hydra/` and the start of `run.log` before lbtrain's
code runs. `note` records what a run dir named on the command line held before Hydra started
(`lbtrain.run.main`); `restore` undoes exactly what this invocation wrote: Hydra's files
are put back, run.log is cut back to its old length, and a dir this invocation created goes.
"""

import fcntl
import logging
import os
import shutil
from itertools import count
from pathlib import Path

import yaml

from lbtrain.config.validate import ADDED_KEYS
from lbtrain.errors import ConfigError

CHECKPOINTS = "checkpoints"  # <run dir>/checkpoints/: last.ckpt, requeue.ckpt, branch_points/
LAST_CHECKPOINT = "last.ckpt"  # written while a run trains (callbacks/checkpoint.py)
REQUEUE_CHECKPOINT = "requeue.ckpt"  # while a preempted run waits to be requeued
LOCK = ".lock"  # held (flock) by the live run in a run or sweep dir; it holds that run's pid
HYDRA_WRITES = {".hydra", "run.log", LOCK}  # what a fresh run dir holds as lbtrain's code starts
_locks: dict[Path, int] = {}  # dir -> the open file that holds its lock, for this process
# run dir -> (its .hydra files, run.log's length), or None where the dir did not exist
_found: dict[Path, tuple[dict[str, bytes], int | None] | None] = {}
# run dir -> run.log's length when lbtrain's code started: lines older than this invocation
_log_at_start: dict[Path, int] = {}


def lock(run_dir: Path, key: str = "hydra.run.dir") -> None:
    """Hold an OS lock on `run_dir` for as long as this process lives (or `unlock`): a second
    run into a live dir is refused before it writes anything there. A killed run's lock dies
    with it. Opening the lock file changes nothing in a dir that already has one."""
    run_dir = run_dir.resolve()
    if run_dir in _locks:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"{key}={shown(run_dir)}: another run is live in this dir (pid {holder}); wait for "
            "it to end, stop it (Ctrl-C pauses it), or pick a new dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _locks[run_dir] = fd


def unlock_all() -> None:
    """Release this process's locks (an invocation ends; tests run several in one process)."""
    for fd in _locks.values():
        os.close(fd)
    _locks.clear()


def reset() -> None:
    """A new invocation (`main()`; tests run several in one process) has noted nothing yet."""
    _found.clear()
    _log_at_start.clear()


def note(run_dir: Path) -> None:
    """Before Hydra starts: what `run_dir` holds that Hydra may overwrite."""
    run_dir = run_dir.resolve()
    found = None  # the dir did not exist: this invocation creates it
    if run_dir.exists():
        files = {p.name: p.read_bytes() for p in (run_dir / ".hydra").glob("*") if p.is_file()}
        log = run_dir / "run.log"
        found = (files, log.stat().st_size if log.exists() else None)
    _found[run_dir] = found  # noted only once read whole


def note_start(run_dir: Path) -> None:
    """First thing in the job (Hydra has written to the dir): how much of run.log predates
    this invocation, for a dir `note` did not see (an automatic or sweep job dir)."""
    log = run_dir.resolve() / "run.log"
    _log_at_start.setdefault(run_dir.resolve(), log.stat().st_size if log.exists() else 0)


def restore(run_dir: Path) -> bool:
    """Put `run_dir` back as it was before this invocation. False where that is unknown: a
    dir not noted (named in a config file, not on the command line) that held a run."""
    run_dir = run_dir.resolve()
    _close_logs_in(run_dir)
    found = _found.get(run_dir)
    if found is None:  # created by this invocation, or not noted before Hydra started
        earlier = _log_at_start.get(run_dir)  # None: unknown, so nothing is removed
        only_ours = earlier == 0 and {p.name for p in run_dir.iterdir()} <= HYDRA_WRITES
        if run_dir in _found or only_ours:
            shutil.rmtree(run_dir)
            _remove_empty_parents(run_dir)
            return True
        if earlier:  # an earlier attempt's log (a sweep rerun into its dir): it stays
            os.truncate(run_dir / "run.log", earlier)
        return False
    files, log_size = found
    hydra = run_dir / ".hydra"
    for path in [p for p in hydra.glob("*") if p.is_file() and p.name not in files]:
        path.unlink()
    for name, data in files.items():
        (hydra / name).write_bytes(data)
    if not files and hydra.is_dir() and not any(hydra.iterdir()):
        hydra.rmdir()
    if log_size is None:
        (run_dir / "run.log").unlink(missing_ok=True)
    else:
        os.truncate(run_dir / "run.log", log_size)
    return True


def _remove_empty_parents(run_dir: Path) -> None:
    """The folders Hydra made for a removed run dir (logs/, logs/runs/), while empty, up to
    the working dir."""
    cwd = Path.cwd().resolve()
    for parent in run_dir.parents:
        if parent == cwd or not parent.is_relative_to(cwd) or any(parent.iterdir()):
            return
        parent.rmdir()


def _close_logs_in(run_dir: Path) -> None:
    """Hydra's file handler writes run.log: closed first, so no later line lands there."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        name = getattr(handler, "baseFilename", None)  # any handler: file handlers have one
        if name and Path(name).resolve().is_relative_to(run_dir):
            handler.close()
            root.removeHandler(handler)


def keep_run_record(run_dir: Path) -> Path | None:
    """An in-place resume: Hydra has just rewritten .hydra/ with this invocation's config and
    overrides. Those move to .hydra/resume-<n>/ and the run's own go back; returns the new
    dir (None where the run dir was not noted or held no record)."""
    found = _found.get(run_dir.resolve())
    if not found or not found[0]:
        return None
    hydra = run_dir / ".hydra"
    resume = next(d for n in count(1) if not (d := hydra / f"resume-{n}").exists())
    resume.mkdir()
    for path in [p for p in hydra.glob("*") if p.is_file()]:
        shutil.move(path, resume / path.name)
    for name, data in found[0].items():
        (hydra / name).write_bytes(data)
    return resume


def recorded_overrides(run_dir: Path, this_run: Path) -> list[str] | None:
    """The overrides `run_dir`'s run was started with, from its own record: as noted before
    Hydra started, or as on disk where this invocation (running in `this_run`) did not write."""
    run_dir = run_dir.resolve()
    found = _found.get(run_dir)
    if found and "overrides.yaml" in found[0]:
        return yaml.safe_load(found[0]["overrides.yaml"]) or []
    path = run_dir / ".hydra" / "overrides.yaml"
    if run_dir in _found or run_dir == this_run.resolve() or not path.exists():
        return None
    return yaml.safe_load(path.read_text()) or []


def checkpoints(run_dir: Path) -> Path:
    """Where a run's checkpoints are."""
    return Path(run_dir) / CHECKPOINTS


def check_run_dir(run_dir: Path, ckpt_path: str | None) -> None:
    """Never overwrite an earlier run: a run dir that already holds one is only reused to
    resume it from its own checkpoint (explicitly with ckpt_path=, or automatically after
    preemption); a checkpoint from elsewhere would rewrite its log and summary."""
    own = checkpoints(run_dir)
    used = [f for f in ("summary.json", "csv/metrics.csv", f"{CHECKPOINTS}/{LAST_CHECKPOINT}")
            if (run_dir / f).exists()]  # fmt: skip
    if not used or (ckpt_path is None and (own / REQUEUE_CHECKPOINT).exists()):
        return
    if ckpt_path is not None and Path(ckpt_path).resolve().parent == own.resolve():
        return
    last = own / LAST_CHECKPOINT
    resume = (f"resume it with ckpt_path={last}" if last.is_file() else
              "it holds no checkpoint to resume from")  # fmt: skip
    elsewhere = "" if ckpt_path is None else (
        f"; to train on from {ckpt_path}, leave out hydra.run.dir (a new dir)")  # fmt: skip
    raise ConfigError(
        f"hydra.run.dir={run_dir} already holds a run ({used[0]}); pick a new dir, or {resume}"
        f"{elsewhere}"
    )


# What an in-place resume may change (README, "Stop, continue, resume"): the step budget, how
# it is logged, measured and checkpointed, where files are, how the model is compiled. Any
# other key is part of what the run was, and its record (config.yaml, summary.json) says so.
RESUME_MAY_CHANGE = (
    "ckpt_path", "trainer.max_epochs", "trainer.max_steps", "trainer.log_every_n_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "logger", "callbacks",
    "paths", "data.data_dir", "data.num_workers", "report", "imports", "compile",
)  # fmt: skip


def check_same_run(run_dir: Path, config: dict) -> None:
    """An in-place resume continues the run that `run_dir` records (its config.yaml): a
    value that would change what already ran is refused, naming each such key."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    recorded = yaml.safe_load(path.read_text()) or {}
    recorded.pop("plan", None)  # what RunSummary derived: follows from the rest
    recorded = ADDED_KEYS | _flat(recorded)  # a run from before a key: as with its default
    given = _flat(config)
    changed = [
        f"{k}={given.get(k, '<unset>')} (the run: {recorded.get(k, '<unset>')})"
        for k in sorted(recorded.keys() | given.keys())
        if recorded.get(k) != given.get(k)
        and not any(k == m or k.startswith(f"{m}.") for m in RESUME_MAY_CHANGE)
    ]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)}: a resume in {shown(run_dir)} continues the run as it was "
            "trained, and may change only the step budget, loggers, callbacks and paths; to "
            "train on from its checkpoint with other values, leave out hydra.run.dir (a new dir)"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists stay values; an empty mapping sets
    nothing (a run from before its keys)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat |= _flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return flat


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the working dir when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
