"""`python -m lbtrain.report` and the notebook, on a real (tiny) sweep."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from lbtrain import report

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "generalization_gap.ipynb"
pytestmark = pytest.mark.xdist_group("tiny_sweep")


@pytest.fixture(scope="session")  # one per worker: the xdist group keeps its tests together
def sweep(tmp_path_factory, data_dir) -> Path:
    """SB and +RA at batch 256 (8x stretch), two seeds, one base epoch: ~125 steps each."""
    root = tmp_path_factory.mktemp("sweep")
    args = [
        sys.executable, "-m", "lbtrain.run", "-m", "experiment=mnist1d_table1",
        "recipe=sb,lb,lb_lr_gbn_ra", "seed=0,1", "large_batch_size=256", "trainer.max_epochs=2",
        "optim.milestones=[1]", "logger=csv", f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={root}/sweep",
    ]  # fmt: skip
    result = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


def test_report_writes_table1_and_figures(sweep, tmp_path):
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    unfinished = tmp_path / "sweep"
    shutil.copytree(sweep, unfinished)
    (unfinished / jobs[-1].name / "summary.json").unlink()  # a job killed before it finished
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "lbtrain.report", str(unfinished), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "table.csv")
    assert list(table["run"]) == ["SB", "LB", "+RA"]
    assert list(table["seeds"]) == [2, 2, 1]
    assert list(table["batch size"]) == [32, 256, 256]
    steps = dict(zip(table["run"], table["optimizer steps"], strict=True))
    assert steps == {"SB": 250, "LB": 32, "+RA": 256}  # +RA: 8x the LB epochs
    assert table.loc[0, "gap to SB (points)"] == 0
    assert table["diffusion slope"].str.match(r"-?\d+\.\d+").all()
    md = (out / "table.md").read_text()
    assert "Failed or unfinished jobs" in md and f"{jobs[-1].name} (+RA)" in md
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert "## Table 1" in md and "## Measurements" in md and max(map(len, tables)) <= 100
    assert table["angular slope"].str.match(r"-?\d+\.\d+").all()
    for png in ("weight_distance.png", "angular_distance.png", "val_error.png"):
        assert (out / png).stat().st_size > 10_000


def test_a_row_pools_only_runs_that_differ_in_the_seed(sweep, tmp_path, cli_in_process):
    """Another SB learning rate is another row, named by what differs; a run reached through
    two overlapping PATHs counts once."""
    root = tmp_path / "runs"
    shutil.copytree(sweep, root / "sweep")
    other = cli_in_process(
        "experiment=mnist1d_table1", "recipe=sb", "optim.lr=0.1", "large_batch_size=256",
        "trainer.max_epochs=2", "optim.milestones=[1]", "logger=csv",
        f"hydra.run.dir={root}/other_lr",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr[-2000:]
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "lbtrain.report", str(root), str(root / "sweep" / "0"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "table.csv").set_index("run")
    assert table.loc["SB [optim.lr=0.05]", "seeds"] == 2  # not 3: job 0 given twice
    assert table.loc["SB [optim.lr=0.1]", "seeds"] == 1
    assert list(table.loc[["LB", "+RA"], "seeds"]) == [2, 2]
    lb_gap = table.loc["LB", "gap to SB (points)"]  # to the SB of its own config
    sb = [
        float(a.split(" +- ")[0])
        for a in table.loc[["SB [optim.lr=0.05]", "LB"], "val acc % (final)"]
    ]
    assert lb_gap == pytest.approx(sb[1] - sb[0], abs=0.011)


def test_report_on_a_path_without_runs_fails_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lbtrain.report", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"lbtrain.report: error: no lbtrain runs under {tmp_path}"


def test_notebook_runs_top_to_bottom_on_a_sweep(sweep, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed bare
    monkeypatch.setenv("LBTRAIN_SWEEP", str(sweep))
    monkeypatch.setenv("LBTRAIN_REPORT_OUT", str(tmp_path))
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )  # fmt: skip
    assert f"6 runs in {sweep};" in text and "median R^2 of the log t fit" in text
    assert (tmp_path / "weight_distance.png").exists()


def test_notebook_runs_headless_as_the_readme_says(sweep, tmp_path):
    """`LBTRAIN_SWEEP=<dir> .venv/bin/jupyter execute notebooks/generalization_gap.ipynb`, from
    the user's working dir: a relative sweep path resolves against it, nothing lands in
    notebooks/, and without a sweep it stops with one clear message instead of reading
    whatever runs are around."""
    jupyter = Path(sys.executable).parent / "jupyter"
    work = tmp_path / "work"
    shutil.copytree(sweep, work / "logs" / "mine")
    before = sorted(NOTEBOOK.parent.iterdir())
    env = {**os.environ, "PWD": str(work), "LBTRAIN_SWEEP": "logs/mine"}
    env.pop("LBTRAIN_REPORT_OUT", None)
    run = subprocess.run([jupyter, "execute", str(NOTEBOOK)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "logs" / "mine" / "report" / "weight_distance.png").stat().st_size > 10_000
    assert sorted(NOTEBOOK.parent.iterdir()) == before  # no stray folders beside the notebook
    (work / "logs" / "runs").mkdir()  # unrelated runs, which must not be read instead
    shutil.copytree(sweep / "0", work / "logs" / "runs" / "0")
    env.pop("LBTRAIN_SWEEP")
    bare = subprocess.run([jupyter, "execute", str(NOTEBOOK)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bare.returncode != 0
    assert "no sweep to read: set LBTRAIN_SWEEP=<sweep dir>" in bare.stderr


def test_a_recipe_that_changes_the_optimizer_is_compared_with_sb(sweep, tmp_path, cli_in_process):
    """LARS's recipe sets the optimizer and its LR too: the row still differs from SB only by
    its recipe, so its gap is to that SB (not to itself), with the samples and time it took.
    The SB run is the shared sweep's seed 0, the LARS run its twin but for the recipe."""
    runs = tmp_path / "sweep"
    overrides = {p: set(yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text()))
                 for p in sweep.iterdir() if p.name.isdigit()}  # fmt: skip
    sb = next(p for p, given in overrides.items() if {"recipe=sb", "seed=0"} <= given)
    shutil.copytree(sb, runs / "0")
    lars = cli_in_process(
        "experiment=mnist1d_table1", "recipe=lars", "large_batch_size=256",
        "trainer.max_epochs=2", "optim.milestones=[1]", "logger=csv", f"hydra.run.dir={runs}/1",
    )  # fmt: skip
    assert lars.returncode == 0, lars.stderr[-3000:]
    report.write_report([runs], runs / "report")
    table = pd.read_csv(runs / "report" / "table.csv").set_index("run")
    acc = {
        run: 100 * json.loads((runs / job / "summary.json").read_text())["val/acc"]
        for job, run in (("0", "SB"), ("1", "LARS"))
    }
    assert table.loc["LARS", "gap to SB (points)"] == pytest.approx(
        acc["LARS"] - acc["SB"], abs=0.01
    )
    assert table.loc["LARS", "samples processed"] == table.loc["SB", "samples processed"] == 8000
    assert float(table.loc["LARS", "train time (s)"]) > 0


