import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One MNIST-1D cache for the whole session (each test gets its own run dirs)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def cli(tmp_path: Path, data_dir: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Runs `python -m lbtrain.run OVERRIDES...` as a user would, in a fresh working dir
    (so runs land in tmp_path/logs), with W&B forced offline."""

    def run(*overrides: str, env: dict | None = None, timeout: int = 300):
        full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
        args = [sys.executable, "-m", "lbtrain.run", *overrides, f"paths.data_dir={data_dir}"]
        return subprocess.run(
            args, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run
