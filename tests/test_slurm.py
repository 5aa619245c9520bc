"""lbtrain's cluster path under a real SLURM scheduler: the one-node cluster that
`make slurm-up` starts (scripts/slurm-cluster.sh), driven through `-m hydra/launcher=slurm_test`
(submitit; the slurm launcher config with the test cluster's values) as a user drives a real
one. The drills stop jobs the ways SLURM and preempting
schedulers do (a time limit's signal, `scontrol requeue`, SIGTERM, a signal to one rank) and
check that the job is requeued once per signal and resumes exactly.

The node has 2 CPUs and a 2-task job fills it, so the drills run one after another (one
xdist group) and each test cancels its jobs at the end. Paced drills (helpers.Pace) sleep in
each step, so that a signal lands mid-training at a known point without burning CPU.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_run

from lbtrain.launch.run_dir import LOCK

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]
ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# the test cluster's launcher config (conf/hydra/launcher/slurm_test.yaml), as a user selects it
SLURM = ("hydra/launcher=slurm_test",)
# the sweep that `make slurm-up` ends by printing, as printed (SLURM_CONF and the python aside)
PRINTED = ("hydra/launcher=slurm_test", "seed=0,1", "trainer.max_epochs=1")
# 5 epochs of MNIST-1D (625 steps), logged to CSV: the run every single-task drill stops
RUN = ("trainer.max_epochs=5", "logger=csv", "trainer.deterministic=true")
DONE = re.compile(r"rank (\d) of (\d) done, config (\w+)")


def cluster_env() -> dict[str, str]:
    """The environment that reaches the test cluster; skips the module, in one line, without
    one (not root, no apt-get: `make slurm-up` said why)."""
    conf = os.environ.get("SLURM_CONF") or str(ROOT / ".slurm" / "slurm.conf")
    if shutil.which("sinfo") is None or not Path(conf).is_file():
        pytest.skip("no SLURM test cluster: run `make slurm-up` (as root)", allow_module_level=True)
    env = {**os.environ, "SLURM_CONF": conf}
    state = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%T"], env=env, capture_output=True,
                           text=True)  # fmt: skip
    if state.returncode or not state.stdout.startswith(("idle", "mixed", "allocated")):
        why = (state.stderr.strip() or state.stdout.strip() or "no answer").splitlines()[-1]
        pytest.skip(f"the SLURM test cluster of {conf} is not up: {why}", allow_module_level=True)
    return env


SLURM_ENV = cluster_env()


@pytest.fixture
def slurm_env() -> dict[str, str]:
    return SLURM_ENV


class Sweep:
    """One `python -m lbtrain.run -m hydra/launcher=slurm_test ...` in a test's tmp dir, its
    jobs, and their clean-up."""

    def __init__(self, tmp_path: Path, env: dict, data_dir: Path, name: str = "sweep") -> None:
        self.tmp, self.dir, self.data_dir = tmp_path, tmp_path / name, data_dir
        self.env = {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                    "PYTHONPATH": f"{TESTS}{os.pathsep}{env.get('PYTHONPATH', '')}"}  # fmt: skip
        self.env.pop("LBTRAIN_RUN_ID", None)
        self.process: subprocess.Popen | None = None

    def start(self, *overrides: str, launcher: tuple[str, ...] = SLURM) -> "Sweep":
        args = [sys.executable, "-m", "lbtrain.run", "-m", *launcher, *overrides,
                f"paths.data_dir={self.data_dir}", f"hydra.sweep.dir={self.dir}"]  # fmt: skip
        self.process = subprocess.Popen(
            args, cwd=self.tmp, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def wait(self, timeout: float = 180) -> tuple[int, str]:
        out, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, out

    def slurm(self, *args: str) -> str:
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, check=True)
        return result.stdout

    def jobs(self) -> list[str]:
        """The SLURM ids of this sweep's jobs (`<array>_<k>` for a sweep of several)."""
        lines = self.slurm("squeue", "-h", "--states=all", "-o", "%i %Z").splitlines()
        jobs = (line.split(" ", 1) for line in lines)
        return [job for job, workdir in jobs if workdir == str(self.tmp)]

    def job(self) -> str:
        """The id of the sweep's one job, once SLURM has it."""
        for _ in range(60):
            if jobs := self.jobs():
                return jobs[0]
            time.sleep(1)
        raise AssertionError(f"no SLURM job for {self.dir}")

    def restarts(self, job: str) -> int:
        return int(re.search(r"Restarts=(\d+)", self.slurm("scontrol", "show", "job", job))[1])

    def wait_for_step(self, job_dir: str, step: int, timeout: float = 120) -> int:
        """The step a paced run has reached, once it is past `step`."""
        pace = self.dir / job_dir / "pace"
        deadline = time.time() + timeout
        while time.time() < deadline:
            reached = int(pace.read_text() or 0) if pace.exists() else 0
            if reached >= step:
                return reached
            time.sleep(0.2)
        raise AssertionError(f"{pace} did not reach step {step}")

    def logs(self, job_dir: str = "0") -> str:
        """What every rank of every run of the job logged (submitit's lines too)."""
        return (self.dir / job_dir / "run.log").read_text()

    def cancel(self) -> None:
        jobs = [j for j in self.jobs() if j]
        if jobs:
            subprocess.run(["scancel", "--full", *jobs], env=self.env)
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for _ in range(60):  # the next test gets the whole node
            states = self.slurm("squeue", "-h", "-o", "%T").split()
            if not set(states) & {"RUNNING", "COMPLETING", "PENDING", "CONFIGURING"}:
                return
            time.sleep(1)


