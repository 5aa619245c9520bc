# Every target that needs Python installs into .venv first (a no-op when up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test lint format bench bench-gpu table1 table1-beyond critical-batch adam-rules \
	critical-batch-online edge-of-stability slurm-up slurm-down notebook clean

help: ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install lbtrain with its dev extras

train: $(STAMP) ## run the default experiment (MNIST-1D, offline; ~22 s on 2 CPU cores); extra overrides via ARGS="..."
	$(PY) -m lbtrain.run $(ARGS)

# One torch thread per test worker: two workers x two threads on two cores thrash.
test: $(STAMP) ## run the test suite (2 workers)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup --durations=12 $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The MNIST-1D sweeps below run their jobs TABLE1_JOBS at a time (one per core, one torch
# thread each; the long jobs first, so that no core idles at the end), then the report.
# TABLE1_JOBS=1 runs them one after another.
TABLE1_JOBS ?= $(shell nproc)
NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
define sweep_and_report
	OMP_NUM_THREADS=1 $(PY) -m lbtrain.run -m $(SWEEP) logger=csv \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(TABLE1_JOBS) hydra.launcher.batch_size=1 \
		hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(PY) -m lbtrain.report $(SWEEP_DIR) --out $(REPORT) $(REPORT_ARGS)
endef

# Table 1 at CPU scale: 5 recipes x 3 seeds on MNIST-1D, then the report (table + figures).
# `make table1 TABLE1_REPORT=docs` rewrites the README's table and figures in docs/.
TABLE1_DIR := logs/table1/$(NOW)
TABLE1_REPORT ?= $(TABLE1_DIR)/report
table1: SWEEP = experiment=mnist1d_table1 recipe=lb_lr_gbn_ra,sb,lb,lb_lr,lb_lr_gbn seed=0,1,2
table1: SWEEP_DIR = $(TABLE1_DIR)
table1: REPORT = $(TABLE1_REPORT)
table1: $(STAMP) ## reproduce Table 1's pattern on MNIST-1D (15 runs, ~5 min on 2 CPU cores)
	$(sweep_and_report)

# Beyond the paper's recipe, against SB and +RA: LARS with warmup at LB, the batch-size schedule
# (SB's batch grown at each milestone up to LB), batch augmentation x4 at LB; 3 seeds each.
# `make table1-beyond TABLE1_BEYOND_REPORT=docs/beyond` rewrites the README's.
TABLE1_BEYOND_DIR := logs/table1_beyond/$(NOW)
TABLE1_BEYOND_REPORT ?= $(TABLE1_BEYOND_DIR)/report
table1-beyond: SWEEP = experiment=mnist1d_table1 recipe=lb_lr_gbn_ra,sb,lars,grow,batch_aug seed=0,1,2
table1-beyond: SWEEP_DIR = $(TABLE1_BEYOND_DIR)
table1-beyond: REPORT = $(TABLE1_BEYOND_REPORT)
table1-beyond: $(STAMP) ## the computational gap: LARS, batch-size schedule, batch augmentation vs SB and +RA (15 runs, ~5 min on 2 CPU cores)
	$(sweep_and_report)

# The critical batch size on MNIST-1D: 8 batch sizes x 5 LRs (a per-B grid around the sqrt
# rule) x 2 seeds, each run stopping at val/acc 0.85, then the report's steps-to-target fit
# against the measured noise scale (conf/experiment/mnist1d_critical_batch.yaml says why).
# `make critical-batch CRITICAL_BATCH_REPORT=docs/critical_batch` rewrites the README's.
CRITICAL_BATCH_DIR := logs/critical_batch/$(NOW)
CRITICAL_BATCH_REPORT ?= $(CRITICAL_BATCH_DIR)/report
critical-batch: SWEEP = experiment=mnist1d_critical_batch batch_size=2048,1024,512,256,128,64,32,16 \
	optim.lr=0.0125,0.025,0.05,0.1,0.2 seed=0,1
critical-batch: SWEEP_DIR = $(CRITICAL_BATCH_DIR)
critical-batch: REPORT = $(CRITICAL_BATCH_REPORT)
critical-batch: REPORT_ARGS = --target val/acc=0.85
critical-batch: $(STAMP) ## steps to target vs batch size, B_crit vs the noise scale (80 runs, ~8 min on 2 CPU cores)
	$(sweep_and_report)

