"""A run dir as this invocation found it, so that an invocation with nothing to do leaves it
as it was (a resume of a run that has finished, say).

Hydra creates the run dir and writes `.hydra/` and the start of `run.log` before lbtrain's
code runs. `note` records what a run dir named on the command line held before Hydra started
(`lbtrain.run.main`); `restore` undoes exactly what this invocation wrote: Hydra's files
are put back, run.log is cut back to its old length, and a dir this invocation created goes.
"""

import logging
import os
import shutil
from pathlib import Path

HYDRA_WRITES = {".hydra", "run.log"}  # what a fresh run dir holds when lbtrain's code starts
# run dir -> (its .hydra files, run.log's length), or None where the dir did not exist
_found: dict[Path, tuple[dict[str, bytes], int | None] | None] = {}


def note(run_dir: Path) -> None:
    """Before Hydra starts: what `run_dir` holds that Hydra may overwrite."""
    run_dir = run_dir.resolve()
    if not run_dir.exists():
        _found[run_dir] = None
        return
    files = {p.name: p.read_bytes() for p in (run_dir / ".hydra").glob("*") if p.is_file()}
    log = run_dir / "run.log"
    _found[run_dir] = (files, log.stat().st_size if log.exists() else None)


def restore(run_dir: Path) -> bool:
    """Put `run_dir` back as it was before this invocation. False where that is unknown: a
    dir not noted (named in a config file, not on the command line) that held a run."""
    run_dir = run_dir.resolve()
    _close_logs_in(run_dir)
    found = _found.get(run_dir)
    if found is None:  # created by this invocation, or holding only what Hydra wrote
        if run_dir in _found or {p.name for p in run_dir.iterdir()} <= HYDRA_WRITES:
            shutil.rmtree(run_dir)
            return True
        return False
    files, log_size = found
    hydra = run_dir / ".hydra"
    for path in hydra.glob("*"):
        if path.is_file() and path.name not in files:
            path.unlink()
    for name, data in files.items():
        (hydra / name).write_bytes(data)
    if not files and hydra.is_dir() and not any(hydra.iterdir()):
        hydra.rmdir()
    log = run_dir / "run.log"
    if log_size is None:
        log.unlink(missing_ok=True)
    else:
        os.truncate(log, log_size)
    return True


def _close_logs_in(run_dir: Path) -> None:
    """Hydra's file handler writes run.log: closed first, so no later line lands there."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).resolve().is_relative_to(run_dir):
            handler.close()
            root.removeHandler(handler)