@pytest.fixture
def sweeps(tmp_path, slurm_env, data_dir):
    made: list[Sweep] = []

    def make(name: str = "sweep") -> Sweep:
        made.append(Sweep(tmp_path, slurm_env, data_dir, name))
        return made[-1]

    yield make
    for sweep in made:
        sweep.cancel()


def written(sweep_dir: Path) -> list[str]:
    """What a sweep dir holds, but for the lock of the sweep that named it (hydra.sweep.dir)."""
    names = {p.name for p in sweep_dir.iterdir()} if sweep_dir.exists() else set()
    return sorted(names - {LOCK})


def reference(tmp_path, data_dir, *overrides: str) -> Path:
    """The same run, uninterrupted, as a single run outside SLURM (one torch thread, as the
    drills' jobs have: SLURM_CPUS_PER_TASK=1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    env.pop("LBTRAIN_RUN_ID", None)
    run_dir = tmp_path / "reference"
    args = [sys.executable, "-m", "lbtrain.run", *overrides, f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_sweep_runs_one_job_per_point_each_on_two_ranks(sweeps):
    """2 points, 2 tasks each (DDP over gloo), at most one job at a time: the array queues."""
    sweep = sweeps().start(
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "batch_size=32,64",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=1",
        "logger=default", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    )  # fmt: skip
    code, out = sweep.wait()
    assert code == 0, out[-3000:]
    assert written(sweep.dir) == [".submitit", "0", "1", "multirun.yaml"]
    groups = set()
    for job, batch in (("0", 32), ("1", 64)):
        logs = (sweep.dir / job / "run.log").read_text()
        assert f"batch {batch} = 2 devices x {batch // 2}" in logs
        done = sorted(DONE.findall(logs))
        assert [(r, w) for r, w, _ in done] == [("0", "2"), ("1", "2")]
        assert done[0][2] == done[1][2]  # both ranks on the job's config
        assert json.loads((sweep.dir / job / "summary.json").read_text())["global_step"] == 3
        groups |= set(re.findall(r"W&B run \w+ \(offline\): name .*, group (\S+),", logs))
    assert groups == {sweep.dir.name}  # one W&B group for the sweep, on both jobs


def test_two_node_job_runs_one_rank_per_node(sweeps):
    """trainer.num_nodes=2, one task on each of the test cluster's two nodes (two slurmd on
    this host). Their names do not resolve, so the job is told the address of node 0."""
    sweep = sweeps()
    sweep.env["MASTER_ADDR"] = "127.0.0.1"
    sweep.start(
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
        "hydra.launcher.partition=twonodes", "hydra.launcher.cpus_per_task=1", "logger=csv",
        "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    )  # fmt: skip
    code, out = sweep.wait()
    assert code == 0, out[-3000:]
    logs = (sweep.dir / "0" / "run.log").read_text()
    assert "batch 32 = 2 devices x 16" in logs
    done = sorted(DONE.findall(logs))
    assert [(r, w) for r, w, _ in done] == [("0", "2"), ("1", "2")]
    assert done[0][2] == done[1][2]
    starts = "".join(p.read_text() for p in (sweep.dir / ".submitit").glob("*_log.out"))
    assert sorted(re.findall(r"node=(\d)\(2\)", starts)) == ["0", "1"]  # SLURM_NODEID
    assert json.loads((sweep.dir / "0" / "summary.json").read_text())["global_step"] == 3


@pytest.mark.parametrize("cpus", [1, 2])
def test_torch_threads_follow_the_cpus_slurm_gave(sweeps, cpus):
    """OMP_NUM_THREADS unset in the job (make test sets it to 1 for its own workers)."""
    sweep = sweeps()
    sweep.env.pop("OMP_NUM_THREADS", None)  # sbatch hands the job the submitter's environment
    sweep.start(
        f"hydra.launcher.cpus_per_task={cpus}", "logger=csv", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
    )  # fmt: skip
    code, out = sweep.wait()
    assert code == 0, out[-3000:]
    log = (sweep.dir / "0" / "run.log").read_text()
    assert f"torch threads: {cpus} (SLURM_CPUS_PER_TASK={cpus};" in log


def test_a_layout_that_contradicts_the_trainer_is_refused_before_submission(
    cli_in_process, slurm_env, monkeypatch, tmp_path
):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])  # a submission would reach it
    ddp = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    for wrong in (
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.nodes=2",
        "hydra.launcher.timeout_min=1",
    ):  # signal_delay_s=120 would kill it at once
        result = cli_in_process("-m", *SLURM, *ddp, wrong)
        assert result.returncode == 2, result.stderr[-3000:]
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("lbtrain: error: ") and wrong.split("=")[0] in line
    sweep = Sweep(tmp_path, slurm_env, tmp_path)
    assert sweep.jobs() == []  # nothing submitted


def test_the_sweep_that_slurm_up_prints_runs_and_says_sacct_fails_once(sweeps, slurm_env):
    """The command `make slurm-up` ends with, as printed: no override from these tests needed.
    The test cluster keeps no accounting, so each of submitit's polls of sacct fails (at 0,
    2, 4, 8 s ...); its warning about it is shown once, not three times a poll."""
    script = (ROOT / "scripts" / "slurm-cluster.sh").read_text()
    assert f"-m lbtrain.run -m {' '.join(PRINTED)}" in script
    sweep = sweeps().start(launcher=PRINTED)
    code, out = sweep.wait()
    assert code == 0, out[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep.dir / job / "summary.json").read_text())["global_step"] > 0
    sacct_fails = subprocess.run(["sacct", "-n"], env=slurm_env, capture_output=True).returncode
    assert out.count("Bypassing sacct error") == (1 if sacct_fails else 0), out[-3000:]
    assert "Traceback" not in out


@pytest.mark.parametrize("conf", ["missing", "unset"])
def test_no_cluster_config_is_one_line_at_once_before_anything_is_written(
    tmp_path, slurm_env, data_dir, conf
):
    """SLURM_CONF unset: sbatch finds no cluster (this machine has no default config), and
    says so. SLURM_CONF naming a missing file: sbatch would retry reading it for 60 s, then
    fail. Either is refused in one line at once, before anything is written in the sweep dir."""
    sweep = Sweep(tmp_path, slurm_env, data_dir)  # not `sweeps`: its clean-up needs SLURM_CONF
    if conf == "missing":
        sweep.env["SLURM_CONF"] = str(tmp_path / "nowhere" / "slurm.conf")
        said = f"lbtrain: error: SLURM_CONF={sweep.env['SLURM_CONF']}: no such file; "
    else:
        sweep.env.pop("SLURM_CONF")
        said = "lbtrain: error: sbatch: Could not establish a configuration source; "
        found = subprocess.run(["sbatch", "--version"], env=sweep.env, capture_output=True)
        if found.returncode == 0:
            pytest.skip("sbatch finds a cluster here without SLURM_CONF")
    start = time.time()
    code, out = sweep.start(launcher=PRINTED).wait(timeout=120)
    assert code == 1 and "Traceback" not in out, out[-3000:]
    (line,) = out.strip().splitlines()
    assert line.startswith(said) and "set SLURM_CONF to the cluster's slurm.conf" in line, line
    assert time.time() - start < 30
    assert written(sweep.dir) == []
    assert Sweep(tmp_path, slurm_env, data_dir).jobs() == []  # nothing submitted


def test_a_job_that_sbatch_refuses_is_one_line_with_its_message(sweeps):
    """slurm.yaml as shipped asks for a GPU on partition gpu; the test cluster has neither
    and sbatch refuses the job array, with its own message. Only sbatch knows what a cluster
    accepts, so this is said after submission; what the sweep wrote goes."""
    sweep = sweeps().start("seed=0,1", launcher=("hydra/launcher=slurm",))
    code, out = sweep.wait()
    assert code == 1 and "Traceback" not in out, out[-3000:]
    (line,) = [ln for ln in out.splitlines() if not ln.startswith("[")]  # Hydra's log lines
    assert line.startswith(
        "lbtrain: error: sbatch: Invalid generic resource (gres) specification (hydra.launcher "
        "asked for partition=gpu, "
    ), line
    assert line.endswith("; on the test cluster: hydra/launcher=slurm_test"), line
    assert written(sweep.dir) == []
    assert sweep.jobs() == []


def test_time_limit_signal_checkpoints_requeues_and_resumes_exactly(sweeps, tmp_path, data_dir):
    """A 1-minute limit with `signal_delay_s=10`: SLURM itself sends USR1 between 20 and 50 s
    into the job (it checks time limits every 30 s). The test sends nothing. The first run
    is paced to outlast that window; the resumed one is not, and ends before it."""
    pace = ("+callbacks.pace._target_=helpers.Pace", "+callbacks.pace.seconds=0.1",
            "+callbacks.pace.first_run_only=true")  # fmt: skip
    sweep = sweeps().start(
        *RUN, *pace, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10",
        "hydra.launcher.max_num_timeout=3", "hydra.launcher.cpus_per_task=1",
    )  # fmt: skip
    job = sweep.job()
    ref = reference(tmp_path, data_dir, *RUN, *pace)
    code, out = sweep.wait(timeout=240)
    assert code == 0, out[-3000:]
    logs = sweep.logs()
    assert "Caught signal SIGUSR1" in logs and "this job is timed-out" in logs  # SLURM's
    assert "resuming the preempted run" in logs
    # one requeue per signal (the resumed run is short, but a slow machine may see a second)
    assert sweep.restarts(job) == logs.count("Caught signal SIGUSR1") >= 1
    assert not (sweep.dir / "0" / "checkpoints" / "requeue.ckpt").exists()
    assert_same_run(sweep.dir / "0", ref)


def test_scheduler_requeue_mid_epoch_resumes_exactly_and_once(sweeps, tmp_path, data_dir):
    """`scontrol requeue`, as a preempting scheduler does it: SLURM sends SIGTERM, lbtrain
    checkpoints; SLURM requeues the job itself, so lbtrain's own requeue must not add one."""
    pace = ("+callbacks.pace._target_=helpers.Pace", "+callbacks.pace.seconds=0.05",
            "+callbacks.pace.first_run_only=true")  # fmt: skip
    sweep = sweeps().start(*RUN, *pace, "hydra.launcher.cpus_per_task=1")
    job = sweep.job()
    stopped_at = sweep.wait_for_step("0", 190)  # mid-epoch 2 (125 steps an epoch)
    sweep.slurm("scontrol", "requeue", job)
    ref = reference(tmp_path, data_dir, *RUN, *pace)
    code, out = sweep.wait()
    assert code == 0, out[-3000:]
    logs = sweep.logs()
    step = int(re.search(r"SIGTERM: saved .* at step (\d+)", logs)[1])
    assert stopped_at <= step < 625 and step % 125  # mid-epoch
    assert "resuming the preempted run" in logs
    assert sweep.restarts(job) == 1
    assert_same_run(sweep.dir / "0", ref)