# The critical batch size over training by branching (Merrill et al. 2025): the base run (SB at
# a constant LR, checkpoints at 8 log-spaced steps, noise scale every 10 steps), 3 seeds of
# branches at 1-32x its batch from each checkpoint, their report (CBS(t), B_simple(t), the
# warmup points), then the warmup that follows the CBS against SB, +RA and the grow schedule,
# 3 seeds each, and their report with steps to val/acc 0.95.
# `make critical-batch-online CBS_ONLINE_REPORT=docs/critical_batch_online` rewrites the README's.
CBS_ONLINE_DIR := $(abspath logs/critical_batch_online/$(NOW))
CBS_ONLINE_REPORT ?= $(CBS_ONLINE_DIR)/report
JOBS = hydra/launcher=joblib hydra.launcher.n_jobs=$(TABLE1_JOBS) hydra.launcher.batch_size=1
critical-batch-online: $(STAMP) ## CBS(t) by branching; the warmup that follows it vs SB, +RA, grow (~16 min on 2 CPU cores)
	OMP_NUM_THREADS=1 $(PY) -m lbtrain.run experiment=mnist1d_cbs_base logger=csv \
		hydra.run.dir=$(CBS_ONLINE_DIR)/base $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m lbtrain.run -m experiment=mnist1d_cbs_branch logger=csv $(JOBS) \
		branch.base_run=$(CBS_ONLINE_DIR)/base branch.step=25,50,100,200,400,800,1600,3200 \
		batch_size=1024,512,256,128,64,32 seed=1,2,3 hydra.sweep.dir=$(CBS_ONLINE_DIR)/branches $(ARGS)
	$(PY) -m lbtrain.report $(CBS_ONLINE_DIR)/branches --out $(CBS_ONLINE_REPORT)/branches
	OMP_NUM_THREADS=1 $(PY) -m lbtrain.run -m experiment=mnist1d_table1 logger=csv $(JOBS) \
		recipe=lb_lr_gbn_ra,sb,grow seed=0,1,2 hydra.sweep.dir=$(CBS_ONLINE_DIR)/comparison/anchors $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m lbtrain.run -m experiment=mnist1d_table1 logger=csv $(JOBS) \
		recipe=warmup batch_schedule_points=$$(cat $(CBS_ONLINE_REPORT)/branches/warmup_points.txt) \
		seed=0,1,2 hydra.sweep.dir=$(CBS_ONLINE_DIR)/comparison/warmup $(ARGS)
	$(PY) -m lbtrain.report $(CBS_ONLINE_DIR)/comparison --out $(CBS_ONLINE_REPORT)/comparison \
		--target val/acc=0.95

# Adam's betas as the batch grows: Malladi et al.'s SDE rule against Marek et al.'s beta2
# half-life rule, AdamW on MNIST-1D, 2 seeds. `make adam-rules ADAM_RULES_REPORT=docs/adam_rules`
# rewrites the README's.
ADAM_RULES_DIR := logs/adam_rules/$(NOW)
ADAM_RULES_REPORT ?= $(ADAM_RULES_DIR)/report
adam-rules: SWEEP = experiment=mnist1d_adam_rules batch_size=256,128,64,32 \
	optim.adam_rule=sde,halflife seed=0,1
adam-rules: SWEEP_DIR = $(ADAM_RULES_DIR)
adam-rules: REPORT = $(ADAM_RULES_REPORT)
adam-rules: REPORT_ARGS = --target val/acc=0.9
adam-rules: $(STAMP) ## AdamW batch sweep, SDE vs half-life beta rule (16 runs, ~6 min on 2 CPU cores)
	$(sweep_and_report)

# The edge of stability: full-batch GD on MNIST-1D at two LRs, sharpness every 10 steps against
# 2 / lr. `make edge-of-stability EOS_REPORT=docs/edge_of_stability` rewrites the README's.
EOS_DIR := logs/edge_of_stability/$(NOW)
EOS_REPORT ?= $(EOS_DIR)/report
edge-of-stability: SWEEP = experiment=mnist1d_edge_of_stability optim.lr=0.25,0.5
edge-of-stability: SWEEP_DIR = $(EOS_DIR)
edge-of-stability: REPORT = $(EOS_REPORT)
edge-of-stability: $(STAMP) ## full-batch GD: sharpness rises to 2/lr and hovers (2 runs, ~3 min on 2 CPU cores)
	$(sweep_and_report)

notebook: $(STAMP) ## open the notebook in JupyterLab (after: .venv/bin/pip install -e '.[notebook]')
	@test -x $(VENV)/bin/jupyter-lab || { echo "make notebook: first run $(PY) -m pip install -e '.[notebook]'"; exit 1; }
	$(VENV)/bin/jupyter lab notebooks/generalization_gap.ipynb

# A one-node SLURM cluster on this machine, for testing and trying lbtrain's cluster path (not a
# production setup): state, config and logs in .slurm/. `make test` runs the slurm tests on it.
# `make slurm-up` ends with the command of a sweep on it (hydra/launcher=slurm_test).
slurm-up: ## start a one-node SLURM test cluster (root; apt-installs slurm-wlm + munge); prints a sweep's command
	scripts/slurm-cluster.sh up

slurm-down: ## stop the SLURM test cluster's daemons (by their pid files) and its jobs
	scripts/slurm-cluster.sh down

bench: $(STAMP) ## run the benchmarks (speed ratios against baselines in the same run)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-gpu: $(STAMP) ## the GPU benchmark alone (~3 min on one H200 GPU; skips without CUDA)
	$(PY) benchmarks/bench_gpu.py $(ARGS)

clean: ## remove the venv and caches (never logs/: runs' results stay)
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
