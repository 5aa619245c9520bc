import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar
from PIL import Image


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
        full_env.pop("LBTRAIN_RUN_ID", None)  # each run names its own directory
        args = [sys.executable, "-m", "lbtrain.run", *overrides, f"paths.data_dir={data_dir}"]
        return subprocess.run(
            args, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run


# --- small data sets in the real on-disk formats -----------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic 0x0000 0x08 (uint8) ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    # torchvision.datasets.MNIST (0.29) reads the unpacked IDX files in MNIST/raw/ (its
    # download() fetches the .gz archives and unpacks them there); it checks no md5.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of 3072 bytes: the 1024 red, then green, then blue pixels of a 32x32 image."""
    return rng.integers(1, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, 6):  # 5 training batches of 10 images, one of each class
        write_pickle(
            folder / f"data_batch_{k}",
            {
                "batch_label": f"training batch {k} of 5",
                "labels": list(range(10)),
                "data": cifar_images(rng, 10),
                "filenames": [f"img_{k}_{i}.png" for i in range(10)],
            },
        )
    write_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(20)],
            "data": cifar_images(rng, 20),
            "filenames": [f"test_{i}.png" for i in range(20)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    write_pickle(
        folder / "batches.meta",
        {"label_names": names, "num_cases_per_batch": 10, "num_vis": 3072},
    )
    return tmp_path


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 100), ("test", 20)):
        write_pickle(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": [i % 100 for i in range(n)],
                "coarse_labels": [i % 20 for i in range(n)],
                "data": cifar_images(rng, n),
            },
        )
    write_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return tmp_path


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision compares every CIFAR file's md5 with the real archive's (in
    CIFAR10._check_integrity and in _load_meta), which small test files cannot pass. This
    replaces only cifar.py's `check_integrity` by the same function without the md5
    comparison (the file must still exist); all loading logic stays torchvision's.
    test_corrupt_cifar_is_one_line_error shows the check is otherwise real."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


@pytest.fixture
def imagenet_dir(tmp_path: Path) -> Path:
    """train/: noise images (random crops of noise differ); val/: one flat colour per
    class, which Resize + CenterCrop keep, so normalised values are known exactly."""
    rng = np.random.default_rng(0)
    colours = {"n01440764": (255, 0, 51), "n01443537": (0, 102, 204)}
    for k, (wnid, colour) in enumerate(colours.items()):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for i in range(3):
            noise = rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / "train" / wnid / f"{wnid}_{i}.png")
        flat = np.broadcast_to(np.array(colour, np.uint8), (48, 64, 3))
        Image.fromarray(flat.copy()).save(tmp_path / "val" / wnid / f"val_{k}.png")
    return tmp_path


@pytest.fixture
def cli_in_process(tmp_path: Path, data_dir: Path, monkeypatch, capsys):
    """`python -m lbtrain.run OVERRIDES...` in this process (the same `main()`, with
    Hydra's real command-line handling), for cases that stop before training: a second
    faster than a fresh interpreter. Returns what subprocess.run would."""
    from hydra.core.global_hydra import GlobalHydra

    from lbtrain.run import main

    def run(*overrides: str) -> subprocess.CompletedProcess:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("LBTRAIN_RUN_ID", raising=False)
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        given = any(o.startswith("paths.data_dir=") for o in overrides)
        args = ["lbtrain.run", *overrides, *([] if given else [f"paths.data_dir={data_dir}"])]
        monkeypatch.setattr(sys, "argv", args)
        GlobalHydra.instance().clear()
        _point_log_handlers_at(sys.stderr)  # not at an earlier test's closed capture
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def _point_log_handlers_at(stream) -> None:
    import logging

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", 0):
                handler.stream = stream  # setStream would flush the closed one
