"""A config error, and `--help`, answer from the config alone: nothing imports torch, Lightning
or W&B before the config has passed validation (their imports take seconds; the ratio
against `import lightning` is measured in benchmarks/bench_startup.py)."""

import subprocess
import sys

HEAVY = ("torch", "lightning", "wandb")

# One fresh interpreter runs `python -m lbtrain.run ARGS` for each case, as the command line
# would, and reports the exit code and which heavy packages were imported by then.
PROBE = """
import sys
from hydra.core.global_hydra import GlobalHydra
from lbtrain.run import main

for args in {cases!r}:
    sys.argv = ["lbtrain.run", *args]
    GlobalHydra.instance().clear()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    heavy = sorted(m for m in {heavy!r} if m in sys.modules)
    print("CASE", code, ",".join(heavy) or "-", file=sys.stderr)
"""


def run_cases(tmp_path, cases: list[list[str]]) -> tuple[list[tuple[int, str]], str, str]:
    code = PROBE.format(cases=cases, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    results = [line.split()[1:] for line in done.stderr.splitlines() if line.startswith("CASE")]
    return [(int(c), heavy) for c, heavy in results], done.stdout, done.stderr


def test_config_errors_and_help_import_no_torch(tmp_path):
    cases = [
        ["model=mpl"],  # a misspelt option: refused before Hydra starts
        ["batchsize=5"],  # a misspelt key
        ["optim.lr=fast"],  # a value of the wrong type: the schema's check, inside Hydra's job
        ["trainer.max_epochs=0"],  # out of range
        ["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"],  # layout
        ["--help"],
        ["model=mlp", "--help"],
    ]
    results, out, err = run_cases(tmp_path, cases)
    assert len(results) == len(cases), err
    for args, (code, heavy) in zip(cases, results, strict=True):
        assert heavy == "-", f"{args}: imported {heavy} before answering"
        assert code == (0 if "--help" in args else 2), f"{args}: exit {code}\n{err}"
    assert err.count("lbtrain: error:") == 5, err
    assert "trainer.max_epochs" in err and "tasks_per_node=2" in err
    # --help lists the groups, and the config as the overrides compose it
    assert "model: alexnet_bn, c1, c3, cnn1d, f1, mlp" in out
    assert "== Config with model=mlp" in out and "hidden:" in out  # mlp's own options
    assert not (tmp_path / "logs").exists()  # nothing written


def test_a_run_imports_torch_once_the_config_is_good(tmp_path):
    """The deferred import is the real one: a good config goes on to train (here it stops at
    the first built-object check, which needs torch)."""
    results, _, err = run_cases(tmp_path, [["data.data_dir=/nonexistent", "data=mnist"]])
    assert results == [(2, "lightning,torch")], err
    assert "data_dir" in err or "/nonexistent" in err


def test_the_package_builds_without_warnings_and_ships_every_config(tmp_path):
    """`pip install -e .` printed ten setuptools warnings, one per conf/ folder it was not
    told of; the wheel must still carry every YAML file of conf/."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tmp_path / "project"  # a copy: setuptools builds in the project's build/
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "src", "conf"):
        copy = shutil.copytree if (root / name).is_dir() else shutil.copy
        copy(root / name, project / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path), str(project)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    assert "Warning" not in build.stdout + build.stderr, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    expected = {
        f"lbtrain/conf/{p.relative_to(root / 'conf')}" for p in (root / "conf").rglob("*.yaml")
    }
    assert shipped == expected