def test_two_ranks_stop_at_one_step_whether_one_or_all_get_the_signal(sweeps, tmp_path, data_dir):
    """A 2-task job: USR1 to rank 1 alone (rank 0 hands it to submitit, which requeues), then,
    in the resumed run, SIGTERM to every rank (`scancel --signal=TERM`, as a preempting
    scheduler sends it: submitit ignores it and lbtrain's rank 0 requeues). Two signals, two
    requeues; the job ends as an uninterrupted 2-task run does."""
    ddp = (
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "logger=csv",
        "trainer.deterministic=true",
        "+callbacks.pace._target_=helpers.Pace",
    )
    sweep = sweeps().start(*ddp, "+callbacks.pace.seconds=0.05", "hydra.launcher.cpus_per_task=1",
                           "hydra.launcher.timeout_min=60")  # fmt: skip
    # the uninterrupted reference meanwhile: the same 2-process layout, submitit on this
    # machine, on the CPU the paced job leaves idle while it sleeps
    local = sweeps("local")
    local.env["OMP_NUM_THREADS"] = "1"  # as the SLURM job's cpus_per_task=1
    local.start(*ddp, "+callbacks.pace.seconds=0", launcher=("hydra/launcher=local_tasks",))
    job = sweep.job()
    sweep.wait_for_step("0", 30)
    os.kill(rank_pid(sweep, job, rank=1), signal.SIGUSR1)
    _wait_for(
        lambda: (
            sweep.restarts(job) == 1
            and "RUNNING" in sweep.slurm("squeue", "-h", "-j", job, "-o", "%T")
        ),
        "the requeued job to run again",
    )
    first = int((sweep.dir / "0" / "pace").read_text())
    _wait_for(lambda: int((sweep.dir / "0" / "pace").read_text()) >= first + 40, "the resumed run")
    sweep.slurm("scancel", "--signal=TERM", job)
    code, out = sweep.wait(timeout=300)
    assert code == 0, out[-3000:]
    logs = sweep.logs()
    stops = re.findall(r"(SIGUSR1|SIGTERM): saved .* at step (\d+)", logs)
    # each stop is logged by both ranks, at one step
    assert [s for s, _ in stops] == ["SIGUSR1", "SIGUSR1", "SIGTERM", "SIGTERM"], stops
    steps = [int(step) for _, step in stops]
    assert steps[0] == steps[1] < steps[2] == steps[3]
    assert sweep.restarts(job) == 2
    assert "lbtrain: preempted (SIGTERM) at step " in logs and f"requeued SLURM job {job}" in logs
    assert "and not requeued" not in logs  # no false alarm from the ranks' teardown
    assert logs.count("resuming the preempted run") == 2 * 2  # both ranks, both resumes

    code, out = local.wait()
    assert code == 0, out[-3000:]
    assert_same_run(sweep.dir / "0", local.dir / "0")