def test_a_recipe_from_the_users_config_dir_is_compared_with_sb(tmp_path):
    """A recipe in the user's config dir (`hydra.searchpath=[file://...]`) sets an optimizer:
    its keys come from that file, so its row's gap is to SB, not +0.00 to itself."""
    my_conf = tmp_path / "my_conf" / "recipe"
    my_conf.mkdir(parents=True)
    (my_conf / "mylars.yaml").write_text(
        "# @package _global_\nbatch_size: 1024\noptim:\n  optimizer: lars\n  lr: 0.625\n"
    )
    runs = {"sb": (32, "sgd", 0.1, 0.95), "mylars": (1024, "lars", 0.625, 0.90)}
    for recipe, (batch, optimizer, lr, acc) in runs.items():
        run_dir = tmp_path / "sweep" / recipe
        (run_dir / ".hydra").mkdir(parents=True)
        config = {"batch_size": batch, "seed": 0, "optim": {"optimizer": optimizer, "lr": lr}}
        for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
            path.write_text(yaml.safe_dump(config))
        runtime = {"cwd": str(tmp_path), "choices": {"recipe": recipe}, "config_sources": [
            {"path": "lbtrain.conf", "schema": "pkg", "provider": "main"},
            {"path": "my_conf", "schema": "file", "provider": "command-line"}]}  # fmt: skip
        (run_dir / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"runtime": runtime}})
        )
        (run_dir / "summary.json").write_text(json.dumps({"val/acc": acc, "global_step": 1}))
    table = report.table(report.find_runs([tmp_path / "sweep"])).set_index("run")
    assert float(table.loc["mylars", "gap to SB (points)"]) == pytest.approx(-5.0)


