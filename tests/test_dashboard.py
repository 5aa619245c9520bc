"""W&B as lbtrain's users see it: the dashboard draws what the sweep's W&B runs logged, against
the step they logged it at; the report's Table 1 lands in W&B as it is in table.csv; best and
final val/acc are in each run's summary; W&B stays optional. All offline: the W&B runs are read
back from their .wandb files (helpers.wandb_records), the view is what --dry-run prints."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import wandb_records

from lbtrain import dashboard
from lbtrain.config import resolvers
from lbtrain.report.__main__ import main as report_main

pytestmark = pytest.mark.xdist_group("dashboard")  # the module's sweeps, made once

SECTIONS = ["Generalization", "Diffusion", "Batch arithmetic", "Noise scale and critical batch",
            "Edge of stability"]  # fmt: skip
TINY = ("trainer.max_epochs=2", "trainer.limit_train_batches=20", "trainer.log_every_n_steps=2")


def sweep(root: Path, data_dir: Path, *overrides: str) -> Path:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("LBTRAIN_RUN_ID", None)
    args = ["-m", *overrides, *TINY, f"hydra.sweep.dir={root}", f"paths.data_dir={data_dir}"]
    done = subprocess.run([sys.executable, "-m", "lbtrain.run", *args], cwd=root.parent, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def table1_sweep(tmp_path_factory, data_dir) -> Path:
    """2 recipes x 2 seeds, every measurement (batch sharpness often enough to reach LB's 8
    steps), CSV and W&B."""
    root = tmp_path_factory.mktemp("table1") / "sweep_all"
    return sweep(root, data_dir, "recipe=sb,lb", "seed=0,1", "callbacks=all",
                 "callbacks.batch_sharpness.every_n_steps=5", "logger=default")  # fmt: skip


@pytest.fixture(scope="module")
def plain_sweep(tmp_path_factory, data_dir) -> Path:
    """The default measurements only: no noise scale, no sharpness."""
    root = tmp_path_factory.mktemp("plain") / "sweep_plain"
    return sweep(root, data_dir, "recipe=sb", "logger=wandb")


def logged_runs(root: Path) -> list[tuple[dict, list[dict]]]:
    """Each job's W&B run: its config (wandb.init's, in its run record, then the updates) and
    its history rows."""
    files = sorted(root.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert files
    runs = []
    for path in files:
        config, history = wandb_records(path)
        (run,) = (r.run for r in dashboard.wandb_records(path) if r.HasField("run"))
        at_init = {item.key: json.loads(item.value_json) for item in run.config.update}
        runs.append((at_init | config, history))
    return runs


def dry_run(capsys, *args: str) -> dict:
    dashboard.main(["me/lbtrain", "--dry-run", *args])
    return json.loads(capsys.readouterr().out)


def sections_of(view: dict) -> list[dict]:
    return view["spec"]["section"]["panelBankConfig"]["sections"]


def panel_keys(panel: dict) -> list[str]:
    config = panel["config"]
    expressions = " ".join(config.get("expressions", []))
    return config["metrics"] + re.findall(r"\$\{([^}]+)\}", expressions)


def test_every_panel_draws_keys_the_sweeps_runs_logged_against_their_step(table1_sweep, capsys):
    view = dry_run(capsys, "--from-dir", str(table1_sweep), "--group", table1_sweep.name)
    runs = logged_runs(table1_sweep)
    rows = [row for _, history in runs for row in history]
    assert [s["name"] for s in sections_of(view)] == SECTIONS
    drawn = set()
    for section in sections_of(view):
        for panel in section["panels"]:
            x, keys = panel["config"]["xAxis"], panel_keys(panel)
            assert keys and x in ("trainer/global_step", "epoch"), panel
            assert x == section["localPanelSettings"]["xAxis"]
            for key in keys:  # some run logged it, at its x: the line has points
                assert any(key in row and x in row for row in rows), (section["name"], key, x)
            assert panel["config"]["groupBy"] == "recipe.value"
            assert (panel["config"]["groupAgg"], panel["config"]["groupArea"]) == ("mean", "minmax")
            drawn |= set(keys)
    assert {"val/acc", "weight_distance", "lr-SGD", "noise_scale/b_simple", "batch_sharpness",
            "sharpness/stability_ratio"} <= drawn  # fmt: skip
    assert view["spec"]["section"]["settings"]["xAxis"] == "trainer/global_step"

    (runset,) = view["spec"]["section"]["runSets"]
    assert table1_sweep.name in json.dumps(runset["filters"])  # --group: this sweep alone
    assert runset["grouping"] == [{"section": "config", "name": "recipe.value"}]
    assert {config["recipe"] for config, _ in runs} == {"sb", "lb"}  # what it groups by
    columns = runset["runFeed"]["columnOrder"]
    for column in columns:  # each config column is a key of every run's W&B config
        section, _, name = column.partition(":")
        if section == "config":
            top, _, rest = name.partition(".value")
            for config, _ in runs:
                value = config[top]
                for part in filter(None, rest.split(".")):
                    value = value[part]
    assert {"config:batch_size.value", "config:recipe.value", "config:lr_scaling.value",
            "config:ghost_batch_size.value", "config:seed.value", "config:plan.value.total_steps",
            "summary:val/acc", "summary:val/acc_best"} <= set(columns)  # fmt: skip


def test_a_section_no_run_logged_is_left_out(plain_sweep, capsys):
    logged = {key for _, history in logged_runs(plain_sweep) for row in history for key in row}
    assert not any(k.startswith(("noise_scale/", "sharpness/", "batch_sharpness")) for k in logged)
    view = dry_run(capsys, "--from-dir", str(plain_sweep), "--by", "batch_size")
    assert [s["name"] for s in sections_of(view)] == SECTIONS[:3]
    for section in sections_of(view):
        for panel in section["panels"]:
            assert panel["config"]["groupBy"] == "batch_size.value"
            assert set(panel_keys(panel)) <= logged


def test_refusals_are_one_line(table1_sweep, capsys, monkeypatch, tmp_path):
    groups = f"no run of group nope .*its groups: {table1_sweep.name}$"
    with pytest.raises(SystemExit, match=groups):
        dashboard.main(["me/lbtrain", "--from-dir", str(table1_sweep), "--group", "nope"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no `wandb login`
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as refused:  # saving: needs a key, says how to do without
        dashboard.main(["me/lbtrain", "--from-dir", str(table1_sweep)])
    message = str(refused.value.code)
    assert "API key" in message and "--dry-run" in message and "\n" not in message
    with pytest.raises(SystemExit) as refused:  # listing runs online: the same answer
        dashboard.main(["me/lbtrain", "--group", "x"])
    assert "API key" in str(refused.value.code)
    with pytest.raises(SystemExit):
        dashboard.main(["lbtrain", "--dry-run"])  # no entity
    assert "give ENTITY/PROJECT" in capsys.readouterr().err


def final_summary(path: Path) -> dict:
    """The summary an offline run would sync: its summary records folded in order."""
    summary = {}
    for record in dashboard.wandb_records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def test_best_and_final_val_acc_land_in_the_runs_summary(table1_sweep):
    files = sorted(table1_sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    for path in files:
        accuracies = [row["val/acc"] for row in wandb_records(path)[1] if "val/acc" in row]
        summary = final_summary(path)
        assert len(accuracies) == 2
        assert summary["val/acc"] == pytest.approx(accuracies[-1])
        assert summary["val/acc_best"] == pytest.approx(max(accuracies))
        axes = [r.metric for r in dashboard.wandb_records(path) if r.HasField("metric")]
        assert any(m.glob_name == "*" and m.step_metric == "trainer/global_step" for m in axes)


def test_the_report_puts_table1_and_its_figures_in_an_offline_wandb_run(
    table1_sweep, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "report"
    report_main([str(table1_sweep), "--out", str(out), "--wandb", "me/lbtrain"])
    said = capsys.readouterr().out.splitlines()[-1]
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    assert said.startswith("W&B: offline:") and f"wandb sync {run_file.parent}" in said

    _, history = wandb_records(run_file)
    (row,) = history
    assert row["table1._type"] == "table-file"
    logged = json.loads((run_file.parent / "files" / row["table1.path"]).read_text())
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "table.csv"), check_dtype=False)
    figures = {p.stem for p in out.glob("*.png")}
    assert {"weight_distance", "angular_distance", "val_error"} <= figures
    assert {k.split(".")[0] for k in row if k.startswith("figures/")} == {
        f"figures/{f}" for f in figures
    }
    assert all(row[f"figures/{f}._type"] == "image-file" for f in figures)
    (run,) = dashboard.offline_runs(out)
    assert run.group == table1_sweep.name  # beside the sweep's runs in W&B

    report = dashboard.table1_report("me", "lbtrain", "abc", "s", "table1", ["figures/a"])
    (grid,) = report.blocks  # its model needs the server: built, not serialised, here
    assert [p.table_name for p in grid.panels[:1]] == ["table1"]
    assert grid.panels[1].media_keys == ["figures/a"]


def test_a_wandb_run_keeps_its_id_across_requeues(tmp_path, monkeypatch):
    """The logger's id is ${lbtrain.wandb_id:<run dir>}: a requeued job, in the same run dir,
    resumes the same W&B run; another run dir is another run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    same = resolvers.wandb_id(str(tmp_path / "sweep" / "0"))
    assert resolvers.wandb_id("sweep/0") == resolvers.wandb_id("sweep/./0/") == same
    assert resolvers.wandb_id(str(tmp_path / "sweep" / "1")) != same


def test_wandb_stays_optional(tmp_path, data_dir):
    """A logger=csv run, and the report without --wandb, import nothing of W&B; only
    lbtrain.dashboard imports the [wandb] extra."""
    probe = (
        "import sys\nfrom lbtrain.run import main\n"
        f"sys.argv = ['lbtrain.run', 'logger=csv', 'trainer.max_epochs=1', "
        f"'trainer.limit_train_batches=2', 'paths.data_dir={data_dir}']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "import lbtrain.report.__main__\n"
        "print(sorted(m for m in ('wandb', 'wandb_workspaces') if m in sys.modules))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LBTRAIN_RUN_ID", None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[]"

    src = Path(dashboard.__file__).parent
    for path in src.rglob("*.py"):
        imports = [n for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Import | ast.ImportFrom)]  # fmt: skip
        names = {a.name for n in imports for a in n.names} | {
            n.module for n in imports if isinstance(n, ast.ImportFrom) and n.module
        }
        uses_extra = any(name.startswith("wandb_workspaces") for name in names)
        assert uses_extra == (path.name == "dashboard.py"), path