def test_a_job_out_of_requeues_ends_with_one_clear_line(sweeps):
    """max_num_timeout=0: the first time-out signal (a USR1 in a 1-minute job) is not
    requeued; the job keeps its checkpoint and says how to resume it."""
    pace = ("+callbacks.pace._target_=helpers.Pace", "+callbacks.pace.seconds=0.05")
    sweep = sweeps().start(
        *RUN, *pace, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10",
        "hydra.launcher.max_num_timeout=0", "hydra.launcher.cpus_per_task=1",
    )  # fmt: skip
    job = sweep.job()
    sweep.wait_for_step("0", 20)
    sweep.slurm("scancel", "--signal=USR1", job)
    code, out = sweep.wait()
    assert code != 0
    (line,) = [ln for ln in sweep.logs().splitlines() if "lbtrain: job stopped" in ln]
    assert "[ERROR]" in line
    assert "not requeued" in line and "timed-out too many times" in line
    assert f"hydra.run.dir={sweep.dir / '0'}" in line
    assert sweep.restarts(job) == 0
    step = torch.load(sweep.dir / "0" / "checkpoints" / "requeue.ckpt", weights_only=False)
    assert step["global_step"] >= 20


def rank_pid(sweep: Sweep, job: str, rank: int) -> int:
    """The process of one rank of a running job (this machine is the job's node)."""
    job_id = sweep.slurm("squeue", "-h", "-j", job, "-o", "%A").strip()
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if (f"SLURM_JOB_ID={job_id}".encode() in env and f"SLURM_PROCID={rank}".encode() in env
                and b"submitit" in cmd):  # fmt: skip
            return int(proc.name)
    raise AssertionError(f"no rank {rank} of job {job}")


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, subprocess.CalledProcessError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