def write_run(
    run_dir: Path,
    seed: int,
    summary: dict | None,
    batch: int = 32,
    label: str | None = None,
    metrics: dict[str, list] | None = None,
) -> None:
    """A run dir as lbtrain writes it, with only what the report reads: its row's label
    (the `report` key a recipe sets) and its logged series (csv/metrics.csv), if given."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"batch_size": batch, "seed": seed, "optim": {"optimizer": "sgd", "lr": 0.1}}
    if label:
        config["report"] = {"label": label}
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        path.write_text(yaml.safe_dump(config))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if metrics is not None:
        (run_dir / "csv").mkdir()
        pd.DataFrame(metrics).to_csv(run_dir / "csv" / "metrics.csv", index=False)


def test_repeats_of_a_config_and_seed_count_once(tmp_path, capsys):
    """A resumed copy of seed 0 (longer) and a rerun of it: seed 0 counts once, as its
    longest finished run; seeds and std come from distinct seeds."""
    write_run(tmp_path / "a", 0, {"val/acc": 0.95, "global_step": 100})
    write_run(tmp_path / "a_resumed", 0, {"val/acc": 0.90, "global_step": 120})
    write_run(tmp_path / "a_unfinished", 0, None)
    write_run(tmp_path / "b", 1, {"val/acc": 0.94, "global_step": 120})
    table = report.table(report.find_runs([tmp_path]))
    assert list(table["seeds"]) == [2]
    assert table.loc[0, "val acc % (final)"] == "92.00 +- 2.83"  # 90 and 94
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "counted once" in ln]
    assert f"kept {tmp_path / 'a_resumed'}, left out" in line and str(tmp_path / "a,") in line


def test_a_run_whose_summary_lacks_a_metric_is_named_and_left_out(tmp_path, capsys):
    write_run(tmp_path / "done", 0, {"val/acc": 0.95, "global_step": 100})
    write_run(tmp_path / "emptied", 1, {"global_step": 100, "train_seconds": 3.0})
    report.write_report([tmp_path], tmp_path / "report")
    out, err = capsys.readouterr()
    lacking = [ln for ln in err.splitlines() if "summary.json lacks" in ln]
    assert lacking == [
        f"lbtrain.report: {tmp_path / 'emptied'}: summary.json lacks val/acc; listed as unfinished"
    ]
    assert f"- {tmp_path / 'emptied'}" in out  # among the unfinished jobs
    assert list(pd.read_csv(tmp_path / "report" / "table.csv")["seeds"]) == [1]


def test_the_report_reads_tensorboard_runs_and_never_draws_a_blank_figure(
    cli_in_process, tmp_path, capsys
):
    tiny = ("trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=1")
    board = cli_in_process(*tiny, "logger=tensorboard", "hydra.run.dir=runs/board")
    assert board.returncode == 0, board.stderr[-3000:]
    run = report.load_run(tmp_path / "runs" / "board")
    assert list(run.logged("val/acc")["step"]) == [6, 12]  # TensorBoard's steps, one per epoch
    assert len(run.logged("weight_distance")) == 12
    out = tmp_path / "report"
    table = report.write_report([tmp_path / "runs"], out)
    assert table.loc[0, "val acc % (best)"] != "-"
    for png in ("weight_distance.png", "angular_distance.png", "val_error.png"):
        assert (out / png).stat().st_size > 10_000
    capsys.readouterr()
    bare = cli_in_process(*tiny, "logger=none", "hydra.run.dir=bare/run")
    assert bare.returncode == 0, bare.stderr[-3000:]
    capsys.readouterr()
    report.write_report([tmp_path / "bare"], tmp_path / "bare_report")
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bare' / 'run'}: no CSV or TensorBoard log" in err
    assert "no run logged weight_distance; weight_distance.png not drawn" in err
    assert not list((tmp_path / "bare_report").glob("*.png"))  # no blank figures


def test_a_run_from_before_optim_options_and_report_pools_with_a_new_one(sweep, tmp_path):
    """Old runs' configs lack `optim.options` (empty by default), `report`, and the keys added
    since (`optim.adam_rule`, `optim.fixed_timescale`, `branch`, `batch_schedule_points`,
    `stop_on_divergence`, `threads`, `trainer.enable_checkpointing`): the same config, another
    seed, pools into the new run's row, and takes its recipe's label."""
    new = next(p for p in sweep.iterdir() if p.name.isdigit() and "recipe=lb_lr_gbn_ra" in (
        p / ".hydra" / "overrides.yaml").read_text())  # fmt: skip
    old = tmp_path / "old"
    shutil.copytree(new, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    assert config["optim"].pop("options") == {} and config.pop("report")["label"] == "+RA"
    assert config["optim"].pop("adam_rule") is None and not config["optim"].pop("fixed_timescale")
    assert config.pop("branch")["base_run"] is None and config.pop("batch_schedule_points") == []
    assert config.pop("stop_on_divergence") is True
    assert config.pop("threads") == "auto"
    assert config["trainer"].pop("enable_checkpointing") is False
    config["seed"] = 7
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    table = report.table(report.find_runs([new, old])).set_index("run")
    assert table.loc["+RA", "seeds"] == 2


# Every value a finished run's summary.json can give the table, the measured ones included
FULL_SUMMARY = {
    "val/acc": 0.9663, "global_step": 3750, "weight_distance": 20.89, "diffusion_slope": 4.44,
    "samples_seen": 3_840_000, "train_seconds": 120.3, "angular_diffusion_slope": 0.160,
    "sharpness/lambda_max": 189.57, "sharpness/stability_ratio": 0.4312,
    "batch_sharpness/stability_ratio_mean_last_half": 0.0123, "noise_scale/b_simple": 1234.5,
}  # fmt: skip


def test_table_md_is_table1_then_the_measurements_each_within_100_columns(tmp_path):
    """Long row names (a user's own labels) and every measured column: table.md still reads in
    a 100-column terminal, as the paper's table and a measurements table, and drops nothing
    that table.csv holds."""
    labels = {
        32: "SB",
        1024: "+GBN, batch augmentation x4",
        4096: "BS schedule (32 -> 320 -> 1024)",
    }
    for batch, label in labels.items():
        for seed in (0, 1):
            summary = {**FULL_SUMMARY, "val/acc": FULL_SUMMARY["val/acc"] - 0.01 * seed}
            write_run(tmp_path / "sweep" / f"{batch}_{seed}", seed, summary, batch, label)
    report.write_report([tmp_path / "sweep"], tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    too_wide = [line for line in md.splitlines() if len(line) > 100]
    assert not too_wide, "\n".join(too_wide)
    assert md.index("Table 1") < md.index("Measurements")
    csv = pd.read_csv(tmp_path / "report" / "table.csv")
    assert set(report.table1.MEASURED_COLUMNS) <= set(csv.columns)  # each measurement kept
    headers = [line for line in md.splitlines() if line.startswith("| run ")]
    cells = [cell.strip() for line in headers for cell in line.strip("|").split("|")]
    assert len(cells) - len(headers) == len(csv.columns) - 1  # each column once, beside `run`
    for label in labels.values():  # every table holds every row
        assert md.count(f"| {label} ") == len(headers)


def test_a_tiny_ratio_is_printed_with_its_significant_digits(tmp_path):
    """A sharpness 2000 times below its threshold reads as such, not as 0.000 +- 0.000."""
    ratios, accuracies = {0: 0.000431, 1: 0.000452}, {0: 0.9663, 1: 0.9563}
    for seed, ratio in ratios.items():
        summary = {**FULL_SUMMARY, "sharpness/stability_ratio": ratio, "val/acc": accuracies[seed]}
        write_run(tmp_path / "sweep" / str(seed), seed, summary)
    table = report.table(report.find_runs([tmp_path / "sweep"]))
    mean, std = table.loc[0, "final sharpness / threshold"].split(" +- ")
    ratio = pd.Series(list(ratios.values()))
    assert float(mean) == pytest.approx(ratio.mean(), rel=0.01)
    assert float(std) == pytest.approx(ratio.std(), rel=0.05)
    acc = pd.Series(list(accuracies.values())) * 100  # where 2 decimals suffice, 2 as before
    assert table.loc[0, "val acc % (final)"] == f"{acc.mean():.2f} +- {acc.std():.2f}"


@pytest.fixture
def saved_figures(monkeypatch) -> dict:
    """The matplotlib figures the report saves, by file name, as they were saved."""
    from matplotlib.figure import Figure

    saved, savefig = {}, Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def sharpness_runs(root: Path, threshold: float, points: dict[int, int]) -> list[report.Run]:
    """Runs of `points[batch]` sharpness measurements (between 1 and 3, rising), each against
    a constant `threshold`, for sharpness and batch sharpness alike."""
    for batch, n in points.items():
        steps = [10 * (k + 1) for k in range(n)]
        sharpness = [1 + 2 * k / max(n - 1, 1) for k in range(n)]
        metrics = {"step": steps}
        for prefix in ("sharpness/lambda_max", "batch_sharpness"):
            metrics |= {prefix: sharpness, f"{prefix.split('/')[0]}/threshold": [threshold] * n}
        write_run(root / str(batch), 0, {"val/acc": 0.9, "global_step": steps[-1]}, batch,
                  metrics=metrics)  # fmt: skip
    return report.find_runs([root])


def data_lines(fig, column: str, runs: list[report.Run]) -> list:
    """The figure's curve of each run (not its dashed threshold), in the runs' order."""
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() != "--"]
    assert len(lines) == len(runs)
    for line, run in zip(lines, sorted(runs, key=lambda r: r.order), strict=True):
        assert list(line.get_ydata()) == list(run.logged(column)[column])
    return lines


def test_a_one_point_series_is_drawn_with_a_marker(tmp_path, saved_figures):
    """A 5-epoch sweep measures sharpness once per run: that point shows; a long series stays
    a plain line."""
    runs = sharpness_runs(tmp_path / "sweep", threshold=4.0, points={32: 1, 64: 100})
    report.figures.plot_sharpness(runs, tmp_path)
    one, long = data_lines(saved_figures["sharpness.png"], "sharpness/lambda_max", runs)
    assert one.get_marker() not in ("None", None, "", " ") and one.get_markersize() > 0
    assert long.get_marker() in ("None", None, "", " ")


@pytest.mark.parametrize(
    ("plot", "column"),
    [("plot_sharpness", "sharpness/lambda_max"), ("plot_batch_sharpness", "batch_sharpness")],
)
@pytest.mark.parametrize("threshold", [8000.0, 2.5])
def test_the_sharpness_axis_fits_the_data_and_still_shows_the_threshold(
    tmp_path, saved_figures, plot, column, threshold
):
    """A threshold thousands of times above the data (2/lr at a small lr) does not flatten the
    curves at 0: the y-axis fits the data and the threshold is named at its top edge. One
    within the data's range is drawn dashed on the axis as before."""
    runs = sharpness_runs(tmp_path / "sweep", threshold, points={32: 30})
    path = getattr(report.figures, plot)(runs, tmp_path)
    ax = saved_figures[path.name].axes[0]
    (curve,) = data_lines(saved_figures[path.name], column, runs)
    low, high = curve.get_ydata().min(), curve.get_ydata().max()
    bottom, top = ax.get_ylim()
    assert bottom <= low and high <= top  # all of the data shows
    notes = " ".join(t.get_text() for t in ax.texts)
    if threshold > 2 * high:
        assert top - bottom < 2 * (high - low)  # fitted to the data, not stretched to 8000
        assert "above" in notes and f"{threshold:,.0f}" in notes
    else:
        assert bottom < threshold < top and "above" not in notes
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert [list(ln.get_ydata()) for ln in dashed] == [[threshold] * 30]


@pytest.mark.parametrize(
    "steps",
    [(1, 5), (100, 100), (50, 250), (300, 3000), (2000, 20_000), (20_000, 300_000), (10, 30_000)],
)
def test_the_step_axis_labels_never_overlap(tmp_path, saved_figures, steps):
    """Step ranges of short and long sweeps: the x tick labels shown are apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    first, last = steps
    write_run(tmp_path / "run", 0, {"val/acc": 0.9, "global_step": last},
              metrics={"step": [first, last], "weight_distance": [1.0, 2.0]})  # fmt: skip
    report.plot_weight_distance(report.find_runs([tmp_path / "run"]), tmp_path)
    fig = saved_figures["weight_distance.png"]
    canvas = FigureCanvasAgg(fig)  # drawn as it was saved
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
    boxes = sorted((t.get_window_extent(renderer).x0, t.get_window_extent(renderer).x1,
                    t.get_text()) for t in labels)  # fmt: skip
    assert len(boxes) >= 2
    for (_, right, text), (left, _, following) in zip(boxes, boxes[1:], strict=False):
        assert right < left, f"{text!r} overlaps {following!r}: {[b[2] for b in boxes]}"


def diverged_run(run_dir: Path, seed: int, batch: int, label: str, at: int) -> None:
    """A run whose training loss went NaN at update `at`, as lbtrain writes it: it stopped a
    few steps later, its weight distance reached 1e19 before going NaN, and its summary holds
    `diverged_at_step`, a chance accuracy and NaN or absurd measurements."""
    steps = list(range(1, at + 5))
    distance = [10.0 ** min(s, 19) if s < at - 1 else float("nan") for s in steps]
    summary = {"val/acc": 0.102, "global_step": at + 4, "diverged_at_step": at,
               "weight_distance": float("nan"), "diffusion_slope": 4.3e18}  # fmt: skip
    metrics = {"step": steps, "epoch": [0.0] * len(steps), "weight_distance": distance,
               "val/acc": [float("nan")] * (len(steps) - 1) + [0.102]}  # fmt: skip
    write_run(run_dir, seed, summary, batch, label, metrics)


def healthy_run(run_dir: Path, seed: int, batch: int, label: str, acc: float) -> None:
    steps = list(range(1, 51))
    summary = {"val/acc": acc, "global_step": 50, "weight_distance": 7.0, "diffusion_slope": 2.0}
    metrics = {"step": steps, "epoch": [s // 25 for s in steps],
               "weight_distance": [s**0.5 for s in steps],
               "val/acc": [acc if s % 25 == 0 else float("nan") for s in steps]}  # fmt: skip
    write_run(run_dir, seed, summary, batch, label, metrics)


def test_a_diverged_run_gives_no_accuracy_and_is_named(tmp_path, capsys, saved_figures):
    """LB's seed 2 diverged: LB's accuracy and measurements are its other two seeds' and the
    row says 1 of 3 diverged; every seed of +LR diverged: no accuracy, its cells say at which
    steps. The report names each diverged run, and its curves (NaN after 1e19) leave the
    others readable."""
    sweep = tmp_path / "sweep"
    healthy_run(sweep / "sb0", 0, 32, "SB", 0.95)
    healthy_run(sweep / "sb1", 1, 32, "SB", 0.93)
    healthy_run(sweep / "lb0", 0, 1024, "LB", 0.90)
    healthy_run(sweep / "lb1", 1, 1024, "LB", 0.88)
    diverged_run(sweep / "lb2", 2, 1024, "LB", at=21)
    diverged_run(sweep / "lr0", 0, 2048, "+LR", at=21)
    diverged_run(sweep / "lr1", 1, 2048, "+LR", at=40)
    out = tmp_path / "report"
    report.write_report([sweep], out)

    table = pd.read_csv(out / "table.csv").set_index("run")
    assert list(table["seeds"]) == [2, 3, 2] and list(table["diverged"]) == [0, 1, 2]
    assert table.loc["LB", "val acc % (final)"] == "89.00 +- 1.41"  # 90 and 88, not 10
    assert table.loc["LB", "val acc % (best)"] == "89.00 +- 1.41"
    assert float(table.loc["LB", "gap to SB (points)"]) == pytest.approx(89 - 94)
    assert table.loc["LB", "diffusion slope"] == "2.00 +- 0.00"  # not 4.3e18 / 3
    assert table.loc["+LR", ["val acc % (final)", "val acc % (best)"]].isna().all()
    assert table.loc["+LR", "gap to SB (points)"] == "-"
    assert table.loc["+LR", "diverged at step"] == "21, 40"
    assert table.loc["+LR", "optimizer steps"] == (25 + 44) // 2  # the steps they made

    md = (out / "table.md").read_text()
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert max(map(len, tables)) <= 100 and "| steps |" in tables[0]  # Table 1 is one table
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in tables[2:5]}  # fmt: skip
    assert cells["+LR"][2:5] == ["2 of 2", "diverged (steps 21, 40)", "diverged"]
    assert cells["LB"][2:5] == ["1 of 3", "89.00 +- 1.41", "89.00 +- 1.41"]
    assert cells["SB"][2] == "-"
    printed = capsys.readouterr().out
    for run, name, seed, at in (("lb2", "LB", 2, 21), ("lr0", "+LR", 0, 21), ("lr1", "+LR", 1, 40)):
        line = f"- {sweep / run} ({name}, seed {seed}): diverged at step {at}"
        assert line in printed and line in md
    assert "Diverged runs" in printed

    ax = saved_figures["weight_distance.png"].axes[0]
    assert ax.get_ylim()[1] < 10  # fitted to sqrt(50) = 7.1, not 1e19
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata())]
    assert len(dotted) == 3 and all(max(ln.get_xdata()) < 40 for ln in dotted)
    assert all(pd.Series(ln.get_ydata()).between(1, 1e19).all() for ln in dotted)  # no NaN
